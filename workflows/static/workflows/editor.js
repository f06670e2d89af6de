// Workflow editor: show only the target input a button's "does" select needs.
(function () {
  "use strict";
  function sync(select) {
    var base = select.name.replace(/-kind$/, "");
    var step = document.querySelector('[name="' + base + '-next"]');
    var value = document.querySelector('[name="' + base + '-value"]');
    if (!step || !value) return;
    var isStep = select.value === "next";
    step.style.display = isStep ? "" : "none";
    value.style.display = isStep ? "none" : "";
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("select.btn-kind").forEach(function (select) {
      sync(select);
      select.addEventListener("change", function () { sync(select); });
    });
  });
})();
