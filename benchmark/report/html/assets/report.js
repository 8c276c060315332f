// scrapbench report.html: sortable tables and the per-image viewer. No network, no innerHTML with data:
// every text from the report goes through textContent.
(function () {
  "use strict";

  // -- sortable tables ------------------------------------------------------------------------------------
  var NUMBER = /^\s*\**\s*([+\-\u2212]?\d+(?:\.\d+)?(?:e[+\-]?\d+)?)/i;

  function cellValue(cell) {
    var text = cell.textContent.trim();
    var match = text.match(NUMBER);
    return {text: text, number: match ? parseFloat(match[1].replace("\u2212", "-")) : null,
            missing: text === "" || text === "\u2013" || text === "-"};
  }

  function sortTable(table, column, th) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var values = rows.map(function (row, i) {
      return {row: row, index: i, value: cellValue(row.cells[column] || row.insertCell(-1))};
    });
    var numeric = values.every(function (v) { return v.value.missing || v.value.number !== null; });
    var current = th.getAttribute("aria-sort");
    // numbers: highest first on the first click; text: A to Z
    var descending = current ? current === "ascending" : numeric;
    Array.prototype.forEach.call(th.parentNode.cells, function (other) { other.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var sign = descending ? -1 : 1;
    values.sort(function (a, b) {
      if (a.value.missing !== b.value.missing) { return a.value.missing ? 1 : -1; }  // empty cells last
      var order = numeric ? a.value.number - b.value.number
        : a.value.text.localeCompare(b.value.text, undefined, {numeric: true});
      return order !== 0 ? sign * order : a.index - b.index;
    });
    values.forEach(function (v) { body.appendChild(v.row); });
  }

  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
      th.addEventListener("click", function () { sortTable(table, column, th); });
      th.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); sortTable(table, column, th); }
      });
    });
  });

  // -- per-image viewer -------------------------------------------------------------------------------------
  var source = document.getElementById("viewer-data");
  if (!source) { return; }
  var data = JSON.parse(source.textContent);
  var methods = data.methods;
  var n = data.ids.length;
  var missing = methods.map(function (m) {
    var set = {};
    m.missing.forEach(function (i) { set[i] = true; });
    return set;
  });
  var state = {sort: "index", sortMethod: 0, cls: "all", size: "all", page: 0, perPage: 24, mode: "heat",
               target: null, shown: methods.map(function () { return true; }),
               thresholds: methods.map(function (m) { return m.threshold === null ? (m.lo + m.hi) / 2 : m.threshold; })};

  function $(id) { return document.getElementById(id); }
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  function option(select, value, text) {
    var node = el("option", "", text);
    node.value = value;
    select.appendChild(node);
  }
  function pad(i) { return ("0000" + i).slice(-5); }
  function fmt(value, percent) {
    if (value === null || value === undefined) { return "\u2013"; }
    return percent ? (100 * value).toFixed(1) : Number(value.toPrecision(3)).toString();
  }
  function bits(mask, names) {
    return names.filter(function (_, k) { return mask & (1 << k); });
  }

  // controls
  methods.forEach(function (m, k) { option($("v-sort-method"), String(k), m.label); });
  data.class_names.forEach(function (name, k) { option($("v-class"), "c" + k, name); });
  if (data.sizes.some(function (s) { return s; })) {
    data.size_names.forEach(function (name, k) { option($("v-size"), "s" + k, name); });
  } else {
    $("v-size").disabled = true;
  }
  var list = $("v-method-list");
  methods.forEach(function (m, k) {
    var row = el("div", "method-row");
    var label = el("label");
    var box = el("input");
    box.type = "checkbox";
    box.checked = true;
    box.addEventListener("change", function () { state.shown[k] = box.checked; render(); });
    label.appendChild(box);
    label.appendChild(el("span", "", " " + m.label));
    var range = el("input");
    range.type = "range";
    range.min = String(m.lo);
    range.max = String(m.hi);
    range.step = String((m.hi - m.lo) / 255);
    range.value = String(state.thresholds[k]);
    range.setAttribute("aria-label", "threshold of " + m.label);
    var shown = el("span", "threshold", fmt(state.thresholds[k]));
    var f1 = el("span", "f1", m.threshold === null ? "" : "F1-max threshold " + fmt(m.threshold));
    range.addEventListener("input", function () {
      state.thresholds[k] = parseFloat(range.value);
      shown.textContent = fmt(state.thresholds[k]);
      document.querySelector("input[name=v-mode][value=user]").checked = true;
      if (state.mode !== "user") { state.mode = "user"; applyMode(); render(); } else { applyMode(); }
    });
    row.appendChild(label);
    row.appendChild(range);
    row.appendChild(shown);
    row.appendChild(f1);
    list.appendChild(row);
  });

  // the mask filter of method k at score t: alpha = 255·code − (c − 1) with c the first grey code at or above t
  function setMask(k, t) {
    var m = methods[k];
    var c = Math.ceil(255 * (t - m.lo) / (m.hi - m.lo) - 1e-9);
    c = Math.max(0, Math.min(256, c));
    $("mask-" + k + "-a").setAttribute("intercept", String(1 - c));
  }
  function applyMode() {
    methods.forEach(function (m, k) {
      setMask(k, state.mode === "user" ? state.thresholds[k] : (m.threshold === null ? m.hi : m.threshold));
    });
    $("viewer-grid").setAttribute("data-mode", state.mode === "heat" ? "heat" : "mask");
  }

  function order() {
    var out = [];
    for (var i = 0; i < n; i++) {
      if (state.cls === "anomalous" && !data.anomalous[i]) { continue; }
      if (state.cls === "normal" && data.anomalous[i]) { continue; }
      if (state.cls.charAt(0) === "c" && !(data.classes[i] & (1 << parseInt(state.cls.slice(1), 10)))) { continue; }
      if (state.size !== "all" && !(data.sizes[i] & (1 << parseInt(state.size.slice(1), 10)))) { continue; }
      out.push(i);
    }
    if (state.sort === "index") { return out; }
    var m = methods[state.sortMethod];
    var key = state.sort === "ap" || state.sort === "auroc" ? m[state.sort] : m.max;
    var sign = state.sort === "max" ? -1 : 1;  // AP, AUROC and "lowest max": lowest first
    out.sort(function (a, b) {
      var va = key[a], vb = key[b];
      if ((va === null) !== (vb === null)) { return va === null ? 1 : -1; }  // undefined values last
      return va === vb ? a - b : sign * (va - vb);
    });
    return out;
  }

  function thumb(src, alt) {
    var img = el("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.width = data.side;  // a fixed box (object-fit: contain): the map lies exactly over its image
    img.height = data.side;
    img.src = src;
    img.alt = alt;
    return img;
  }

  function render() {
    var grid = $("viewer-grid");
    var rows = order();
    var pages = Math.max(1, Math.ceil(rows.length / state.perPage));
    if (state.target !== null) {
      var at = rows.indexOf(state.target);
      if (at >= 0) { state.page = Math.floor(at / state.perPage); }
    }
    state.page = Math.max(0, Math.min(state.page, pages - 1));
    var visible = methods.map(function (_, k) { return k; }).filter(function (k) { return state.shown[k]; });
    grid.textContent = "";
    grid.style.gridTemplateColumns = "minmax(9em, max-content) repeat(" + (2 + visible.length) + ", max-content)";
    ["Test image", "Image", "Ground truth"].forEach(function (title) { grid.appendChild(el("div", "head", title)); });
    visible.forEach(function (k) { grid.appendChild(el("div", "head", methods[k].label)); });
    rows.slice(state.page * state.perPage, (state.page + 1) * state.perPage).forEach(function (i) {
      var info = el("div", "info");
      info.setAttribute("data-index", String(i));
      if (i === state.target) { info.classList.add("target"); }
      info.appendChild(el("div", "index", "#" + i));
      info.appendChild(el("div", "id", data.ids[i]));
      var classes = bits(data.classes[i], data.class_names);
      info.appendChild(el("div", data.anomalous[i] ? "anomalous" : "normal",
                          data.anomalous[i] ? (classes.join(", ") || "anomalous") : "normal"));
      var sizes = bits(data.sizes[i], data.size_names);
      if (sizes.length) { info.appendChild(el("div", "sizes", sizes.join(", ") + " region(s)")); }
      grid.appendChild(info);
      var image = el("div", "cell");
      image.appendChild(thumb(data.dir + "/image/" + pad(i) + ".jpg", "test image " + data.ids[i]));
      grid.appendChild(image);
      var truth = el("div", "cell");
      truth.appendChild(thumb(data.dir + "/truth/" + pad(i) + ".jpg", "ground truth of " + data.ids[i]));
      grid.appendChild(truth);
      visible.forEach(function (k) {
        var m = methods[k];
        var cell = el("div", "cell map");
        if (missing[k][i]) {
          cell.appendChild(el("div", "none", "no map saved"));
        } else {
          var stack = el("div", "stack");
          stack.appendChild(thumb(data.dir + "/image/" + pad(i) + ".jpg", ""));
          var map = thumb(data.dir + "/" + m.dir + "/" + pad(i) + ".png", m.label + " map of " + data.ids[i]);
          map.className = "overlay";
          map.style.filter = state.mode === "heat" ? "url(#heat)" : "url(#mask-" + k + ")";
          stack.appendChild(map);
          cell.appendChild(stack);
        }
        cell.appendChild(el("div", "scores", "AP " + fmt(m.ap[i], true) + " \u00b7 AUROC " + fmt(m.auroc[i], true)));
        cell.appendChild(el("div", "scores", "max score " + fmt(m.max[i])));
        grid.appendChild(cell);
      });
    });
    var first = rows.length ? state.page * state.perPage + 1 : 0;
    $("v-status").textContent = "images " + first + "\u2013" + Math.min(rows.length, (state.page + 1) * state.perPage)
      + " of " + rows.length + " (page " + (state.page + 1) + " of " + pages + ")";
    ["v-prev", "v-prev2"].forEach(function (id) { $(id).disabled = state.page === 0; });
    ["v-next", "v-next2"].forEach(function (id) { $(id).disabled = state.page >= pages - 1; });
  }

  function bind(id, handler) { $(id).addEventListener("change", handler); }
  bind("v-sort", function () { state.sort = $("v-sort").value; state.page = 0; state.target = null; render(); });
  bind("v-sort-method", function () { state.sortMethod = parseInt($("v-sort-method").value, 10); state.page = 0;
                                      state.target = null; render(); });
  bind("v-class", function () { state.cls = $("v-class").value; state.page = 0; state.target = null; render(); });
  bind("v-size", function () { state.size = $("v-size").value; state.page = 0; state.target = null; render(); });
  bind("v-per-page", function () { state.perPage = parseInt($("v-per-page").value, 10); render(); });
  bind("v-goto", function () {
    var i = parseInt($("v-goto").value, 10);
    if (isNaN(i) || i < 0 || i >= n) { return; }
    if (order().indexOf(i) < 0) {  // filtered out: show every image
      state.cls = "all"; state.size = "all";
      $("v-class").value = "all"; $("v-size").value = "all";
    }
    state.target = i;
    render();
    var row = document.querySelector("#viewer-grid .info[data-index='" + i + "']");
    if (row) { row.scrollIntoView({block: "center"}); }
  });
  Array.prototype.forEach.call(document.querySelectorAll("input[name=v-mode]"), function (radio) {
    radio.addEventListener("change", function () { state.mode = radio.value; applyMode(); render(); });
  });
  function step(delta) { return function () { state.page += delta; state.target = null; render(); }; }
  ["v-prev", "v-prev2"].forEach(function (id) { $(id).addEventListener("click", step(-1)); });
  ["v-next", "v-next2"].forEach(function (id) { $(id).addEventListener("click", step(1)); });

  applyMode();
  render();
})();
