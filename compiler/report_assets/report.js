(function () {
  "use strict";
  var el = document.getElementById("pipec-eval-data");
  if (!el) return;
  var DATA = JSON.parse(el.textContent);
  var rows = DATA.rows, ROW_H = 30, HDR_H = 32, OVERSCAN = 6;
  var box = document.getElementById("ev-scroll"), canvas = document.getElementById("ev-canvas");
  var failBox = document.getElementById("ev-failures"), search = document.getElementById("ev-search");
  var count = document.getElementById("ev-count"), detail = document.getElementById("ev-detail");
  var FB = box.classList.contains("fb");     // the page has a feedback column (some row has feedback)
  var shown = [], hay = null, selected = -1, pending = false, lastKey = "";

  function text(v) {
    if (v === null || v === undefined) return "";
    return typeof v === "string" ? v : JSON.stringify(v);
  }
  function pairs(o) {
    if (!o) return "";
    var ks = Object.keys(o), out = [];
    for (var i = 0; i < ks.length; i++) out.push(ks[i] + ": " + text(o[ks[i]]));
    return out.join("  \u00b7  ");
  }
  function shortWhere(w) { var i = Math.max(w.lastIndexOf("/"), w.lastIndexOf("\\")); return i >= 0 ? w.slice(i + 1) : w; }
  function got(r) {                          // the scored fields first; every output in the row's details
    if (r.outputs === null || r.outputs === undefined) return "error: " + text(r.error);
    var ks = Object.keys(r.expected || {}), o = {}, any = false;
    for (var i = 0; i < ks.length; i++) if (ks[i] in r.outputs) { o[ks[i]] = r.outputs[ks[i]]; any = true; }
    return pairs(any ? o : r.outputs);
  }

  function buildHay() {                       // once, on the first text search: O(n)
    hay = new Array(rows.length);
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      hay[i] = (r.where + "\n" + pairs(r.inputs) + "\n" + pairs(r.expected) + "\n" + got(r) + "\n" + text(r.feedback) +
        "\n" + text(r.raw)).toLowerCase();
    }
  }
  function applyFilter() {
    var onlyFail = failBox.checked, q = search.value.trim().toLowerCase();
    var key = onlyFail + "\u0000" + q;
    if (key === lastKey) return;
    lastKey = key;
    if (q && !hay) buildHay();
    var out = [];
    for (var i = 0; i < rows.length; i++) {
      if (onlyFail && rows[i].passed) continue;
      if (q && hay[i].indexOf(q) < 0) continue;
      out.push(i);
    }
    shown = out;
    canvas.style.height = Math.max(shown.length * ROW_H, 1) + "px";
    box.style.height = Math.min(maxH, HDR_H + Math.max(shown.length, 3) * ROW_H + 2) + "px";
    box.scrollTop = 0;
    count.textContent = (shown.length === rows.length ? rows.length.toLocaleString() + " rows"
      : shown.length.toLocaleString() + " of " + rows.length.toLocaleString() + " rows");
    draw();
  }
  function cell(cls, value, title) {
    var d = document.createElement("div");
    d.className = cls;
    d.textContent = value;
    if (title) d.title = title;
    return d;
  }
  function rowEl(i, pos) {
    var r = rows[i], e = document.createElement("div");
    e.className = "r" + (r.passed ? "" : " fail") + (i === selected ? " sel" : "");
    e.style.top = (pos * ROW_H) + "px";
    e.dataset.row = i;
    e.tabIndex = 0;
    e.appendChild(cell("num", i + 1));
    e.appendChild(cell("where mono", shortWhere(r.where), r.where));
    var inp = pairs(r.inputs), exp = pairs(r.expected), g = got(r);
    e.appendChild(cell("inputs", inp, inp.length > 60 ? inp : ""));
    e.appendChild(cell("exp", exp, exp.length > 30 ? exp : ""));
    e.appendChild(cell("got", g, g.length > 30 ? g : ""));
    if (FB) { var fb = text(r.feedback); e.appendChild(cell("fb", fb, fb.length > 30 ? fb : "")); }
    e.appendChild(cell("num", (Math.round(r.score * 1000) / 1000).toString()));
    var b = document.createElement("div"), s = document.createElement("span");
    s.className = "badge " + (r.passed ? "pass" : (r.outputs === null ? "err" : "fail"));
    s.textContent = r.passed ? "pass" : (r.outputs === null ? "error" : "fail");
    b.appendChild(s);
    e.appendChild(b);
    return e;
  }
  function draw() {
    var top = Math.max(0, box.scrollTop - HDR_H), h = box.clientHeight;
    var first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    var last = Math.min(shown.length, Math.ceil((top + h) / ROW_H) + OVERSCAN);
    var frag = document.createDocumentFragment();
    for (var p = first; p < last; p++) frag.appendChild(rowEl(shown[p], p));
    if (!shown.length) {
      var e = document.createElement("div");
      e.className = "empty";
      e.textContent = rows.length ? "No rows match." : "No rows.";
      frag.appendChild(e);
    }
    canvas.replaceChildren(frag);
  }
  function pre(label, value, cls) {
    var wrap = document.createElement("div"), l = document.createElement("div"), p = document.createElement("pre");
    if (cls) wrap.className = cls;
    l.className = "label";
    l.textContent = label;
    p.textContent = value;
    wrap.appendChild(l);
    wrap.appendChild(p);
    return wrap;
  }
  function pretty(v) { return v === null || v === undefined ? "(none)" : JSON.stringify(v, null, 2); }
  function open(i) {
    selected = i;
    var r = rows[i];
    var head = document.createElement("h3");
    head.textContent = "Row " + (i + 1) + " \u00b7 " + r.where + " \u00b7 " + (r.passed ? "pass" : "fail") + " \u00b7 score " + r.score;
    var grid = document.createElement("div");
    grid.className = "grid2";
    grid.appendChild(pre("Inputs", pretty(r.inputs)));
    grid.appendChild(pre("Expected", pretty(r.expected)));
    grid.appendChild(pre("Got", r.outputs === null || r.outputs === undefined ? "(no outputs)" : pretty(r.outputs)));
    var parts = [head, grid];
    if (r.feedback) parts.push(pre("Feedback", text(r.feedback), "feedback"));
    if (r.error) parts.push(pre("Error", text(r.error), "raw"));
    if (!r.passed && r.raw) parts.push(pre("Raw reply", text(r.raw), "raw"));
    detail.replaceChildren.apply(detail, parts);
    detail.classList.add("open");
    draw();
  }
  canvas.addEventListener("click", function (ev) {
    var t = ev.target.closest(".r");
    if (t) open(+t.dataset.row);
  });
  canvas.addEventListener("keydown", function (ev) {
    var t = ev.target.closest(".r");
    if (t && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); open(+t.dataset.row); }
  });
  box.addEventListener("scroll", function () {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () { pending = false; draw(); });
  }, { passive: true });
  window.addEventListener("resize", draw);
  failBox.addEventListener("change", applyFilter);
  var timer = 0;
  search.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(applyFilter, 120); });
  // For scripts and tests: the indices (0-based, in the data) of the rows the filter keeps.
  window.pipecReport = {
    rows: rows,
    shown: function () { return shown.slice(); },
    filter: function (onlyFailures, q) {
      failBox.checked = !!onlyFailures; search.value = q || ""; applyFilter(); return shown.length;
    }
  };
  var maxH = box.clientHeight;               // the CSS height is the most the table takes
  applyFilter();
  document.documentElement.dataset.ready = "1";
})();
