// The compound query builder: the extra terms (text, image or an indexed item's id), each with a weight.
// The search box of the page is the first term; window.ClipTerms manages the others.
"use strict";

window.ClipTerms = (() => {
  const list = document.querySelector("#terms");
  const template = document.querySelector("#term-template");
  const clearButton = document.querySelector("#clear-terms");
  let terms = []; // {kind, value, label, prepared, pending, el}
  let onError = () => {};

  function renumber() {
    terms.forEach((t, i) => {
      const n = i + 2; // the search box is term 1
      t.el.querySelector(".term-kind").textContent = "#" + n + " " + t.kind;
      t.el.querySelector(".term-weight").setAttribute("aria-label", "weight of term " + n);
      t.el.querySelector(".remove-term").setAttribute("aria-label", "remove term " + n);
      const input = t.el.querySelector(".term-text, .term-file");
      if (input) input.setAttribute("aria-label", (t.kind === "text" ? "text of term " : "image file of term ") + n);
    });
    clearButton.hidden = terms.length === 0;
  }

  function make(kind, weight) {
    const el = template.content.firstElementChild.cloneNode(true);
    const term = { kind, value: null, label: "", prepared: null, pending: null, el };
    el.dataset.kind = kind;
    el.querySelector(".term-weight").value = String(weight === undefined ? 1 : weight);
    el.querySelector(".remove-term").addEventListener("click", () => remove(term));
    list.append(el);
    terms.push(term);
    renumber();
    return term;
  }

  function remove(term) {
    terms = terms.filter((t) => t !== term);
    term.el.remove();
    renumber();
  }

  function clear() { for (const t of [...terms]) remove(t); }

  function addText(text, weight) {
    const term = make("text", weight);
    const input = document.createElement("input");
    input.type = "text";
    input.className = "term-text";
    input.placeholder = "e.g. people";
    input.value = text || "";
    input.addEventListener("input", () => { term.value = input.value.trim() || null; term.label = "“" + input.value.trim() + "”"; });
    input.dispatchEvent(new Event("input"));
    term.el.querySelector(".term-value").append(input);
    renumber();
    return term;
  }

  function addId(id, caption, weight) {
    const term = make("id", weight);
    term.value = id;
    term.label = "item “" + caption + "”";
    const span = term.el.querySelector(".term-value");
    span.textContent = caption === String(id) ? String(id) : caption + " (" + id + ")";
    span.title = String(id);
    return term;
  }

  // Fills an image term from a file (downscaled here) or from an image already prepared.
  async function setImage(term, file, prepared) {
    const value = term.el.querySelector(".term-value");
    const size = value.querySelector(".term-size");
    size.textContent = "preparing…";
    term.value = null;
    term.pending = (prepared ? Promise.resolve(prepared) : window.ClipImages.prepare(file)).then((p) => {
      term.prepared = p;
      term.value = p.dataUrl;
      term.label = "image “" + (file.name || "pasted") + "”";
      value.querySelector(".term-name").textContent = file.name || "pasted image";
      const img = value.querySelector("img");
      img.src = p.dataUrl;
      img.alt = "term image " + (file.name || "pasted");
      img.hidden = false;
      size.textContent = "sent: " + window.ClipImages.describe(p);
      return p;
    }).catch((e) => { size.textContent = "cannot read this file"; onError({ code: "invalid_image", message: e.message }); });
    return term.pending;
  }

  function addImage(file, weight, openPicker, prepared) {
    const term = make("image", weight);
    const value = term.el.querySelector(".term-value");
    const img = document.createElement("img");
    img.className = "term-preview";
    img.hidden = true;
    const name = document.createElement("span");
    name.className = "term-name";
    name.textContent = "no image yet: drop, paste or";
    const label = document.createElement("label");
    label.className = "file-label";
    label.textContent = "choose a file";
    const input = document.createElement("input");
    input.type = "file";
    input.accept = "image/*";
    input.className = "term-file";
    label.append(input);
    const size = document.createElement("span");
    size.className = "term-size muted";
    value.append(img, name, label, size);
    input.addEventListener("change", () => { if (input.files[0]) setImage(term, input.files[0]); input.value = ""; });
    // an image dropped (or pasted while the term has the focus) on this term fills it, not a new search
    term.el.addEventListener("dragover", (ev) => { ev.preventDefault(); ev.stopPropagation(); term.el.classList.add("over"); });
    term.el.addEventListener("dragleave", () => term.el.classList.remove("over"));
    term.el.addEventListener("drop", (ev) => {
      ev.preventDefault();
      ev.stopPropagation();
      term.el.classList.remove("over");
      const f = ev.dataTransfer && ev.dataTransfer.files && ev.dataTransfer.files[0];
      if (f) setImage(term, f);
    });
    term.el.addEventListener("paste", (ev) => {
      const item = [...(ev.clipboardData ? ev.clipboardData.items : [])].find((i) => i.type.startsWith("image/"));
      if (!item) return;
      ev.preventDefault();
      ev.stopPropagation();
      setImage(term, item.getAsFile());
    });
    renumber();
    if (file) setImage(term, file, prepared);
    else if (openPicker) input.click();
    return term;
  }

  // The terms as the API wants them, after any image still being prepared. Throws on an empty term.
  async function collect() {
    await Promise.all(terms.map((t) => t.pending));
    return terms.map((t, i) => {
      if (t.value === null || t.value === "") {
        throw { code: "empty_term", message: "term #" + (i + 2) + " is empty: fill it in or remove it" };
      }
      const w = t.el.querySelector(".term-weight").valueAsNumber;
      return { kind: t.kind, value: t.value, weight: Number.isFinite(w) ? w : 1, label: t.label };
    });
  }

  clearButton.addEventListener("click", clear);
  return { addText, addImage, addId, clear, collect, count: () => terms.length, onError: (f) => { onError = f; } };
})();
