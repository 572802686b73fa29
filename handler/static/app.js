// CLIP image search page: compound queries (the search box plus weighted text / image / item terms, see
// terms.js), images downscaled before upload (images.js), filters (filters.js), near-duplicate collapsing,
// "more like this", pages. Plain JS, no build step. URLs are relative to <base href> (set by the server), so
// the page works under an API Gateway stage prefix too.
"use strict";

(() => {
  const $ = (sel) => document.querySelector(sel);
  const els = {
    form: $("#search-form"), query: $("#query"), weight: $("#query-weight"), k: $("#k"), button: $("#search-button"),
    file: $("#file"), drop: $("#dropzone"), error: $("#error"), status: $("#status"), results: $("#results"),
    pager: $("#pager"), prev: $("#prev"), next: $("#next"), pageLabel: $("#page-label"), info: $("#info"),
    key: $("#api-key"), card: $("#card"), dedupe: $("#dedupe"), threshold: $("#dedupe-threshold"),
    addText: $("#add-text"), addImage: $("#add-image"),
  };
  const Terms = window.ClipTerms, Filters = window.ClipFilters, Images = window.ClipImages;
  const OFFSET_MAX = 1000;
  const blobUrls = [];
  let last = null; // {terms, label, options: {dedupe, filter}, k, offset}

  const KEY_STORE = "clip-search-api-key";
  try { els.key.value = sessionStorage.getItem(KEY_STORE) || ""; } catch (_) { /* storage disabled */ }
  els.key.addEventListener("change", () => {
    try { sessionStorage.setItem(KEY_STORE, els.key.value.trim()); } catch (_) { /* ignore */ }
    loadInfo();
  });

  function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    const key = els.key.value.trim();
    if (key) headers["x-api-key"] = key;
    return headers;
  }

  class ApiError extends Error {
    constructor(code, message, status) { super(message); this.code = code; this.status = status; }
  }

  async function call(path, options) {
    let res;
    try {
      res = await fetch(path, options);
    } catch (e) {
      throw new ApiError("network_error", "the service cannot be reached (" + e.message + ")", 0);
    }
    let body = null;
    try { body = await res.json(); } catch (_) { body = null; }
    if (!res.ok) {
      const err = body && body.error ? body.error : null;
      throw new ApiError(err ? err.code : "http_" + res.status,
        err ? err.message : (res.statusText || "request failed") + " (HTTP " + res.status + ")", res.status);
    }
    return body;
  }

  function showError(err) {
    els.error.textContent = "";
    const strong = document.createElement("strong");
    strong.textContent = err.code ? err.code.replace(/_/g, " ") + ": " : "error: ";
    els.error.append(strong, document.createTextNode(err.message || String(err)));
    if (err.status) els.error.append(document.createTextNode(" (HTTP " + err.status + ")"));
    if (err.status === 401) els.error.append(document.createTextNode(" (enter the API key above)"));
    els.error.hidden = false;
  }
  Terms.onError(showError);

  function clearError() { els.error.hidden = true; els.error.textContent = ""; }

  function busy(on) {
    els.button.disabled = on;
    if (on) { els.prev.disabled = true; els.next.disabled = true; } else pager();
    document.body.setAttribute("aria-busy", on ? "true" : "false");
  }

  // Previous / next for the page shown (`last.shown` results from `last.offset`).
  function pager() {
    const shown = last ? last.shown || 0 : 0;
    els.pageLabel.textContent = shown ? "results " + (last.offset + 1) + "–" + (last.offset + shown) : "";
    els.prev.disabled = !last || last.failed || last.offset === 0; // also back from an empty page past the end
    els.next.disabled = !shown || shown < last.k || last.offset + last.k > OFFSET_MAX;
    els.pager.hidden = els.prev.disabled && els.next.disabled;
  }

  function sameOrigin(url) {
    try { return new URL(url, document.baseURI).origin === location.origin; } catch (_) { return false; }
  }

  // Thumbnails of a service that needs an API key must be fetched with the header (an <img> cannot send it).
  async function setImage(img, url) {
    if (!url) { img.alt = "(no image)"; return; }
    if (!els.key.value.trim() || !sameOrigin(url)) { img.src = url; return; }
    try {
      const res = await fetch(url, { headers: authHeaders() });
      if (!res.ok) throw new Error("HTTP " + res.status);
      const blobUrl = URL.createObjectURL(await res.blob());
      blobUrls.push(blobUrl);
      img.src = blobUrl;
    } catch (_) { img.alt = "(image unavailable)"; }
  }

  function clearResults() {
    els.results.textContent = "";
    els.pager.hidden = true;
    while (blobUrls.length) URL.revokeObjectURL(blobUrls.pop());
  }

  function captionOf(r) {
    const m = r.metadata || {};
    return m.caption || m.title || m.name || String(r.id);
  }

  // One term of weight 1 is sent as the single field (the simplest request); anything else as `terms`.
  function requestBody(q) {
    const body = {};
    if (q.terms.length === 1 && q.terms[0].weight === 1) body[q.terms[0].kind] = q.terms[0].value;
    else body.terms = q.terms.map((t) => ({ [t.kind]: t.value, weight: t.weight }));
    Object.assign(body, { k: q.k, offset: q.offset });
    if (q.options.dedupe !== undefined) body.dedupe = q.options.dedupe;
    if (q.options.filter) body.filter = q.options.filter;
    return body;
  }

  function options() {
    const opts = {};
    if (els.dedupe.checked) {
      const t = els.threshold.valueAsNumber;
      opts.dedupe = Number.isFinite(t) ? { threshold: t } : true;
    }
    const filter = Filters.build();
    if (filter) opts.filter = filter;
    return opts;
  }

  function labelOf(terms) {
    return terms.map((t, i) => {
      const sign = t.weight < 0 ? "− " : i ? "+ " : "";
      const w = Math.abs(t.weight) === 1 ? "" : Math.abs(t.weight) + " × ";
      return sign + w + t.label;
    }).join(" ");
  }

  function card(r) {
    const node = els.card.content.firstElementChild.cloneNode(true);
    const caption = captionOf(r);
    node.dataset.id = String(r.id);
    node.querySelector(".caption").textContent = caption;
    node.querySelector(".caption").title = String(r.id);
    const path = r.uri || String(r.id);
    node.querySelector(".path").textContent = path;
    node.querySelector(".path").hidden = path === caption;
    node.querySelector(".score").textContent = r.score.toFixed(3);
    node.querySelector(".score").title = "cosine similarity";
    const img = node.querySelector("img");
    img.alt = caption;
    setImage(img, r.thumbnail_url || r.image_url);
    if (r.image_url) { // a link: the keyboard opens the full image too
      node.querySelector(".thumb").href = r.image_url;
      node.querySelector(".thumb").setAttribute("aria-label", "open the image of " + caption);
    }
    const dupes = r.duplicates || [];
    if (dupes.length) {
      const details = node.querySelector(".dupes");
      details.hidden = false;
      details.querySelector(".dupes-badge").textContent = "+" + dupes.length + " duplicate" + (dupes.length === 1 ? "" : "s");
      for (const id of dupes) {
        const li = document.createElement("li");
        li.textContent = String(id);
        details.querySelector(".dupes-list").append(li);
      }
    }
    const idTerm = { kind: "id", value: r.id, weight: 1, label: "item “" + caption + "”" };
    node.querySelector(".more-like-this").addEventListener("click", () => {
      run({ terms: [idTerm], label: "more like “" + caption + "”" }, () => {
        els.query.value = "";
        els.weight.value = "1";
        Terms.clear();
        Terms.addId(r.id, caption, 1);
      });
    });
    node.querySelector(".add-to-query").addEventListener("click", () => {
      Terms.addId(r.id, caption, 1);
      searchBuilder();
    });
    return node;
  }

  function render(body) {
    clearResults();
    for (const r of body.results) els.results.append(card(r));
    const shown = body.results.length;
    const q = body.query || {};
    let what = last.label;
    if (q.truncated || (q.terms || []).some((t) => t.truncated)) what += " (text truncated to the model's context)";
    const absorbed = body.results.reduce((n, r) => n + (r.duplicates || []).length, 0);
    const extras = [body.took_ms.toFixed(0) + " ms", "index " + body.index_version];
    if (typeof q.matching === "number") extras.unshift(q.matching + " items match the filter");
    if (absorbed) extras.unshift(absorbed + " near-duplicate" + (absorbed === 1 ? "" : "s") + " collapsed");
    els.status.textContent = shown
      ? shown + " result" + (shown === 1 ? "" : "s") + " for " + what + " · " + extras.join(" · ")
      : (last.offset ? "No more results for " : "No results for ") + what + ".";
    last.shown = shown;
  }

  // Runs a query (from the first page unless `offset`); `commit` runs once it succeeded (it shows a query
  // started outside the builder, such as a dropped image, in the builder).
  async function run(query, commit, offset) {
    clearError();
    if (offset === undefined) {
      last = Object.assign({}, query, { options: options(), k: parseInt(els.k.value, 10) || 12, offset: 0 });
    } else {
      last = Object.assign({}, last, { offset, failed: false });
    }
    busy(true);
    els.status.textContent = "Searching…";
    try {
      const body = await call("search", {
        method: "POST", headers: authHeaders({ "content-type": "application/json" }), body: JSON.stringify(requestBody(last)),
      });
      render(body);
      if (commit) commit();
    } catch (err) {
      clearResults();
      last.shown = 0;
      last.failed = true;
      els.status.textContent = "";
      showError(err);
    } finally {
      busy(false);
    }
  }

  // The query of the builder: the search box (when not empty) and the extra terms.
  async function searchBuilder() {
    clearError();
    let terms;
    try { terms = await Terms.collect(); } catch (err) { showError(err); return; }
    const text = els.query.value.trim();
    if (text) {
      const w = els.weight.valueAsNumber;
      terms.unshift({ kind: "text", value: text, weight: Number.isFinite(w) ? w : 1, label: "“" + text + "”" });
    }
    if (!terms.length) { showError({ code: "empty_query", message: "type something to search for, or drop an image" }); return; }
    run({ terms, label: labelOf(terms) });
  }

  // An image chosen, dropped or pasted on the page: a new search by it, which then becomes the builder's query.
  async function searchFile(file) {
    if (!file) return;
    clearError();
    els.status.textContent = "Preparing the image…";
    let prepared;
    try { prepared = await Images.prepare(file); } catch (e) { showError({ code: "invalid_image", message: e.message }); return; }
    const name = file.name || "pasted image";
    const term = { kind: "image", value: prepared.dataUrl, weight: 1, label: "image “" + name + "”" };
    run({ terms: [term], label: term.label + " (sent " + Images.describe(prepared) + ")" }, () => {
      els.query.value = "";
      els.weight.value = "1";
      Terms.clear();
      Terms.addImage(file, 1, false, prepared);
    });
  }

  els.form.addEventListener("submit", (ev) => { ev.preventDefault(); searchBuilder(); });
  els.file.addEventListener("change", () => { searchFile(els.file.files[0]); els.file.value = ""; });
  els.prev.addEventListener("click", () => run(last, null, Math.max(0, last.offset - last.k)));
  els.next.addEventListener("click", () => run(last, null, last.offset + last.k));
  els.addText.addEventListener("click", () => Terms.addText("", 1).el.querySelector(".term-text").focus());
  els.addImage.addEventListener("click", () => Terms.addImage(null, 1, true));

  for (const type of ["dragenter", "dragover"]) {
    els.drop.addEventListener(type, (ev) => { ev.preventDefault(); els.drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "dragend"]) {
    els.drop.addEventListener(type, () => els.drop.classList.remove("over"));
  }
  // The zone and the rest of the page (a file dropped outside the zone would make the browser navigate away);
  // a term of the builder handles its own drops.
  window.addEventListener("dragover", (ev) => ev.preventDefault());
  window.addEventListener("drop", (ev) => {
    ev.preventDefault();
    els.drop.classList.remove("over");
    const file = ev.dataTransfer && ev.dataTransfer.files && ev.dataTransfer.files[0];
    if (file) searchFile(file);
  });
  document.addEventListener("paste", (ev) => {
    const item = [...(ev.clipboardData ? ev.clipboardData.items : [])].find((i) => i.type.startsWith("image/"));
    if (item) searchFile(item.getAsFile());
  });
  els.drop.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); els.file.click(); }
  });

  async function loadInfo() {
    try {
      const info = await call("info", { headers: authHeaders() });
      const idx = info.index;
      els.info.textContent = "model " + (info.model_id || "?") +
        (idx ? " · " + idx.count + " images · index " + idx.version : " · no index (embeddings only)") +
        (info.status !== "ok" ? " · service " + info.status : "");
    } catch (err) {
      els.info.textContent = err.status === 401 ? "enter the API key to use this service" : "service info unavailable: " + err.message;
    }
  }
  loadInfo();
  document.body.dataset.ready = "true";
})();
