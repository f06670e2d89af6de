// The visual editor: the draft drawn with Drawflow (vendor/drawflow, MIT), edited with
// mouse and keyboard. The draft (definition, triggers, layout) is the one state; every
// edit is a change of it (undo/redo: snapshots), after which the graph is redrawn,
// the draft autosaved (409 = someone else saved: reload or overwrite) and checked.
// Testability contract: nodes carry data-step-id, edges data-edge-from/data-edge-to.
(function () {
  "use strict";
  var UNDO_MAX = 100;
  var config, S, registry, editor, panel;
  var undo = [], redo = [];
  var selected = null, selectedEdge = null, dfToStep = {}, stepToDf = {};
  var rendering = false, problems = {}, saveTimer = null, saving = false, dirty = false;
  var checkTimer = null, revision = "", conflict = null;
  var ENTRY = "@start";

  function $(id) { return document.getElementById(id); }
  function clone(x) { return JSON.parse(JSON.stringify(x)); }
  function esc(text) {
    return String(text).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }
  function csrf() {
    var m = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }
  function status(text, bad) {
    var node = $("cv-status");
    node.textContent = text;
    node.classList.toggle("cv-bad", !!bad);
  }

  // --- Ports: which links a step has ------------------------------------------------
  function rowsOf(step) {
    var rows = Array.isArray(step.buttons) ? step.buttons : [];
    return rows.map(function (row) { return Array.isArray(row) ? row : [row]; });
  }
  function flatButtons(step) {
    var out = [];
    rowsOf(step).forEach(function (row, r) {
      row.forEach(function (button, c) {
        if (button && typeof button === "object") out.push({ button: button, row: r, col: c });
      });
    });
    return out;
  }
  function buttonAt(step, index) { return flatButtons(step)[index].button; }
  function buttonRemove(step, index) {
    var at = flatButtons(step)[index];
    var rows = rowsOf(step);
    rows[at.row].splice(at.col, 1);
    step.buttons = rows.filter(function (row) { return row.length; });
    if (!step.buttons.length) delete step.buttons;
  }
  function short(text, n) {
    text = String(text || "").replace(/<[^>]*>/g, "");
    return text.length > n ? text.slice(0, n - 1) + "…" : text;
  }
  function ports(step) {
    var out = [];
    var type = registry[step.type];
    if (!type) return out;
    type.fields.forEach(function (spec) {
      if (spec.kind === "branches") {
        (step.branches || []).forEach(function (branch, i) {
          out.push({ key: "branch:" + i, label: "if " + (short(conditionWords(branch["if"]), 24) || "…"), target: branch.next });
        });
      } else if (spec.kind === "buttons") {
        flatButtons(step).forEach(function (entry, i) {
          var b = entry.button;
          if (b.url === undefined && b.data === undefined) {
            out.push({ key: "button:" + i, label: "▸ " + short(b.text, 18), target: b.next });
          }
        });
      }
    });
    type.links.forEach(function (name) { out.push({ key: name, label: name, target: step[name] }); });
    return out;
  }
  function linkSet(step, key, target) {
    if (key.indexOf("branch:") === 0) step.branches[Number(key.slice(7))].next = target;
    else if (key.indexOf("button:") === 0) buttonAt(step, Number(key.slice(7))).next = target;
    else if (target) step[key] = target;
    else delete step[key];
  }

  // --- Changes, undo, redo ----------------------------------------------------------
  function change(fn, options) {
    if (!config.can_change) return;
    var before = JSON.stringify(S);
    fn(S);
    if (JSON.stringify(S) === before) return;
    undo.push(before);
    if (undo.length > UNDO_MAX) undo.shift();
    redo = [];
    afterChange(options || {});
  }
  function afterChange(options) {
    draw();
    if (!options.keepPanel) showPanel();
    buttons();
    dirty = true;
    scheduleSave();
    scheduleCheck();
  }
  function undoOnce() {
    if (!undo.length) return;
    redo.push(JSON.stringify(S));
    S = JSON.parse(undo.pop());
    afterChange({});
  }
  function redoOnce() {
    if (!redo.length) return;
    undo.push(JSON.stringify(S));
    S = JSON.parse(redo.pop());
    afterChange({});
  }
  function buttons() {
    if ($("cv-undo")) { $("cv-undo").disabled = !undo.length; $("cv-redo").disabled = !redo.length; }
  }

  // --- Drawing ---------------------------------------------------------------------
  // How operators read a template or a condition on a node: no braces, no "vars.".
  function words(text) {
    return String(text || "").replace(/\{\{\s*(?:vars|user|bot)\.([A-Za-z0-9_]+)[^}]*\}\}/g, "‹$1›").replace(/<[^>]*>/g, "");
  }
  function conditionWords(expression) {
    var groups = window.BPCondition.parse(expression);
    if (!groups) return expression;
    var names = {};
    window.BPCondition.OPS.forEach(function (op) { names[op[0]] = op[1]; });
    return groups.map(function (g) {
      return g.map(function (c) {
        return c.left.replace(/^(vars|user|bot)\./, "") + " " + names[c.op] + (c.value === "" ? "" : " " + c.value);
      }).join(" and ");
    }).join(" or ");
  }
  function nodeHtml(id, step) {
    if (id === ENTRY) {
      var names = (S.triggers || []).map(function (t) {
        return t.type === "command" ? "/" + (t.command || "…") : t.type === "fallback" ? "anything else" : (t.text || t.pattern || t.data || t.type);
      });
      return '<div class="cv-node-head"><span class="cv-icon" aria-hidden="true">⚑</span> Start</div>' +
        '<div class="cv-node-text">' + esc(names.length ? names.join(", ") : "no trigger yet") + "</div>";
    }
    var type = registry[step.type] || { label: step.type };
    var preview = words(step.text) || step.description || (step.branches ? step.branches.map(function (b) { return conditionWords(b["if"]); }).join(" / ") : "") ||
      (step.variable ? step.variable + " " + (step.operation || "set") + " " + (step.value === undefined ? "" : step.value) : "") ||
      (step.url || step.workflow || step.amount || "");
    var count = (problems[id] || []).length;
    return '<div class="cv-node-head"><span class="cv-icon" aria-hidden="true">' + icon(step.type) + "</span> " +
      '<span class="cv-node-name">' + esc(id) + '</span></div><div class="cv-node-type">' + esc(type.label) + "</div>" +
      '<div class="cv-node-text">' + esc(short(preview, 60)) + "</div>" +
      (count ? '<div class="cv-node-problem" title="' + esc(problems[id].join("\n")) + '">⚠ ' + count + " problem" + (count > 1 ? "s" : "") + "</div>" : "");
  }
  function icon(type) {
    return { message: "✉", input: "?", condition: "◇", set_variable: "✎", bonus: "★", http_request: "⇄", delay: "◷", start_workflow: "↪", end: "■" }[type] || "•";
  }
  function position(id, index) {
    var p = S.layout[id];
    return p ? p : { x: 80 + (index % 4) * 280, y: 60 + Math.floor(index / 4) * 200 };
  }
  function draw() {
    rendering = true;
    editor.clear();
    dfToStep = {}; stepToDf = {};
    var ids = Object.keys(S.definition.steps);
    var entryPos = S.layout[ENTRY] || { x: 20, y: 40 };
    var entry = editor.addNode("entry", 0, 1, entryPos.x, entryPos.y, "cv-entry", {}, nodeHtml(ENTRY));
    dfToStep[entry] = ENTRY; stepToDf[ENTRY] = entry;
    ids.forEach(function (id, i) {
      var step = S.definition.steps[id];
      var p = position(id, i + 1);
      var n = editor.addNode(step.type, 1, ports(step).length, p.x, p.y, "cv-type-" + step.type, {}, nodeHtml(id, step));
      dfToStep[n] = id; stepToDf[id] = n;
    });
    var start = S.definition.start;
    if (start && stepToDf[start]) editor.addConnection(entry, stepToDf[start], "output_1", "input_1");
    ids.forEach(function (id) {
      ports(S.definition.steps[id]).forEach(function (port, k) {
        if (port.target && stepToDf[port.target] && port.target !== id) {
          editor.addConnection(stepToDf[id], stepToDf[port.target], "output_" + (k + 1), "input_1");
        }
      });
    });
    decorate();
    rendering = false;
    minimap();
  }
  function portsOf(id) {
    return id === ENTRY ? [{ key: "start", label: "start", target: S.definition.start }] : ports(S.definition.steps[id]);
  }
  function decorate() {
    Object.keys(stepToDf).forEach(function (id) {
      var node = $("node-" + stepToDf[id]);
      if (!node) return;
      var step = S.definition.steps[id];
      node.setAttribute("data-step-id", id);
      node.setAttribute("tabindex", "0");
      node.setAttribute("role", "button");
      node.setAttribute("aria-label", id === ENTRY ? "Start of the workflow" : "Step " + id + ": " + (registry[step.type] || {}).label);
      node.classList.toggle("cv-has-problem", !!(problems[id] || []).length);
      node.classList.toggle("cv-selected", id === selected);
      var input = node.querySelector(".input.input_1");
      if (input) input.setAttribute("aria-label", "Into " + id);
      portsOf(id).forEach(function (port, k) {
        var out = node.querySelector(".output.output_" + (k + 1));
        if (!out) return;
        out.setAttribute("data-port", port.key);
        out.setAttribute("title", port.label + ": drag to the next step");
        out.setAttribute("aria-label", "Link " + port.label + " of " + id);
        out.innerHTML = '<span class="cv-port-label">' + esc(port.label) + "</span>";
      });
    });
    document.querySelectorAll("#cv-drawflow svg.connection").forEach(function (svg) {
      var cls = svg.getAttribute("class");
      var from = (cls.match(/node_out_node-(\d+)/) || [])[1];
      var to = (cls.match(/node_in_node-(\d+)/) || [])[1];
      var out = (cls.match(/output_(\d+)/) || [])[1];
      var fromId = dfToStep[from], toId = dfToStep[to];
      var port = portsOf(fromId)[Number(out) - 1] || { key: "", label: "" };
      svg.setAttribute("data-edge-from", fromId);
      svg.setAttribute("data-edge-to", toId);
      svg.setAttribute("data-edge-port", port.key);
      svg.setAttribute("aria-label", fromId + " " + port.label + " → " + toId);
      var title = svg.querySelector("title") || svg.appendChild(document.createElementNS("http://www.w3.org/2000/svg", "title"));
      title.textContent = fromId + " —" + port.label + "→ " + toId;
    });
  }

  // --- Selection and the panel ------------------------------------------------------
  function select(id) {
    selected = id;
    selectedEdge = null;
    document.querySelectorAll("#cv-drawflow .drawflow-node").forEach(function (n) {
      n.classList.toggle("cv-selected", n.getAttribute("data-step-id") === id);
    });
    showPanel();
  }
  function showPanel() {
    if (!selected || (selected !== ENTRY && !S.definition.steps[selected])) {
      selected = null;
      panel.hidden = true;
      return;
    }
    window.BPPanel.render(api, panel, selected);
  }
  function variables() {
    var names = {};
    (config.vocabulary.vars || []).forEach(function (v) { names["vars." + v] = 1; });
    var text = JSON.stringify(S.definition);
    (text.match(/vars\.[A-Za-z][A-Za-z0-9_]*/g) || []).forEach(function (v) { names[v] = 1; });
    Object.keys(S.definition.steps).forEach(function (id) {
      var v = S.definition.steps[id].variable;
      if (typeof v === "string" && /^[A-Za-z][A-Za-z0-9_]*$/.test(v)) names["vars." + v] = 1;
    });
    var list = Object.keys(names).sort();
    (config.vocabulary.user_fields || []).forEach(function (f) { list.push("user." + f); });
    return list;
  }
  var api = {
    state: function () { return S; },
    registry: function () { return registry; },
    vocabulary: function () { return config.vocabulary; },
    workflows: function () { return config.workflows; },
    variables: variables,
    change: change,
    select: select,
    readOnly: function () { return !config.can_change; },
    flatButtons: flatButtons,
    buttonAt: buttonAt,
    buttonRemove: buttonRemove,
    problems: function (id) { return problems[id] || []; },
    rename: rename,
    preview: function (text, buttonRows) {
      return fetch(config.urls.preview, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
        body: JSON.stringify({
          text: text, buttons: buttonRows,
          vars: variables().filter(function (v) { return v.indexOf("vars.") === 0; }).map(function (v) { return v.slice(5); })
        })
      }).then(function (r) { return r.json(); });
    }
  };

  // --- Editing operations --------------------------------------------------------------
  function freeId(base) {
    var n = 1;
    while (S.definition.steps[base + "_" + n]) n += 1;
    return base + "_" + n;
  }
  function defaults(type) {
    var step = { type: type };
    var spec = registry[type];
    (spec ? spec.fields : []).forEach(function (f) {
      if (f.kind === "choice" && f.required && f.choices.length) step[f.name] = f.choices[0][0];
    });
    if (type === "message") step.text = "New message";
    if (type === "input") { step.text = "Your question?"; step.variable = "answer"; }
    if (type === "condition") step.branches = [{ "if": "", next: null }];
    if (type === "set_variable") { step.variable = "my_variable"; step.operation = "set"; step.value = ""; }
    if (type === "bonus") step.amount = 10;
    if (type === "http_request") step.url = "https://";
    if (type === "delay") step.minutes = 1;
    return step;
  }
  function addStep(type, x, y) {
    var id = freeId(type);
    change(function (s) {
      s.definition.steps[id] = defaults(type);
      s.layout[id] = { x: Math.round(x), y: Math.round(y) };
      if (!s.definition.start || !s.definition.steps[s.definition.start]) s.definition.start = id;
    });
    select(id);
    return id;
  }
  function removeRefs(s, gone) {
    Object.keys(s.definition.steps).forEach(function (id) {
      var step = s.definition.steps[id];
      ports(step).forEach(function (port) { if (port.target === gone) linkSet(step, port.key, null); });
    });
    if (s.definition.start === gone) s.definition.start = Object.keys(s.definition.steps)[0] || "";
  }
  function deleteSelected() {
    if (selectedEdge) {
      var edge = selectedEdge;
      selectedEdge = null;
      change(function (s) {
        if (edge.from === ENTRY) s.definition.start = "";
        else linkSet(s.definition.steps[edge.from], edge.key, null);
      });
      return;
    }
    if (!selected || selected === ENTRY) return;
    var gone = selected;
    selected = null;
    change(function (s) {
      delete s.definition.steps[gone];
      delete s.layout[gone];
      removeRefs(s, gone);
    });
  }
  function duplicateSelected() {
    if (!selected || selected === ENTRY) return;
    var source = S.definition.steps[selected];
    var id = freeId(source.type);
    var at = S.layout[selected] || { x: 100, y: 100 };
    change(function (s) {
      s.definition.steps[id] = clone(source);
      s.layout[id] = { x: at.x + 40, y: at.y + 140 };
    });
    select(id);
  }
  function rename(old, name) {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(name) || S.definition.steps[name]) {
      status("“" + name + "” cannot be a step name (taken, or not letters, digits, _ or -).", true);
      return;
    }
    change(function (s) {
      var steps = {};
      Object.keys(s.definition.steps).forEach(function (id) { steps[id === old ? name : id] = s.definition.steps[id]; });
      s.definition.steps = steps;
      Object.keys(steps).forEach(function (id) {
        ports(steps[id]).forEach(function (port) { if (port.target === old) linkSet(steps[id], port.key, name); });
      });
      if (s.definition.start === old) s.definition.start = name;
      if (s.layout[old]) { s.layout[name] = s.layout[old]; delete s.layout[old]; }
    });
    select(name);
  }
  function connect(fromId, outIndex, toId) {
    if (!toId || toId === ENTRY) return;
    change(function (s) {
      if (fromId === ENTRY) s.definition.start = toId;
      else linkSet(s.definition.steps[fromId], portsOf(fromId)[outIndex].key, toId);
    });
  }
  function moveSelected(dx, dy) {
    if (!selected) return;
    var id = selected;
    var p = S.layout[id] || position(id, 0);
    change(function (s) { s.layout[id] = { x: p.x + dx, y: p.y + dy }; }, { keepPanel: true });
  }
  function autoLayout(s) {
    var steps = s.definition.steps, level = {}, queue = [];
    if (s.definition.start && steps[s.definition.start]) { level[s.definition.start] = 1; queue.push(s.definition.start); }
    while (queue.length) {
      var id = queue.shift();
      ports(steps[id]).forEach(function (port) {
        if (port.target && steps[port.target] && level[port.target] === undefined) {
          level[port.target] = level[id] + 1;
          queue.push(port.target);
        }
      });
    }
    var columns = {};
    Object.keys(steps).forEach(function (id) {
      var l = level[id] === undefined ? 0 : level[id];
      (columns[l] = columns[l] || []).push(id);
    });
    s.layout = { "@start": { x: 20, y: 40 } };
    Object.keys(columns).forEach(function (l) {
      columns[l].forEach(function (id, row) {
        s.layout[id] = { x: 40 + Number(l) * 320, y: 40 + row * 190 + (Number(l) === 0 ? 240 : 0) };
      });
    });
  }

  // --- Saving and checking ---------------------------------------------------------
  function payload() {
    return JSON.stringify({ definition: S.definition, triggers: S.triggers, layout: S.layout, revision: revision });
  }
  function scheduleSave() {
    if (!config.can_change || conflict) return;
    clearTimeout(saveTimer);
    status("Unsaved changes…");
    saveTimer = setTimeout(save, 600);
  }
  function save() {
    if (saving) { saveTimer = setTimeout(save, 300); return Promise.resolve(); }
    if (!dirty || conflict) return Promise.resolve();
    saving = true; dirty = false;
    status("Saving…");
    return fetch(config.urls.draft, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: payload()
    }).then(function (r) {
      return r.json().then(function (data) { return { code: r.status, data: data }; });
    }).then(function (res) {
      saving = false;
      if (res.code === 200) {
        revision = res.data.revision;
        status(dirty ? "Unsaved changes…" : "All changes saved at " + res.data.saved_at);
      } else if (res.code === 409) {
        dirty = true;
        conflict = res.data.conflict;
        $("cv-conflict-text").textContent = res.data.error;
        $("cv-conflict").hidden = false;
        status("Not saved: conflict", true);
      } else {
        dirty = true;
        status(res.data.error || "Not saved.", true);
      }
    }).catch(function () {
      saving = false; dirty = true;
      status("Not saved: the server cannot be reached. Retrying…", true);
      saveTimer = setTimeout(save, 3000);
    });
  }
  function scheduleCheck() {
    clearTimeout(checkTimer);
    checkTimer = setTimeout(check, 500);
  }
  function check() {
    return fetch(config.urls.check, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: payload()
    }).then(function (r) { return r.json(); }).then(function (data) {
      if (!data.problems) return;
      problems = data.problems;
      var list = $("cv-problems"), count = 0;
      list.innerHTML = "";
      Object.keys(problems).forEach(function (id) {
        problems[id].forEach(function (message) {
          count += 1;
          var item = document.createElement("button");
          item.type = "button";
          item.className = "cv-problem";
          item.textContent = (id || "workflow") + ": " + message;
          item.addEventListener("click", function () { if (S.definition.steps[id]) { select(id); } });
          list.appendChild(item);
        });
      });
      var toggle = $("cv-problems-toggle");
      toggle.textContent = count ? "⚠ " + count + " problem" + (count > 1 ? "s" : "") : "✓ Ready to publish";
      toggle.classList.toggle("cv-bad", !!count);
      Object.keys(stepToDf).forEach(function (id) {
        var node = $("node-" + stepToDf[id]);
        if (!node || id === ENTRY) return;
        var content = node.querySelector(".drawflow_content_node"), html = nodeHtml(id, S.definition.steps[id]);
        if (content.innerHTML !== html) content.innerHTML = html; // only what changed: less churn
        node.classList.toggle("cv-has-problem", !!(problems[id] || []).length);
      });
      if (selected) window.BPPanel.showProblems(problems[selected === ENTRY ? "" : selected] || []);
      minimap();
    });
  }
  function reload() {
    return fetch(config.urls.draft, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (data) {
      undo.push(JSON.stringify(S)); // yours stays one undo away
      S = { definition: data.definition, triggers: data.triggers || [], layout: data.layout || {} };
      revision = data.revision;
      conflict = null; dirty = false;
      $("cv-conflict").hidden = true;
      draw(); showPanel(); buttons(); scheduleCheck();
      status("Reloaded the version saved by " + (data.saved_by || "someone") + " at " + data.saved_at + " (Undo brings yours back)");
    });
  }
  function overwrite() {
    revision = conflict.revision;
    conflict = null; dirty = true;
    $("cv-conflict").hidden = true;
    return save();
  }

  // --- Palette ---------------------------------------------------------------------
  function toCanvas(clientX, clientY) {
    var rect = editor.precanvas.getBoundingClientRect();
    return { x: (clientX - rect.x) / editor.zoom, y: (clientY - rect.y) / editor.zoom };
  }
  function palette() {
    var host = $("cv-palette-items");
    if (!host) return;
    Object.keys(registry).forEach(function (type) {
      var item = document.createElement("button");
      item.type = "button";
      item.className = "cv-palette-item";
      item.setAttribute("data-step-type", type);
      item.setAttribute("aria-label", "Add a step: " + registry[type].label);
      item.title = registry[type].description;
      item.innerHTML = '<span aria-hidden="true">' + icon(type) + "</span> " + esc(registry[type].label);
      var drag = null;
      item.addEventListener("mousedown", function (e) {
        if (e.button !== 0) return;
        e.preventDefault();
        drag = { x: e.clientX, y: e.clientY, ghost: null };
        function move(ev) {
          if (!drag.ghost && Math.abs(ev.clientX - drag.x) + Math.abs(ev.clientY - drag.y) > 6) {
            drag.ghost = item.cloneNode(true);
            drag.ghost.className += " cv-ghost";
            document.body.appendChild(drag.ghost);
          }
          if (drag.ghost) { drag.ghost.style.left = ev.clientX + 4 + "px"; drag.ghost.style.top = ev.clientY + 4 + "px"; }
        }
        function up(ev) {
          document.removeEventListener("mousemove", move);
          document.removeEventListener("mouseup", up);
          var moved = drag.ghost;
          if (moved) moved.remove();
          drag = null;
          if (!moved) return addCentered(type);
          var box = $("cv-drawflow").getBoundingClientRect();
          if (ev.clientX >= box.left && ev.clientX <= box.right && ev.clientY >= box.top && ev.clientY <= box.bottom) {
            var p = toCanvas(ev.clientX, ev.clientY);
            addStep(type, p.x - 20, p.y - 20);
          }
        }
        document.addEventListener("mousemove", move);
        document.addEventListener("mouseup", up);
      });
      item.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); addCentered(type); }
      });
      host.appendChild(item);
    });
  }
  function addCentered(type) {
    var box = $("cv-drawflow").getBoundingClientRect();
    var p = toCanvas(box.left + box.width / 2, box.top + box.height / 2);
    var n = Object.keys(S.definition.steps).length;
    addStep(type, p.x - 100 + (n % 5) * 20, p.y - 60 + (n % 5) * 20);
  }

  // --- View: zoom, fit, minimap ------------------------------------------------------
  function bounds() {
    var xs = [], ys = [];
    document.querySelectorAll("#cv-drawflow .drawflow-node").forEach(function (n) {
      xs.push(n.offsetLeft, n.offsetLeft + n.offsetWidth);
      ys.push(n.offsetTop, n.offsetTop + n.offsetHeight);
    });
    if (!xs.length) return { x: 0, y: 0, w: 1, h: 1 };
    var x = Math.min.apply(null, xs), y = Math.min.apply(null, ys);
    return { x: x, y: y, w: Math.max.apply(null, xs) - x, h: Math.max.apply(null, ys) - y };
  }
  function applyView() {
    editor.precanvas.style.transform = "translate(" + editor.canvas_x + "px, " + editor.canvas_y + "px) scale(" + editor.zoom + ")";
    minimap();
  }
  function fit() {
    var b = bounds(), box = $("cv-drawflow");
    var width = b.w + 90; // the port labels right of the last column
    var zoom = Math.min(1.2, Math.max(editor.zoom_min, Math.min((box.clientWidth - 40) / width, (box.clientHeight - 40) / b.h)));
    editor.zoom = editor.zoom_last_value = zoom;
    // canvas.css scales the precanvas from its top left corner; measure where it sits.
    editor.canvas_x = editor.canvas_y = 0;
    applyView();
    var pre = editor.precanvas.getBoundingClientRect(), stage = box.getBoundingClientRect();
    editor.canvas_x = stage.left + 20 - (pre.left + b.x * zoom);
    editor.canvas_y = stage.top + 20 - (pre.top + b.y * zoom);
    applyView();
  }
  function minimap() {
    var c = $("cv-minimap");
    if (!c || !editor) return;
    var ctx = c.getContext("2d"), b = bounds();
    var box = $("cv-drawflow");
    var pad = 200, scale = Math.min(c.width / (b.w + pad * 2), c.height / (b.h + pad * 2));
    ctx.clearRect(0, 0, c.width, c.height);
    ctx.fillStyle = "#f4f6f8"; ctx.fillRect(0, 0, c.width, c.height);
    document.querySelectorAll("#cv-drawflow .drawflow-node").forEach(function (n) {
      ctx.fillStyle = n.classList.contains("cv-has-problem") ? "#ba2121" : "#417690";
      ctx.fillRect((n.offsetLeft - b.x + pad) * scale, (n.offsetTop - b.y + pad) * scale, Math.max(3, n.offsetWidth * scale), Math.max(2, n.offsetHeight * scale));
    });
    // The visible area, in canvas coordinates.
    var tl = toCanvas(box.getBoundingClientRect().left, box.getBoundingClientRect().top);
    ctx.strokeStyle = "#e8a317"; ctx.lineWidth = 2;
    ctx.strokeRect((tl.x - b.x + pad) * scale, (tl.y - b.y + pad) * scale, box.clientWidth / editor.zoom * scale, box.clientHeight / editor.zoom * scale);
    c._map = { b: b, pad: pad, scale: scale };
  }
  function minimapClick(e) {
    var c = $("cv-minimap"), m = c._map;
    if (!m) return;
    var r = c.getBoundingClientRect();
    var x = (e.clientX - r.left) / m.scale - m.pad + m.b.x, y = (e.clientY - r.top) / m.scale - m.pad + m.b.y;
    var box = $("cv-drawflow");
    var now = toCanvas(box.getBoundingClientRect().left + box.clientWidth / 2, box.getBoundingClientRect().top + box.clientHeight / 2);
    editor.canvas_x -= (x - now.x) * editor.zoom;
    editor.canvas_y -= (y - now.y) * editor.zoom;
    applyView();
  }

  // --- Simulator dock ----------------------------------------------------------------------
  function simToggle() {
    var dock = $("cv-sim"), button = $("cv-sim-toggle");
    dock.hidden = !dock.hidden;
    button.setAttribute("aria-expanded", String(!dock.hidden));
    setTimeout(fit, 0); // the stage changed width
    if (!dock.hidden && !$("sim-root").innerHTML.trim()) {
      fetch(config.urls.simulator, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" })
        .then(function (r) { return r.text(); }).then(function (html) { $("sim-root").innerHTML = html; highlight(); });
    }
  }
  function highlight() {
    var stepCell = document.querySelector("#sim-root .sim-step");
    var current = stepCell ? stepCell.textContent.trim() : "";
    document.querySelectorAll("#cv-drawflow .drawflow-node").forEach(function (n) {
      n.classList.toggle("cv-current", !!current && n.getAttribute("data-step-id") === current);
    });
  }

  // --- Keyboard ------------------------------------------------------------------------------
  function typing(target) {
    return target && (/^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName) || target.isContentEditable);
  }
  function keys(e) {
    if (e.key === "Escape" && panel.contains(e.target)) { e.target.blur(); select(null); return; }
    if (typing(e.target)) return;
    var ctrl = e.ctrlKey || e.metaKey, k = e.key;
    if (ctrl && (k === "z" || k === "Z")) { e.preventDefault(); if (e.shiftKey) redoOnce(); else undoOnce(); }
    else if (ctrl && (k === "y" || k === "Y")) { e.preventDefault(); redoOnce(); }
    else if (ctrl && (k === "d" || k === "D")) { e.preventDefault(); duplicateSelected(); }
    else if (k === "Delete" || k === "Backspace") {
      if (selected || selectedEdge) { e.preventDefault(); deleteSelected(); }
    } else if (k === "Escape") { select(null); }
    else if (k === "+" || k === "=") { editor.zoom_in(); minimap(); }
    else if (k === "-") { editor.zoom_out(); minimap(); }
    else if (k === "0" && !ctrl) { fit(); }
    else if (k === "Enter" && e.target.classList && e.target.classList.contains("drawflow-node")) {
      select(e.target.getAttribute("data-step-id"));
      var first = panel.querySelector("input, select, textarea");
      if (first) first.focus();
    } else if (selected && /^Arrow/.test(k)) {
      e.preventDefault();
      var d = e.shiftKey ? 60 : 20;
      moveSelected(k === "ArrowLeft" ? -d : k === "ArrowRight" ? d : 0, k === "ArrowUp" ? -d : k === "ArrowDown" ? d : 0);
    }
  }

  // --- Start -----------------------------------------------------------------------------------
  function start() {
    config = JSON.parse($("cv-config").textContent);
    registry = config.registry;
    revision = config.state.revision;
    S = { definition: config.state.definition, triggers: config.state.triggers || [], layout: config.state.layout || {} };
    if (!S.definition || typeof S.definition !== "object") S.definition = { start: "", steps: {} };
    S.definition.steps = S.definition.steps || {};
    panel = $("cv-panel");
    var host = $("cv-drawflow");
    editor = new window.Drawflow(host);
    editor.reroute = false;
    editor.force_first_input = true;
    editor.key = function () {}; // our own shortcuts, on our state
    editor.start();
    if (!config.can_change) editor.editor_mode = "fixed";
    // A click on a node opens it (Drawflow's own "selected" event does not fire again
    // for the node it still thinks is selected, nor in read-only mode).
    host.addEventListener("click", function (e) {
      var node = e.target.closest && e.target.closest("[data-step-id]");
      if (node && !e.target.closest(".output")) select(node.getAttribute("data-step-id"));
    });
    var missing = Object.keys(S.definition.steps).some(function (id) { return !S.layout[id]; });
    if (missing) autoLayout(S);
    editor.on("nodeSelected", function (df) {
      // Pressing a port starts a link: that is not opening the step.
      var pressed = editor.ele_selected;
      if (rendering || (pressed && pressed.classList && pressed.classList.contains("output"))) return;
      if (selected !== dfToStep[df]) select(dfToStep[df]);
    });
    editor.on("nodeUnselected", function () { });
    editor.on("nodeMoved", function (df) {
      var id = dfToStep[df], node = editor.drawflow.drawflow.Home.data[df];
      if (!id || !node) return;
      change(function (s) { s.layout[id] = { x: Math.round(node.pos_x), y: Math.round(node.pos_y) }; }, { keepPanel: true });
    });
    editor.on("connectionCreated", function (c) {
      if (rendering) return;
      var from = dfToStep[c.output_id], to = dfToStep[c.input_id];
      var index = Number(String(c.output_class).replace("output_", "")) - 1;
      if (!from || !to) return draw();
      connect(from, index, to);
      if (!config.can_change) draw();
    });
    editor.on("connectionSelected", function (c) {
      var from = dfToStep[c.output_id];
      var index = Number(String(c.output_class).replace("output_", "")) - 1;
      selectedEdge = { from: from, key: (portsOf(from)[index] || {}).key };
      selected = null;
      panel.hidden = true;
    });
    editor.on("connectionUnselected", function () { selectedEdge = null; });
    editor.on("connectionRemoved", function () { if (!rendering) draw(); });
    editor.on("nodeRemoved", function () { if (!rendering) draw(); });
    editor.on("zoom", function () { minimap(); });
    editor.on("translate", function () { minimap(); });
    draw();
    palette();
    buttons();
    document.addEventListener("keydown", keys);
    var on = function (id, fn) { if ($(id)) $(id).addEventListener("click", fn); };
    on("cv-undo", undoOnce);
    on("cv-redo", redoOnce);
    on("cv-delete", deleteSelected);
    on("cv-duplicate", duplicateSelected);
    on("cv-zoom-in", function () { editor.zoom_in(); minimap(); });
    on("cv-zoom-out", function () { editor.zoom_out(); minimap(); });
    on("cv-fit", fit);
    on("cv-layout", function () { change(autoLayout); setTimeout(fit, 0); });
    on("cv-reload", reload);
    on("cv-overwrite", overwrite);
    on("cv-sim-toggle", simToggle);
    on("cv-minimap", minimapClick);
    on("cv-problems-toggle", function () {
      var list = $("cv-problems");
      list.hidden = !list.hidden;
      $("cv-problems-toggle").setAttribute("aria-expanded", String(!list.hidden));
    });
    on("cv-help-toggle", function () { $("cv-help").hidden = !$("cv-help").hidden; });
    on("cv-publish", function () {
      clearTimeout(saveTimer);
      save().then(function () { if (!conflict && !dirty) window.location.href = config.urls.publish; });
    });
    if ($("sim-root")) new MutationObserver(highlight).observe($("sim-root"), { childList: true, subtree: true });
    window.addEventListener("beforeunload", function (e) { if (dirty) { e.preventDefault(); e.returnValue = ""; } });
    var names = document.createElement("datalist");
    names.id = "cv-var-names";
    variables().forEach(function (v) { if (v.indexOf("vars.") === 0) { var o = document.createElement("option"); o.value = v.slice(5); names.appendChild(o); } });
    document.body.appendChild(names);
    setTimeout(fit, 0);
    check();
    window.BPCanvas = { api: api, undo: undoOnce, redo: redoOnce, save: save, state: function () { return S; } };
  }
  document.addEventListener("DOMContentLoaded", start);
})();
