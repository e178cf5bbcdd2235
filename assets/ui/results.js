// EarlySketch result grid + rank curve (gr.HTML js_on_load). Renders props.value with DOM APIs
// (never string templates) so photo ids from any folder cannot inject markup or script.
// props.value is a ResultsValue (retrieval/ui/contract.py; tests/test_ui_contract.py keeps both
// sides equal), or the placeholder {k} before the first event; or one from a stroke answer (canvas.js).
/**
 * @typedef {Object} ResultItem
 * @property {string} src - thumbnail URL (served from the thumbnail folder only)
 * @property {string} id
 * @property {number} rank - 1 = best
 * @property {number} score - cosine similarity, 4 decimals
 * @property {boolean} target - the photo to find
 */
/**
 * @typedef {Object} CurvePoint
 * @property {number} strokes
 * @property {number|null} rank - the target's rank; null without a target
 * @property {number} top1 - the best photo's score
 */
/**
 * @typedef {Object} ResultsValue
 * @property {ResultItem[]} items - at most k; empty before the first stroke
 * @property {number} k - slots shown (empty ones are placeholders)
 * @property {CurvePoint[]} curve
 * @property {boolean} has_target - the curve plots the target's rank (else the top-1 score)
 * @property {number|null} target_rank
 * @property {number} gallery_size
 * @property {number|null} server_ms - server time of the last stroke; null before the first
 * @property {string} message - shown while the grid is empty
 */
(() => {
  const root = element.querySelector(".es-results");
  const grid = element.querySelector(".es-grid");
  const stats = element.querySelector(".es-stats");
  const emptyMsg = element.querySelector(".es-empty-msg");
  const svg = element.querySelector(".es-curve");
  const curveTitle = element.querySelector(".es-curve-title");
  const NS = "http://www.w3.org/2000/svg";
  let renders = 0;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svgEl(tag, attrs) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  function renderGrid(items) {
    while (grid.children.length > items.length) grid.lastChild.remove();
    items.forEach((item, i) => {
      let card = grid.children[i];
      if (!card) {
        card = el("figure", "es-card");
        const img = el("img");
        img.loading = "eager";
        img.decoding = "async";
        img.draggable = false;
        card.append(img, el("span", "es-rank"), el("figcaption", "es-score"));
        grid.append(card);
      }
      const img = card.querySelector("img");
      const empty = !item.src;  // placeholder: keeps the layout still so the canvas never moves under the pen
      card.classList.toggle("es-skeleton", empty);
      if (empty) img.removeAttribute("src");
      else if (img.getAttribute("src") !== item.src) img.setAttribute("src", item.src);
      img.alt = item.id || "";
      card.title = empty ? "" : `${item.id}  (score ${Number(item.score).toFixed(3)})`;
      card.dataset.id = item.id || "";
      card.classList.toggle("es-target", !!item.target);
      card.querySelector(".es-rank").textContent = empty ? "" : `#${item.rank}`;
      card.querySelector(".es-score").textContent = empty ? "\u00a0" : Number(item.score).toFixed(3);
    });
  }

  function renderCurve(curve, hasTarget, size) {
    svg.replaceChildren();
    curveTitle.textContent = curve.length
      ? (hasTarget ? "Target rank after each stroke (top = rank 1)" : "Top-1 score after each stroke") : "";
    if (!curve.length) return;
    const W = 320, H = 110, L = 28, R = 8, T = 8, B = 18;
    const n = curve.length;
    const x = (i) => L + (n === 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (n - 1));
    let y, ticks;
    if (hasTarget) {  // log scale, rank 1 at the top
      const maxLog = Math.log10(Math.max(size || 10, 10));
      y = (r) => T + ((H - T - B) * Math.log10(Math.max(r, 1))) / maxLog;
      ticks = [1, 10, 100, 1000, 10000, 100000].filter((t) => t <= Math.max(size || 10, 10));
    } else {
      y = (s) => T + (H - T - B) * (1 - Math.max(0, Math.min(1, (s + 1) / 2)));
      ticks = [];
    }
    for (const t of ticks) {
      svg.append(svgEl("line", { x1: L, x2: W - R, y1: y(t), y2: y(t), class: "es-gridline" }));
      const label = svgEl("text", { x: L - 4, y: y(t) + 3, class: "es-axis", "text-anchor": "end" });
      label.textContent = t >= 1000 ? `${t / 1000}k` : String(t);
      svg.append(label);
    }
    const vals = curve.map((p) => (hasTarget ? p.rank : p.top1));
    const pts = vals.map((v, i) => `${x(i)},${y(v ?? 1)}`).join(" ");
    svg.append(svgEl("polyline", { points: pts, class: "es-line" }));
    vals.forEach((v, i) => {
      const dot = svgEl("circle", { cx: x(i), cy: y(v ?? 1), r: 3.2, class: "es-dot" });
      const tip = svgEl("title", {});
      tip.textContent = hasTarget ? `stroke ${curve[i].strokes}: rank ${v}` : `stroke ${curve[i].strokes}: ${Number(v).toFixed(3)}`;
      dot.append(tip);
      svg.append(dot);
      if (i === n - 1 || n <= 12) {
        const lbl = svgEl("text", { x: x(i), y: H - 5, class: "es-axis", "text-anchor": "middle" });
        lbl.textContent = String(curve[i].strokes);
        svg.append(lbl);
      }
    });
  }

  function render(value) {
    const v = value || props.value || {};
    const items = Array.isArray(v.items) ? v.items : [];
    const slots = Math.max(items.length, Number(v.k) || 0);
    renderGrid(items.concat(Array.from({ length: slots - items.length }, () => ({}))));
    emptyMsg.textContent = items.length ? "" : (v.message || "");
    const parts = [];
    if (v.target_rank) parts.push(`target rank ${v.target_rank} / ${v.gallery_size}`);
    else if (v.gallery_size) parts.push(`${v.gallery_size} photos`);
    if (v.server_ms !== undefined && v.server_ms !== null) parts.push(`${Math.round(v.server_ms)} ms / stroke`);
    stats.textContent = parts.join(" \u00b7 ");
    renderCurve(Array.isArray(v.curve) ? v.curve : [], !!v.has_target, v.gallery_size);
    renders += 1;
    root.dataset.renders = String(renders);
    root.dataset.curve = String(Array.isArray(v.curve) ? v.curve.length : 0);
    root.dataset.ids = items.map((it) => it.id).join("|");
    root.dataset.targetRank = v.target_rank ? String(v.target_rank) : "";
  }

  watch("value", () => render());
  // The canvas hands over the views of its stroke answers (they come from the app's route, not Gradio).
  document.addEventListener("es-results", (e) => render(e.detail));
  document.addEventListener("es-reset", () => render());
  render();
  root.dataset.ready = "1";
})();
