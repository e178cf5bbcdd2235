// EarlySketch freehand canvas (runs as gr.HTML js_on_load: element, trigger, props, watch).
//
// Keeps an append-only journal of the current trial in props.value, as JSON text:
//   {trial, width, height, dpr, t0_utc_ms, events: [{seq, type: "stroke"|"undo"|"clear", ...}]}
// Text, not an object: the server's web framework walks every nested value of a request on its
// event loop (all sessions wait meanwhile), while one string costs it almost nothing; the app
// parses the text itself, with its own size limits, in a worker thread.
// Stroke events hold every point [x, y, t_ms, pressure] (t from performance.now() relative to
// the trial start, x/y in canvas CSS pixels). After every change it calls trigger("stroke_end");
// Python re-reads the whole journal, so events coalesced while the server is busy are not lost.
// Python sets props.value to a CanvasValue (below) to start a new trial (new token) or lock the canvas.
// props.idle_reset_s > 0: after that many idle seconds with ink on the canvas, trigger("idle").
// props.compact_on_clear: drop journal events before a clear (free drawing; never in studies).
// CanvasValue matches retrieval/ui/contract.py (tests/test_ui_contract.py keeps both sides equal).
/**
 * @typedef {Object} CanvasValue
 * @property {string} trial - the canvas token: a new one clears the canvas
 * @property {boolean} locked
 * @property {string} message - shown over a locked canvas
 * @property {number|null} deadline_s - seconds left in a timed trial: the canvas asks again when it passes
 */
