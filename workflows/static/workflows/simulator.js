// Chat simulator: post forms with fetch and swap the panel; poll while a delay runs.
//
// Every request gets a number and only the answer to the newest one is shown: a poll
// that was under way when the operator pressed a button used to arrive after the
// press's answer, put back the old buttons and (saying nothing ran) stop the polling.
(function () {
  "use strict";
  var root, timer = null, issued = 0;
  function scroll() {
    var chat = document.getElementById("sim-chat");
    if (chat) chat.scrollTop = chat.scrollHeight;
    var input = document.getElementById("sim-text");
    if (input) input.focus();
  }
  function request(options) {
    var number = ++issued;
    if (timer) { clearTimeout(timer); timer = null; }
    return fetch(root.dataset.url, options).then(function (r) { return r.text(); })
      .then(function (html) { if (number === issued) swap(html); return number; });
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
        timer = null;
        request({ headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" })
          .catch(schedule);  // a failed poll tries again
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
      request({
        method: "POST",
        body: new FormData(form),
        headers: { "X-Requested-With": "fetch" },
        credentials: "same-origin"
      }).catch(function () { buttons.forEach(function (b) { b.disabled = false; }); schedule(); });
    });
  });
})();
