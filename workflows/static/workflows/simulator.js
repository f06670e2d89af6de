// Chat simulator: post forms with fetch and swap the panel; poll while a delay runs.
(function () {
  "use strict";
  var root, timer = null;
  function scroll() {
    var chat = document.getElementById("sim-chat");
    if (chat) chat.scrollTop = chat.scrollHeight;
    var input = document.getElementById("sim-text");
    if (input) input.focus();
  }
  function swap(html) {
    root.innerHTML = html;
    scroll();
    schedule();
  }
  function schedule() {
    if (timer) { clearTimeout(timer); timer = null; }
    var panel = root.querySelector(".sim");
    if (panel && panel.dataset.pending === "1") {
      timer = setTimeout(function () {
        fetch(root.dataset.url, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" })
          .then(function (r) { return r.text(); }).then(swap);
      }, 1500);
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    root = document.getElementById("sim-root");
    if (!root) return;
    scroll();
    schedule();
    root.addEventListener("submit", function (event) {
      var form = event.target;
      if (!form.classList.contains("sim-form")) return;
      event.preventDefault();
      var buttons = root.querySelectorAll("button");
      buttons.forEach(function (b) { b.disabled = true; });
      fetch(root.dataset.url, {
        method: "POST",
        body: new FormData(form),
        headers: { "X-Requested-With": "fetch" },
        credentials: "same-origin"
      }).then(function (r) { return r.text(); }).then(swap)
        .catch(function () { buttons.forEach(function (b) { b.disabled = false; }); });
    });
  });
})();
