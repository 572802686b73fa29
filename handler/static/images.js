// Images for queries: downscaled in the browser before upload, so a 12 MP phone photo is sent as a few hundred
// KB, far below the service's 413 limits. Exposes window.ClipImages.prepare(file).
"use strict";

window.ClipImages = (() => {
  const MAX_SIDE = 768; // longest side sent; CLIP models see 224-448 px
  const QUALITY = 0.9; // JPEG quality of a re-encoded image
  const KEEP_BYTES = 1 << 20; // a small image of a type the service reads is sent unchanged (exact bytes)
  const KEEP_TYPES = ["image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp"];

  function readDataUrl(blob) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(blob);
    });
  }

  function decode(file) {
    return new Promise((resolve, reject) => {
      const url = URL.createObjectURL(file);
      const img = new Image();
      img.onload = () => { URL.revokeObjectURL(url); resolve(img); };
      img.onerror = () => { URL.revokeObjectURL(url); reject(new Error("cannot decode")); };
      img.src = url; // EXIF orientation is applied by the browser
    });
  }

  function toJpeg(canvas) {
    return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", QUALITY));
  }

  // -> {dataUrl, type, bytes, width, height, original: {bytes, width, height}, resized}. A file the browser
  // cannot decode (TIFF, or not an image) is sent as it is: the service reads more formats and says what is wrong.
  async function prepare(file) {
    const original = { bytes: file.size, width: null, height: null };
    let img;
    try { img = await decode(file); } catch (_) {
      return { dataUrl: await readDataUrl(file), type: file.type || "?", bytes: file.size, width: null, height: null, original, resized: false };
    }
    const w = img.naturalWidth, h = img.naturalHeight;
    Object.assign(original, { width: w, height: h });
    if (Math.max(w, h) <= MAX_SIDE && file.size <= KEEP_BYTES && KEEP_TYPES.includes(file.type)) {
      return { dataUrl: await readDataUrl(file), type: file.type, bytes: file.size, width: w, height: h, original, resized: false };
    }
    const scale = Math.min(1, MAX_SIDE / Math.max(w, h));
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(w * scale));
    canvas.height = Math.max(1, Math.round(h * scale));
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff"; // JPEG has no alpha: transparent pixels become white, not black
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
    const blob = await toJpeg(canvas);
    return {
      dataUrl: await readDataUrl(blob), type: "image/jpeg", bytes: blob.size,
      width: canvas.width, height: canvas.height, original, resized: true,
    };
  }

  function kb(bytes) { return bytes < 1024 * 1024 ? (bytes / 1024).toFixed(0) + " KB" : (bytes / 1048576).toFixed(1) + " MB"; }

  // "768×576 JPEG, 61 KB (from 4000×3000, 5.2 MB)"
  function describe(p) {
    const dims = p.width ? p.width + "×" + p.height + " " : "";
    const kind = (p.type.split("/")[1] || p.type).toUpperCase();
    let text = dims + kind + ", " + kb(p.bytes);
    if (p.resized) text += " (from " + p.original.width + "×" + p.original.height + ", " + kb(p.original.bytes) + ")";
    return text;
  }

  return { prepare, describe, MAX_SIDE };
})();
