// A broadcast's "condition" segment with the condition builder of the canvas
// (builder.js): the text field stays the form's value, the builder writes into it.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var field = document.getElementById("id_condition");
    var data = document.getElementById("cb-vocab");
    if (!field || !data || field.readOnly || field.disabled || !window.BPCondition) return;
    var vocab = JSON.parse(data.textContent);
    var host = document.createElement("div");
    host.className = "cb-segment";
    host.setAttribute("role", "group");
    host.setAttribute("aria-label", "Condition builder");
    field.parentNode.insertBefore(host, field.nextSibling);
    field.hidden = true;
    function variables() {
      var project = document.getElementById("id_project");
      var names = (vocab.vars[project ? project.value : ""] || []).map(function (v) { return "vars." + v; });
      if (!project) Object.keys(vocab.vars).forEach(function (k) { vocab.vars[k].forEach(function (v) { names.push("vars." + v); }); });
      return names.concat(vocab.user_fields.map(function (f) { return "user." + f; }));
    }
    function mount() {
      window.BPCondition.mount(host, field.value, variables(), function (expression) {
        field.value = expression;
      }, "segment");
    }
    var project = document.getElementById("id_project");
    if (project) project.addEventListener("change", mount);
    mount();
  });
})();