(() => {
  const wrap = element.querySelector(".es-canvas-wrap");
  const canvas = element.querySelector(".es-canvas");
  const paper = element.querySelector(".es-paper");
  const info = element.querySelector(".es-info");
  const brush = element.querySelector(".es-brush");
  const lockMsg = element.querySelector(".es-lock");
  const ctx = canvas.getContext("2d");
  // Points in the journal: the server refuses more than 50000 (retrieval/study/payload.py MAX_POINTS),
  // and counts every point the journal holds, so a clear frees points only when it compacts the journal.
  const MAX_POINTS = 40000;
  const MAX_STROKE_POINTS = 9000;  // the server refuses strokes over 10000 points (StrokeLimits)

  const state = {
    trial: null, t0: performance.now(), t0Utc: Date.now(), events: [], seq: 0,
    width: 0, height: 0, locked: false, active: null, lastInput: performance.now(), points: 0,
  };

  const now = () => Math.round((performance.now() - state.t0) * 10) / 10;
  const round2 = (v) => Math.round(v * 100) / 100;

  function strokesOnCanvas() {
    let strokes = [];
    for (const e of state.events) {
      if (e.type === "stroke") strokes.push(e);
      else if (e.type === "undo") strokes.pop();
      else if (e.type === "clear") strokes = [];
    }
    return strokes;
  }

  function resizeBacking() {
    const rect = canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round(rect.width * dpr));
    canvas.height = Math.max(1, Math.round(rect.height * dpr));
    redraw();
  }

  function scale() {  // logical (sketch) pixels -> backing-store pixels
    const rect = canvas.getBoundingClientRect();
    const w = state.width || rect.width || 1;
    return canvas.width / w;
  }

  function drawStroke(stroke, s) {
    const pts = stroke.points;
    ctx.lineWidth = (stroke.brush || 4) * s;
    ctx.beginPath();
    ctx.moveTo(pts[0][0] * s, pts[0][1] * s);
    if (pts.length === 1) ctx.lineTo(pts[0][0] * s + 0.01, pts[0][1] * s);
    for (let i = 1; i < pts.length; i++) ctx.lineTo(pts[i][0] * s, pts[i][1] * s);
    ctx.stroke();
  }

  function redraw() {
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.strokeStyle = "#111111";
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    const s = scale();
    for (const stroke of strokesOnCanvas()) drawStroke(stroke, s);
    if (state.active) drawStroke(state.active, s);
    updateInfo();
  }

  function updateInfo() {
    const n = strokesOnCanvas().length;
    info.textContent = n ? `${n} stroke${n === 1 ? "" : "s"}` : "";
    wrap.dataset.strokes = String(n);
    wrap.dataset.seq = String(state.seq);
    wrap.dataset.trial = state.trial || "";
    wrap.classList.toggle("es-empty", n === 0 && !state.active);
    wrap.classList.toggle("es-locked", state.locked);
  }

  function publish() {
    props.value = JSON.stringify({
      trial: state.trial, width: state.width || canvas.getBoundingClientRect().width,
      height: state.height || canvas.getBoundingClientRect().height, dpr: window.devicePixelRatio || 1,
      t0_utc_ms: state.t0Utc, events: state.events,
    });
  }

  function push(event) {
    state.seq += 1;
    state.events.push({ seq: state.seq, ...event });
    state.lastInput = performance.now();
    publish();
    redraw();
    trigger("stroke_end");
  }

  function reset(trial, locked) {
    Object.assign(state, {
      trial, events: [], seq: 0, width: 0, height: 0, active: null, points: 0,
      t0: performance.now(), t0Utc: Date.now(), locked: !!locked, lastInput: performance.now(),
    });
    publish();
    redraw();
  }

  function pointFrom(e) {
    const rect = canvas.getBoundingClientRect();
    const k = (state.width || rect.width) / rect.width;
    const p = e.pointerType === "mouse" ? 0.5 : (e.pressure || 0.5);
    return [round2((e.clientX - rect.left) * k), round2((e.clientY - rect.top) * k), now(), round2(p)];
  }

  canvas.addEventListener("pointerdown", (e) => {
    if (state.locked || state.active || (e.pointerType === "mouse" && e.button !== 0)) return;
    if (state.points >= MAX_POINTS) {
      info.textContent = props.compact_on_clear ? "Canvas full: clear it to go on" : "Drawing limit reached for this trial";
      return;
    }
    e.preventDefault();
    wrap.focus({ preventScroll: true });  // preventDefault also stops the focus a press gives: Ctrl+Z needs it
    canvas.setPointerCapture(e.pointerId);
    if (!state.width) {  // fix the sketch's coordinate frame at its first stroke
      const rect = canvas.getBoundingClientRect();
      state.width = round2(rect.width);
      state.height = round2(rect.height);
    }
    const t = now();
    state.active = { id: e.pointerId, pointer: e.pointerType || "mouse", t_down: t, brush: Number(brush.value),
                     points: [pointFrom(e)] };
    wrap.classList.remove("es-empty");
    redraw();
  });

  canvas.addEventListener("pointermove", (e) => {
    const a = state.active;
    if (!a || e.pointerId !== a.id) return;
    e.preventDefault();
    const list = typeof e.getCoalescedEvents === "function" ? e.getCoalescedEvents() : [];
    const s = scale();
    ctx.lineWidth = a.brush * s;
    ctx.beginPath();
    const last = a.points[a.points.length - 1];
    ctx.moveTo(last[0] * s, last[1] * s);
    for (const ev of (list.length ? list : [e])) {
      if (a.points.length >= MAX_STROKE_POINTS) break;  // a very long stroke keeps its first points
      const p = pointFrom(ev);
      a.points.push(p);
      ctx.lineTo(p[0] * s, p[1] * s);
    }
    ctx.stroke();
  });

  function endStroke(e) {
    const a = state.active;
    if (!a || e.pointerId !== a.id) return;
    state.active = null;
    state.points += a.points.length;
    push({ type: "stroke", pointer: a.pointer, t_down: a.t_down, t_up: now(), brush: a.brush, points: a.points });
  }
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);

  element.querySelector(".es-undo").addEventListener("click", () => {
    if (!state.locked && strokesOnCanvas().length) push({ type: "undo", t: now() });
  });
  element.querySelector(".es-clear").addEventListener("click", () => {
    if (state.locked || !strokesOnCanvas().length) return;
    if (props.compact_on_clear) { state.events = []; state.points = 0; }
    push({ type: "clear", t: now() });
  });
  element.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "z") { e.preventDefault(); element.querySelector(".es-undo").click(); }
  });
  wrap.tabIndex = 0;

  let deadlineTimer = null;
  function applyServerValue(v) {  // Python started a new trial or (un)locked the canvas
    if (v.trial && v.trial !== state.trial && state.trial === null && state.events.length) {
      // Ink drawn before the first trial token arrived: adopt the token instead of wiping the strokes.
      state.trial = v.trial; state.locked = !!v.locked; publish(); redraw(); trigger("stroke_end");
    } else if (v.trial && v.trial !== state.trial) reset(v.trial, v.locked);
    else { state.locked = !!v.locked; publish(); redraw(); }
    lockMsg.textContent = v.message || "";
    clearTimeout(deadlineTimer);
    // Time limit: wake the server when it passes even if nobody draws (it decides, not us).
    if (typeof v.deadline_s === "number") deadlineTimer = setTimeout(() => trigger("stroke_end"), v.deadline_s * 1000 + 250);
  }
  // Only objects come from Python; the strings are this script's own journal.
  watch("value", () => { if (props.value && typeof props.value === "object") applyServerValue(props.value); });

  const idle = Number(props.idle_reset_s || 0);
  if (idle > 0) {
    setInterval(() => {
      if (!state.active && strokesOnCanvas().length && performance.now() - state.lastInput > idle * 1000) {
        state.lastInput = performance.now();
        trigger("idle");
      }
    }, 1000);
  }

  new ResizeObserver(resizeBacking).observe(paper);
  reset(null, false);
  applyServerValue(props.value && typeof props.value === "object" ? props.value : {});
  resizeBacking();
  wrap.dataset.ready = "1";
})();
