// The filters panel -> the `filter` object of POST /search (see docs/api.md, Filters), or null when no field
// is set (then no `filter` is sent, so the page also works with a service without filters).
"use strict";

window.ClipFilters = (() => {
  const $ = (sel) => document.querySelector(sel);
  const f = {
    path: $("#f-path"), ext: $("#f-ext"), from: $("#f-from"), to: $("#f-to"),
    wmin: $("#f-wmin"), wmax: $("#f-wmax"), hmin: $("#f-hmin"), hmax: $("#f-hmax"),
    key: $("#f-meta-key"), value: $("#f-meta-value"),
  };
  const count = $("#filter-count");

  // Metadata values compare with their JSON type: numbers and true/false are sent as such (like the compact form).
  function metaValue(text) {
    if (text === "true" || text === "false") return text === "true";
    if (text !== "" && /^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text) && Number.isFinite(Number(text))) return Number(text);
    return text;
  }

  function range(minEl, maxEl) {
    const r = {};
    if (minEl.value !== "") r.min = Math.trunc(Number(minEl.value));
    if (maxEl.value !== "") r.max = Math.trunc(Number(maxEl.value));
    return Object.keys(r).length ? r : null;
  }

  function build() {
    const filter = {};
    const path = f.path.value.trim();
    if (path) filter.path_prefix = path;
    const exts = f.ext.value.split(/[\s,]+/).map((e) => e.replace(/^\./, "").trim()).filter(Boolean);
    if (exts.length) filter.ext = exts.length === 1 ? exts[0] : exts;
    const taken = {};
    if (f.from.value) taken.from = f.from.value;
    if (f.to.value) taken.to = f.to.value;
    if (Object.keys(taken).length) filter.taken = taken;
    const width = range(f.wmin, f.wmax), height = range(f.hmin, f.hmax);
    if (width) filter.width = width;
    if (height) filter.height = height;
    const key = f.key.value.trim();
    if (key) filter.meta = { [key]: metaValue(f.value.value.trim()) };
    return Object.keys(filter).length ? filter : null;
  }

  function update() {
    const filter = build();
    const n = filter ? Object.keys(filter).length : 0;
    count.textContent = n ? "(" + n + " set)" : "";
  }

  function clear() {
    for (const el of Object.values(f)) el.value = "";
    update();
  }

  for (const el of Object.values(f)) el.addEventListener("input", update);
  $("#clear-filters").addEventListener("click", clear);
  return { build, clear };
})();
