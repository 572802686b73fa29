// CLIP image search page: text search, image upload (picker or drag and drop), "more like this", paging.
// Plain JS, no build step. URLs are relative to <base href> (set by the server), so the page works
// under an API Gateway stage prefix too.
"use strict";

(() => {
  const $ = (sel) => document.querySelector(sel);
  const els = {
    form: $("#search-form"), query: $("#query"), k: $("#k"), button: $("#search-button"),
    file: $("#file"), drop: $("#dropzone"), error: $("#error"), status: $("#status"),
    results: $("#results"), more: $("#more"), info: $("#info"), key: $("#api-key"), card: $("#card"),
  };
  const blobUrls = [];
  let last = null; // {kind: "json"|"file", payload, file, label, offset}

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
    if (err.status === 401) els.error.append(document.createTextNode(" (enter the API key above)"));
    els.error.hidden = false;
  }

  function clearError() { els.error.hidden = true; els.error.textContent = ""; }

  function busy(on) {
    els.button.disabled = on;
    els.more.disabled = on;
    document.body.setAttribute("aria-busy", on ? "true" : "false");
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
    while (blobUrls.length) URL.revokeObjectURL(blobUrls.pop());
  }

  function captionOf(r) {
    const m = r.metadata || {};
    return m.caption || m.title || m.name || String(r.id);
  }

  function render(body, append) {
    if (!append) clearResults();
    for (const r of body.results) {
      const node = els.card.content.firstElementChild.cloneNode(true);
      node.dataset.id = String(r.id);
      node.querySelector(".caption").textContent = captionOf(r);
      node.querySelector(".caption").title = String(r.id);
      node.querySelector(".score").textContent = r.score.toFixed(3);
      const img = node.querySelector("img");
      img.alt = captionOf(r);
      setImage(img, r.thumbnail_url || r.image_url);
      if (r.image_url) {
        img.style.cursor = "zoom-in";
        img.addEventListener("click", () => window.open(r.image_url, "_blank", "noopener"));
      }
      node.querySelector(".more-like-this").addEventListener("click", () => {
        els.query.value = "";
        run({ kind: "json", payload: { id: r.id }, label: "more like “" + captionOf(r) + "”" });
      });
      els.results.append(node);
    }
    const shown = els.results.children.length;
    const q = body.query || {};
    let what = last.label;
    if (q.truncated) what += " (text truncated to the model's context)";
    els.status.textContent = shown
      ? shown + " result" + (shown === 1 ? "" : "s") + " for " + what + " · " + body.took_ms.toFixed(0) + " ms · index " + body.index_version
      : "No results for " + what + ".";
    els.more.hidden = body.results.length < last.k || last.offset + last.k >= 1000;
  }

  async function run(query, append) {
    clearError();
    const k = parseInt(els.k.value, 10) || 12;
    if (!append) last = Object.assign({}, query, { offset: 0, k });
    else last.offset += last.k;
    busy(true);
    els.status.textContent = append ? "Loading more…" : "Searching…";
    try {
      let body;
      if (last.kind === "file") {
        const form = new FormData();
        form.append("image", last.file, last.file.name || "upload");
        form.append("k", String(last.k));
        form.append("offset", String(last.offset));
        body = await call("search", { method: "POST", headers: authHeaders(), body: form });
      } else {
        const payload = Object.assign({}, last.payload, { k: last.k, offset: last.offset });
        body = await call("search", {
          method: "POST", headers: authHeaders({ "content-type": "application/json" }), body: JSON.stringify(payload),
        });
      }
      render(body, append);
    } catch (err) {
      if (!append) clearResults();
      els.status.textContent = "";
      els.more.hidden = true;
      showError(err);
    } finally {
      busy(false);
    }
  }

  function searchFile(file) {
    if (!file) return;
    els.query.value = "";
    run({ kind: "file", file, label: "image “" + (file.name || "upload") + "”" });
  }

  els.form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = els.query.value.trim();
    if (!text) { showError({ code: "empty_query", message: "type something to search for, or drop an image" }); return; }
    run({ kind: "json", payload: { text }, label: "“" + text + "”" });
  });
  els.file.addEventListener("change", () => { searchFile(els.file.files[0]); els.file.value = ""; });
  els.more.addEventListener("click", () => run(last, true));

  for (const type of ["dragenter", "dragover"]) {
    els.drop.addEventListener(type, (ev) => { ev.preventDefault(); els.drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "dragend"]) {
    els.drop.addEventListener(type, () => els.drop.classList.remove("over"));
  }
  els.drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    els.drop.classList.remove("over");
    const file = ev.dataTransfer && ev.dataTransfer.files && ev.dataTransfer.files[0];
    if (file) searchFile(file);
  });
  // A file dropped outside the zone would make the browser navigate away: search it instead.
  window.addEventListener("dragover", (ev) => ev.preventDefault());
  window.addEventListener("drop", (ev) => {
    ev.preventDefault();
    const file = ev.dataTransfer && ev.dataTransfer.files && ev.dataTransfer.files[0];
    if (file) searchFile(file);
  });
  document.addEventListener("paste", (ev) => {
    const item = [...(ev.clipboardData ? ev.clipboardData.items : [])].find((i) => i.type.startsWith("image/"));
    if (item) searchFile(item.getAsFile());
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
