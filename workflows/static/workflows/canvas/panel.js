// The side panel: the selected step's fields, generated from the step registry
// (workflows/canvas.py canvas_registry), with help texts, problems, the condition
// builder and the message composer. Every edit goes through api.change(fn), which
// records it for undo and saves.
(function () {
  "use strict";
  var uid = 0;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function nextId(base) { uid += 1; return "cvf-" + base + "-" + uid; }

  function labelled(host, spec, control) {
    var row = el("div", { "class": "cv-field cv-kind-" + spec.kind });
    var id = control.id || nextId(spec.name);
    control.id = id;
    var label = el("label", { "for": id }, spec.label + (spec.required ? " *" : ""));
    row.appendChild(label);
    row.appendChild(control);
    if (spec.help) {
      var help = el("div", { "class": "help", id: id + "-help" }, spec.help);
      control.setAttribute("aria-describedby", id + "-help");
      row.appendChild(help);
    }
    host.appendChild(row);
    return row;
  }

  function stepSelect(api, value, exclude) {
    var select = el("select");
    select.appendChild(el("option", { value: "" }, "(nothing: the conversation ends)"));
    Object.keys(api.state().definition.steps).forEach(function (id) {
      if (id === exclude) return;
      var option = el("option", { value: id }, id);
      if (id === value) option.selected = true;
      select.appendChild(option);
    });
    return select;
  }

  function asValue(text) {
    var t = text.trim();
    if (/^-?\d+(\.\d+)?$/.test(t) && t.length < 16) return Number(t);
    if (t === "true") return true;
    if (t === "false") return false;
    return text;
  }

  function linesToPairs(text) {
    var out = {};
    text.split("\n").forEach(function (line) {
      var at = line.indexOf(":");
      if (at > 0) out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    });
    return out;
  }

  // --- Message composer -----------------------------------------------------------
  function composer(api, host, spec, step, stepId) {
    var wrap = el("div", { "class": "cv-composer" });
    var bar = el("div", { "class": "cv-compose-bar", role: "toolbar", "aria-label": "Formatting" });
    var area = el("textarea", { rows: "5", "class": "cv-compose-text" });
    area.value = step[spec.name] || "";
    function surround(before, after) {
      var s = area.selectionStart, e = area.selectionEnd, v = area.value;
      var inner = v.slice(s, e) || "text";
      area.value = v.slice(0, s) + before + inner + after + v.slice(e);
      area.focus();
      area.setSelectionRange(s + before.length, s + before.length + inner.length);
      commit();
    }
    function insert(text) {
      var s = area.selectionStart, e = area.selectionEnd, v = area.value;
      area.value = v.slice(0, s) + text + v.slice(e);
      area.focus();
      area.setSelectionRange(s + text.length, s + text.length);
      commit();
    }
    [["Bold", "<b>", "</b>", "B"], ["Italic", "<i>", "</i>", "I"], ["Code", "<code>", "</code>", "</>"]].forEach(function (f) {
      var b = el("button", { type: "button", "aria-label": f[0], title: f[0] }, f[3]);
      b.addEventListener("click", function () { surround(f[1], f[2]); });
      bar.appendChild(b);
    });
    var link = el("button", { type: "button", "aria-label": "Link", title: "Link" }, "Link");
    link.addEventListener("click", function () {
      var url = window.prompt("Link address (https://…)", "https://");
      if (url && /^(https?:\/\/|tg:\/\/)/.test(url)) surround('<a href="' + url.replace(/"/g, "%22") + '">', "</a>");
    });
    bar.appendChild(link);
    var vocab = api.vocabulary();
    var pick = el("select", { "aria-label": "Insert a variable", "class": "cv-insert-var" });
    pick.appendChild(el("option", { value: "" }, "Insert a value…"));
    api.variables().forEach(function (path) {
      pick.appendChild(el("option", { value: path }, window.BPCondition ? path.replace(/^vars\./, "").replace(/^user\./, "user: ") : path));
    });
    pick.addEventListener("change", function () {
      if (pick.value) insert("{{ " + pick.value + " }}");
      pick.value = "";
    });
    bar.appendChild(pick);
    var filter = el("select", { "aria-label": "Add a filter to the value before the cursor", "class": "cv-insert-filter" });
    filter.appendChild(el("option", { value: "" }, "Filter…"));
    (vocab.filters || []).forEach(function (name) { filter.appendChild(el("option", { value: name }, name)); });
    filter.addEventListener("change", function () {
      var v = area.value, s = area.selectionStart;
      var end = v.lastIndexOf("}}", s);
      if (filter.value && end >= 0 && v.lastIndexOf("{{", s) < end) {
        area.value = v.slice(0, end).replace(/\s*$/, "") + " | " + filter.value + " " + v.slice(end);
        commit();
      }
      filter.value = "";
    });
    bar.appendChild(filter);
    wrap.appendChild(bar);
    var preview = el("div", { "class": "cv-preview", "aria-label": "Preview with a sample user", role: "region" });
    var timer = null;
    function refresh() {
      clearTimeout(timer);
      timer = setTimeout(function () {
        api.preview(area.value, step.buttons || []).then(function (data) {
          preview.innerHTML = "";
          var bubble = el("div", { "class": "cv-bubble" });
          if (data.problem) { bubble.classList.add("cv-bad"); bubble.textContent = data.problem; }
          else bubble.innerHTML = data.html.replace(/\n/g, "<br>"); // server-escaped Telegram subset
          preview.appendChild(bubble);
          (data.buttons || []).forEach(function (row) {
            var r = el("div", { "class": "cv-preview-row" });
            row.forEach(function (label) { r.appendChild(el("span", { "class": "cv-preview-button" }, label)); });
            preview.appendChild(r);
          });
        });
      }, 250);
    }
    function commit() {
      var value = area.value;
      api.change(function (s) { s.definition.steps[stepId][spec.name] = value; }, { keepPanel: true });
      refresh();
    }
    area.addEventListener("change", commit);
    area.addEventListener("input", refresh);
    wrap.appendChild(area);
    labelled(host, spec, area);
    host.lastChild.appendChild(bar);
    host.lastChild.insertBefore(bar, area);
    host.lastChild.appendChild(el("div", { "class": "cv-preview-title" }, "Preview (sample user Anna)"));
    host.lastChild.appendChild(preview);
    refresh();
  }

  // --- Lists: branches and buttons ------------------------------------------------------
  function branches(api, host, spec, step, stepId) {
    var box = el("fieldset", { "class": "cv-list" });
    box.appendChild(el("legend", {}, spec.label));
    if (spec.help) box.appendChild(el("div", { "class": "help" }, spec.help));
    (step.branches || []).forEach(function (branch, index) {
      var item = el("div", { "class": "cv-branch" });
      item.appendChild(el("h4", {}, "Branch " + (index + 1) + ": if"));
      var builderHost = el("div");
      item.appendChild(builderHost);
      window.BPCondition.mount(builderHost, branch["if"] || "", api.variables(), function (expression) {
        api.change(function (s) { s.definition.steps[stepId].branches[index]["if"] = expression; }, { keepPanel: true });
      }, "cb-" + stepId + "-" + index);
      var go = stepSelect(api, branch.next, stepId);
      go.addEventListener("change", function () {
        api.change(function (s) { s.definition.steps[stepId].branches[index].next = go.value || null; });
      });
      labelled(item, { name: "next", kind: "step", label: "then go to" }, go);
      var remove = el("button", { type: "button", "class": "cv-remove" }, "Remove branch " + (index + 1));
      remove.addEventListener("click", function () {
        api.change(function (s) { s.definition.steps[stepId].branches.splice(index, 1); });
      });
      item.appendChild(remove);
      box.appendChild(item);
    });
    var add = el("button", { type: "button", "class": "cv-add" }, "+ Add a branch");
    add.addEventListener("click", function () {
      api.change(function (s) {
        var st = s.definition.steps[stepId];
        st.branches = st.branches || [];
        st.branches.push({ "if": "", next: null });
      });
    });
    box.appendChild(add);
    host.appendChild(box);
  }

  function buttons(api, host, spec, step, stepId) {
    var box = el("fieldset", { "class": "cv-list" });
    box.appendChild(el("legend", {}, spec.label));
    if (spec.help) box.appendChild(el("div", { "class": "help" }, spec.help));
    var flat = api.flatButtons(step);
    flat.forEach(function (entry, index) {
      var b = entry.button;
      var item = el("div", { "class": "cv-button-item" });
      var text = el("input", { type: "text" });
      text.value = b.text || "";
      text.addEventListener("change", function () {
        api.change(function (s) { api.buttonAt(s.definition.steps[stepId], index).text = text.value; });
      });
      labelled(item, { name: "text", kind: "line", label: "Button " + (index + 1) + " text" }, text);
      var kind = el("select");
      [["next", "goes to a step"], ["url", "opens a link"], ["data", "sends data to a trigger"]].forEach(function (k) {
        var option = el("option", { value: k[0] }, k[1]);
        if ((b.url !== undefined && k[0] === "url") || (b.data !== undefined && k[0] === "data") || (b.url === undefined && b.data === undefined && k[0] === "next")) option.selected = true;
        kind.appendChild(option);
      });
      kind.addEventListener("change", function () {
        api.change(function (s) {
          var target = api.buttonAt(s.definition.steps[stepId], index);
          delete target.next; delete target.url; delete target.data;
          if (kind.value === "url") target.url = "https://";
          else if (kind.value === "data") target.data = "";
          else target.next = null;
        });
      });
      labelled(item, { name: "kind", kind: "choice", label: "It" }, kind);
      if (b.url !== undefined || b.data !== undefined) {
        var key = b.url !== undefined ? "url" : "data";
        var value = el("input", { type: "text" });
        value.value = b[key] || "";
        value.addEventListener("change", function () {
          api.change(function (s) { api.buttonAt(s.definition.steps[stepId], index)[key] = value.value; });
        });
        labelled(item, { name: key, kind: "line", label: key === "url" ? "Link" : "Data" }, value);
      } else {
        var go = stepSelect(api, b.next, stepId);
        go.addEventListener("change", function () {
          api.change(function (s) { api.buttonAt(s.definition.steps[stepId], index).next = go.value || null; });
        });
        labelled(item, { name: "next", kind: "step", label: "Goes to" }, go);
      }
      var remove = el("button", { type: "button", "class": "cv-remove" }, "Remove button " + (index + 1));
      remove.addEventListener("click", function () {
        api.change(function (s) { api.buttonRemove(s.definition.steps[stepId], index); });
      });
      item.appendChild(remove);
      box.appendChild(item);
    });
    var add = el("button", { type: "button", "class": "cv-add" }, "+ Add a button");
    add.addEventListener("click", function () {
      api.change(function (s) {
        var st = s.definition.steps[stepId];
        st.buttons = st.buttons || [];
        st.buttons.push([{ text: "Button " + (flat.length + 1), next: null }]);
      });
    });
    box.appendChild(add);
    host.appendChild(box);
  }

  // --- One field --------------------------------------------------------------------------
  function field(api, host, spec, holder, stepId, path) {
    var value = holder[spec.name];
    function set(v) {
      api.change(function (s) {
        var target = s.definition.steps[stepId];
        path.forEach(function (part) { target[part] = target[part] || {}; target = target[part]; });
        if (v === undefined || v === "" || v === null) delete target[spec.name];
        else target[spec.name] = v;
      }, { keepPanel: spec.kind !== "step" });
    }
    var control;
    switch (spec.kind) {
      case "template":
        if (!path.length && spec.name === "text") return composer(api, host, spec, holder, stepId);
        control = el("textarea", { rows: "2" });
        control.value = value || "";
        control.addEventListener("change", function () { set(control.value); });
        break;
      case "step":
        control = stepSelect(api, value, stepId);
        control.addEventListener("change", function () { set(control.value || null); });
        break;
      case "workflow":
        control = el("select");
        control.appendChild(el("option", { value: "" }, "(choose a workflow)"));
        api.workflows().forEach(function (slug) {
          var option = el("option", { value: slug }, slug);
          if (slug === value) option.selected = true;
          control.appendChild(option);
        });
        control.addEventListener("change", function () { set(control.value); });
        break;
      case "choice":
        control = el("select");
        if (!spec.required) control.appendChild(el("option", { value: "" }, "(default)"));
        spec.choices.forEach(function (choice) {
          var option = el("option", { value: choice[0] }, choice[1]);
          if (choice[0] === value) option.selected = true;
          control.appendChild(option);
        });
        control.addEventListener("change", function () { set(control.value); });
        break;
      case "bool":
        control = el("input", { type: "checkbox" });
        control.checked = !!value;
        control.addEventListener("change", function () { set(control.checked ? true : undefined); });
        break;
      case "int": case "number":
        control = el("input", { type: "number", step: spec.kind === "int" ? "1" : "any" });
        control.value = value === undefined || value === null ? "" : value;
        control.addEventListener("change", function () { set(control.value === "" ? undefined : Number(control.value)); });
        break;
      case "keyboard":
        control = el("textarea", { rows: "2", placeholder: "Menu | Help" });
        control.value = (value || []).map(function (row) { return row.join(" | "); }).join("\n");
        control.addEventListener("change", function () {
          var rows = control.value.split("\n").map(function (line) {
            return line.split("|").map(function (t) { return t.trim(); }).filter(Boolean);
          }).filter(function (row) { return row.length; });
          set(rows.length ? rows : undefined);
        });
        break;
      case "pairs":
        control = el("textarea", { rows: "2", placeholder: "name: value" });
        control.value = Object.keys(value || {}).map(function (k) { return k + ": " + value[k]; }).join("\n");
        control.addEventListener("change", function () {
          var pairs = linesToPairs(control.value);
          set(Object.keys(pairs).length ? pairs : undefined);
        });
        break;
      case "json":
        control = el("textarea", { rows: "3", "class": "cv-json" });
        control.value = value === undefined ? "" : JSON.stringify(value, null, 1);
        control.addEventListener("change", function () {
          if (!control.value.trim()) return set(undefined);
          try { set(JSON.parse(control.value)); control.setCustomValidity(""); }
          catch (e) { control.setCustomValidity("This is not valid JSON: nothing was changed."); control.reportValidity(); }
        });
        break;
      case "object":
        var box = el("fieldset", { "class": "cv-list" });
        box.appendChild(el("legend", {}, spec.label));
        if (spec.help) box.appendChild(el("div", { "class": "help" }, spec.help));
        spec.parts.forEach(function (part) { field(api, box, part, value || {}, stepId, path.concat([spec.name])); });
        host.appendChild(box);
        return;
      case "branches": return branches(api, host, spec, holder, stepId);
      case "buttons": return buttons(api, host, spec, holder, stepId);
      default: // line, value, amount: a text; numbers stay numbers
        control = el("input", { type: "text" });
        control.value = value === undefined || value === null ? "" : value;
        if (spec.name === "variable") {
          control.setAttribute("list", "cv-var-names");
          control.setAttribute("placeholder", "e.g. stamps");
        }
        control.addEventListener("change", function () {
          var v = control.value;
          if (spec.name === "variable") v = v.trim().replace(/^vars\./, "");
          set(spec.kind === "line" ? v : (v === "" ? undefined : asValue(v)));
        });
    }
    labelled(host, spec, control);
  }

  // --- Triggers (the entry node) ------------------------------------------------------------
  var TRIGGER_KINDS = [
    ["command", "a command", "command", "stamp (without /)"],
    ["text", "an exact text", "text", "Menu"],
    ["regex", "text matching a pattern", "pattern", "^order \\d+$"],
    ["callback", "a button's data", "data", "menu"],
    ["fallback", "anything nothing else takes", null, ""],
    ["level_up", "reaching a new level", null, ""]
  ];
  function triggers(api, host) {
    var box = el("fieldset", { "class": "cv-list" });
    box.appendChild(el("legend", {}, "What starts this workflow"));
    box.appendChild(el("div", { "class": "help" }, "Users start it with any of these once it is published."));
    (api.state().triggers || []).forEach(function (trigger, index) {
      var item = el("div", { "class": "cv-trigger" });
      var kind = el("select");
      TRIGGER_KINDS.forEach(function (k) {
        var option = el("option", { value: k[0] }, k[1]);
        if (k[0] === trigger.type) option.selected = true;
        kind.appendChild(option);
      });
      kind.addEventListener("change", function () {
        api.change(function (s) { s.triggers[index] = { type: kind.value }; });
      });
      labelled(item, { name: "type", kind: "choice", label: "Trigger " + (index + 1) + ": the user sends" }, kind);
      var info = TRIGGER_KINDS.filter(function (k) { return k[0] === trigger.type; })[0];
      if (info && info[2]) {
        var value = el("input", { type: "text", placeholder: info[3] });
        value.value = trigger[info[2]] || "";
        value.addEventListener("change", function () {
          var v = value.value.trim();
          if (info[2] === "command") v = v.replace(/^\//, "");
          api.change(function (s) { s.triggers[index][info[2]] = v; });
        });
        labelled(item, { name: info[2], kind: "line", label: info[2] === "command" ? "Command" : info[1] }, value);
      }
      var remove = el("button", { type: "button", "class": "cv-remove" }, "Remove trigger " + (index + 1));
      remove.addEventListener("click", function () { api.change(function (s) { s.triggers.splice(index, 1); }); });
      item.appendChild(remove);
      box.appendChild(item);
    });
    var add = el("button", { type: "button", "class": "cv-add" }, "+ Add a trigger");
    add.addEventListener("click", function () {
      api.change(function (s) { s.triggers.push({ type: "command", command: "" }); });
    });
    box.appendChild(add);
    host.appendChild(box);
  }

  // --- The panel ------------------------------------------------------------------------------
  function render(api, panel, stepId) {
    var state = api.state();
    panel.innerHTML = "";
    panel.hidden = false;
    var close = el("button", { type: "button", "class": "cv-close", "aria-label": "Close the panel (Escape)" }, "×");
    close.addEventListener("click", function () { api.select(null); });
    panel.appendChild(close);
    var problems = api.problems(stepId === "@start" ? "" : stepId);
    if (stepId === "@start") {
      panel.appendChild(el("h2", {}, "Start"));
      panel.appendChild(el("p", { "class": "help" }, "Connect this node's port to the first step."));
    } else {
      var step = state.definition.steps[stepId];
      if (!step) { panel.hidden = true; return; }
      var type = api.registry()[step.type] || { label: step.type, description: "", fields: [] };
      panel.appendChild(el("h2", {}, type.label));
      panel.appendChild(el("p", { "class": "help" }, type.description));
      var name = el("input", { type: "text", pattern: "[A-Za-z0-9_-]{1,64}" });
      name.value = stepId;
      name.addEventListener("change", function () { api.rename(stepId, name.value.trim()); });
      labelled(panel, { name: "step-name", kind: "line", label: "Step name", help: "Letters, digits, _ or -. Links follow a rename." }, name);
    }
    var list = el("ul", { "class": "cv-panel-problems errorlist", id: "cv-panel-problems", "aria-label": "Problems of this step", "aria-live": "polite" });
    panel.appendChild(list);
    showProblems(problems);
    if (stepId === "@start") {
      triggers(api, panel);
    } else {
      type.fields.forEach(function (spec) { field(api, panel, spec, step, stepId, []); });
    }
    if (api.readOnly()) {
      panel.querySelectorAll("input, select, textarea, button:not(.cv-close)").forEach(function (c) { c.disabled = true; });
    }
  }

  // The step's problems, refreshed in place after every check (the fields keep focus).
  function showProblems(problems) {
    var list = document.getElementById("cv-panel-problems");
    if (!list) return;
    list.innerHTML = "";
    problems.forEach(function (p) { list.appendChild(el("li", {}, p)); });
    list.hidden = !problems.length;
  }

  window.BPPanel = { render: render, showProblems: showProblems };
})();
