// Condition builder: pick a variable, an operator in words and a value; AND/OR groups.
// Round-trips with the expression language of workflows/engine/conditions.py: an
// expression is "groups joined by or, comparisons joined by and". Anything else
// (brackets, not, lists, a variable on the right) stays in expert mode.
(function () {
  "use strict";
  var OPS = [
    ["==", "is"], ["!=", "is not"], [">=", "is at least"], [">", "is more than"],
    ["<=", "is at most"], ["<", "is less than"], ["contains", "contains"],
    ["is set", "is set"], ["is not set", "is not set"]
  ];
  var NO_VALUE = { "is set": 1, "is not set": 1 };
  var TOKEN = /\s*(?:(-?\d+(?:\.\d+)?)|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(==|!=|<=|>=|<|>|\(|\)|\[|\]|,)|([A-Za-z_][A-Za-z0-9_.]*))/y;
  var NUMBER = /^-?\d+(?:\.\d+)?$/;
  var MAX = 1000;

  function tokenize(source) {
    var tokens = [], pos = 0, text = source.replace(/\s+$/, "");
    if (text.length > MAX) return null;
    while (pos < text.length) {
      TOKEN.lastIndex = pos;
      var m = TOKEN.exec(text);
      if (!m || TOKEN.lastIndex === pos) return null;
      pos = TOKEN.lastIndex;
      if (m[1] !== undefined) tokens.push({ k: "num", v: m[1] });
      else if (m[2] !== undefined) tokens.push({ k: "str", v: m[2].slice(1, -1).replace(/\\(.)/g, "$1") });
      else if (m[3] !== undefined) tokens.push({ k: "op", v: m[3] });
      else tokens.push({ k: "word", v: m[4] });
    }
    return tokens;
  }

  // Expression text -> [[{left, op, value}]] (or-groups of and-comparisons), or null.
  function parse(source) {
    if (typeof source !== "string") return null;
    if (!source.trim()) return [[]];
    var t = tokenize(source);
    if (!t) return null;
    var groups = [[]], i = 0;
    function isPath(tok) {
      return tok && tok.k === "word" && /^(user|vars|bot)\.[A-Za-z][A-Za-z0-9_]*$/.test(tok.v);
    }
    while (i < t.length) {
      var left = t[i];
      if (!isPath(left)) return null;
      var op = t[i + 1], cmp;
      if (!op) return null;
      if (op.k === "word" && op.v === "is") {
        var neg = t[i + 2] && t[i + 2].k === "word" && t[i + 2].v === "not";
        var set = t[i + (neg ? 3 : 2)];
        if (!set || set.k !== "word" || set.v !== "set") return null;
        cmp = { left: left.v, op: neg ? "is not set" : "is set", value: "" };
        i += neg ? 4 : 3;
      } else {
        var name = op.k === "op" ? op.v : (op.v === "contains" ? "contains" : null);
        if (!name || "()[],".indexOf(name) >= 0) return null;
        var right = t[i + 2];
        if (!right) return null;
        var value;
        if (right.k === "num") value = right.v;
        else if (right.k === "str") {
          value = right.v;
          if (NUMBER.test(value) || /^(true|false|null)$/.test(value)) return null; // would not survive
        } else if (right.k === "word" && /^(true|false)$/.test(right.v)) value = right.v;
        else return null;
        cmp = { left: left.v, op: name, value: value };
        i += 3;
      }
      groups[groups.length - 1].push(cmp);
      if (i < t.length) {
        var glue = t[i];
        if (glue.k !== "word" || (glue.v !== "and" && glue.v !== "or")) return null;
        if (glue.v === "or") groups.push([]);
        i += 1;
        if (i >= t.length) return null;
      }
    }
    return groups;
  }

  function quote(value) {
    return '"' + String(value).replace(/\\/g, "\\\\").replace(/"/g, '\\"') + '"';
  }

  function serialize(groups) {
    return groups.filter(function (g) { return g.length; }).map(function (group) {
      return group.map(function (c) {
        if (NO_VALUE[c.op]) return c.left + " " + c.op;
        var v = String(c.value === undefined ? "" : c.value).trim();
        var right = NUMBER.test(v) || v === "true" || v === "false" ? v : quote(v);
        return c.left + " " + c.op + " " + right;
      }).join(" and ");
    }).join(" or ");
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function variableLabel(path) {
    if (path.indexOf("vars.") === 0) return path.slice(5) + " (variable)";
    if (path.indexOf("user.") === 0) return "user: " + path.slice(5).replace(/_/g, " ");
    return path;
  }

  // Mount a builder in `host` for `expression`; onChange(newExpression) on every edit.
  // variables: ["user.balance", "vars.stamps", ...]
  function mount(host, expression, variables, onChange, idPrefix) {
    var groups = parse(expression);
    var expert = groups === null;
    if (!groups) groups = [[]];
    var prefix = idPrefix || "cb";
    host.innerHTML = "";
    host.classList.add("cb");

    function emit() { onChange(expert ? textarea.value : serialize(groups)); }

    var switchRow = el("div", { "class": "cb-switch" });
    var switchBox = el("input", { type: "checkbox", id: prefix + "-expert" });
    var switchLabel = el("label", { "for": prefix + "-expert" }, " Write as an expression (experts)");
    switchRow.appendChild(switchBox);
    switchRow.appendChild(switchLabel);
    var note = el("p", { "class": "cb-note", role: "status" });
    var body = el("div", { "class": "cb-body" });
    var textarea = el("textarea", { rows: "2", "aria-label": "Condition as an expression", "class": "cb-expression" });
    host.appendChild(switchRow);
    host.appendChild(note);
    host.appendChild(body);

    function known() {
      var list = variables.slice();
      groups.forEach(function (g) { g.forEach(function (c) { if (list.indexOf(c.left) < 0) list.push(c.left); }); });
      return list;
    }

    function drawBuilder() {
      body.innerHTML = "";
      groups.forEach(function (group, gi) {
        if (gi > 0) body.appendChild(el("div", { "class": "cb-or" }, "or"));
        var box = el("fieldset", { "class": "cb-group" });
        box.appendChild(el("legend", {}, groups.length > 1 ? "All of these (group " + (gi + 1) + ")" : "All of these"));
        group.forEach(function (c, ci) {
          var row = el("div", { "class": "cb-row" });
          var n = prefix + "-" + gi + "-" + ci;
          var pick = el("select", { "aria-label": "Variable", id: n + "-var", "class": "cb-var" });
          known().forEach(function (path) {
            var option = el("option", { value: path }, variableLabel(path));
            if (path === c.left) option.selected = true;
            pick.appendChild(option);
          });
          var op = el("select", { "aria-label": "Comparison", id: n + "-op", "class": "cb-op" });
          OPS.forEach(function (pair) {
            var option = el("option", { value: pair[0] }, pair[1]);
            if (pair[0] === c.op) option.selected = true;
            op.appendChild(option);
          });
          var value = el("input", { type: "text", "aria-label": "Value", id: n + "-value", "class": "cb-value" });
          value.value = c.value;
          value.hidden = !!NO_VALUE[c.op];
          var remove = el("button", { type: "button", "aria-label": "Remove this condition", "class": "cb-remove" }, "×");
          pick.addEventListener("change", function () { c.left = pick.value; emit(); });
          op.addEventListener("change", function () { c.op = op.value; value.hidden = !!NO_VALUE[c.op]; emit(); });
          value.addEventListener("change", function () { c.value = value.value; emit(); });
          remove.addEventListener("click", function () { group.splice(ci, 1); if (!group.length && groups.length > 1) groups.splice(gi, 1); drawBuilder(); emit(); });
          if (ci > 0) row.appendChild(el("span", { "class": "cb-and" }, "and"));
          [pick, op, value, remove].forEach(function (x) { row.appendChild(x); });
          box.appendChild(row);
        });
        var add = el("button", { type: "button", "class": "cb-add" }, "+ add a condition");
        add.addEventListener("click", function () {
          group.push({ left: known()[0] || "user.balance", op: ">=", value: "" });
          drawBuilder(); emit();
          var rows = box.querySelectorAll(".cb-var");
          if (rows.length) rows[rows.length - 1].focus();
        });
        box.appendChild(add);
        body.appendChild(box);
      });
      var orButton = el("button", { type: "button", "class": "cb-add-or" }, "+ or another group");
      orButton.addEventListener("click", function () {
        groups.push([{ left: known()[0] || "user.balance", op: ">=", value: "" }]);
        drawBuilder(); emit();
      });
      body.appendChild(orButton);
    }

    function draw() {
      switchBox.checked = expert;
      if (expert) {
        body.innerHTML = "";
        body.appendChild(textarea);
      } else {
        note.textContent = "";
        drawBuilder();
      }
    }
    textarea.addEventListener("change", emit);
    switchBox.addEventListener("change", function () {
      if (switchBox.checked) {
        textarea.value = serialize(groups);
        expert = true;
        note.textContent = "";
      } else {
        var parsed = parse(textarea.value);
        if (parsed === null) {
          switchBox.checked = true;
          note.textContent = "This expression cannot be shown as a builder (brackets, not, lists or a variable as a value): it stays an expression.";
          return;
        }
        groups = parsed.length ? parsed : [[]];
        expert = false;
        emit();
      }
      draw();
    });
    if (expert) {
      textarea.value = expression || "";
      note.textContent = "This expression cannot be shown as a builder: it stays an expression.";
    }
    draw();
    return { serialize: function () { return expert ? textarea.value : serialize(groups); } };
  }

  window.BPCondition = { parse: parse, serialize: serialize, mount: mount, OPS: OPS };
})();
