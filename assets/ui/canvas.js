// EarlySketch freehand canvas (runs as gr.HTML js_on_load: element, trigger, props, watch).
//
// Keeps an append-only journal of the current trial: events {seq, type: "stroke"|"undo"|"clear", ...}.
// Stroke events hold every point [x, y, t_ms, pressure] (t from performance.now() relative to
// the trial start, x/y in canvas CSS pixels). After every change it posts the events the server
// has not acknowledged yet straight to the app's route POST es/stroke (retrieval/ui/stroke_route.py,
// outside Gradio's queue), one request in flight at a time: events drawn meanwhile go in the next
// batch, each as its JSON text, with the acknowledged seq (base) and the journal's running CRC-32
// there (chain; retrieval/study/payload.py computes the same). The answer (StrokeAnswer) carries
// the views, which this script hands to the result grid and the panel as DOM events
// ("es-results", "es-panel"; "es-reset" when a new sketch starts). A batch the server could not save (503, network) is sent again.
// props.value: Python sets a CanvasValue (below) to start a new trial (new token) or lock the
// canvas; this script keeps {"trial": token, "seq": n} there as JSON text, which Give up and Next
// send as the trial they act on. trigger("trial_check") asks Gradio for the page's state when a
// trial ended on a stroke or its time ran out.
// props.idle_reset_s > 0: after that many idle seconds with ink on the canvas, trigger("idle").
// props.compact_on_clear: drop journal events before a clear (free drawing; never in studies).
// CanvasValue and StrokeAnswer match retrieval/ui/contract.py (tests/test_ui_contract.py keeps both sides equal).
/**
 * @typedef {Object} CanvasValue
 * @property {string} trial - the canvas token: a new one clears the canvas
 * @property {boolean} locked
 * @property {string} message - shown over a locked canvas
 * @property {number|null} deadline_s - seconds left in a timed trial: the canvas asks again when it passes
 */
/**
 * @typedef {Object} StrokeAnswer
 * @property {string} trial - the canvas token the batch named
 * @property {number} applied - that trial's events the server has applied (and, in a study, logged)
 * @property {string} chain - the journal's running checksum after them
 * @property {ResultsValue|null} results - rendered by results.js
 * @property {PanelValue|null} panel - rendered by panel.js
 * @property {CanvasValue|null} canvas
 * @property {boolean|null} trial_ended - the trial just ended: the page offers Next trial
 * @property {string} warning - a notice for the person drawing ("" when none)
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
  const MAX_BATCH = 60;  // events per request (retrieval/study/payload.py MAX_NEW_EVENTS)
  const CHAIN_START = "00000000";
  const STROKE_URL = new URL("es/stroke", document.baseURI).href;
  const ENCODER = new TextEncoder();
  const CRC_TABLE = (() => {
    const table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
    return table;
  })();

  const state = {
    trial: null, t0: performance.now(), t0Utc: Date.now(), events: [], seq: 0,
    width: 0, height: 0, locked: false, active: null, lastInput: performance.now(), points: 0,
  };
  // What is sent: events not acknowledged yet ({seq, text}), the chain after each seq, the last ack.
  const wire = { pending: [], chains: new Map([[0, CHAIN_START]]), acked: 0, inflight: false, waiting: false, backoffMs: 0 };

  function chainAfter(chain, text) {  // CRC-32 of text + "\n" continued from chain, like zlib.crc32
    let c = (parseInt(chain, 16) ^ 0xffffffff) >>> 0;
    for (const b of ENCODER.encode(text + "\n")) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
    return ((c ^ 0xffffffff) >>> 0).toString(16).padStart(8, "0");
  }

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

  function publish() {  // the trial Give up and Next act on
    props.value = JSON.stringify({ trial: state.trial, seq: state.seq });
  }

  function notify(text) {
    wrap.dataset.warning = text || "";
    if (text) info.textContent = text;
  }

  function push(event) {
    state.seq += 1;
    const full = { seq: state.seq, ...event };
    const text = JSON.stringify(full);
    wire.chains.set(state.seq, chainAfter(wire.chains.get(state.seq - 1), text));
    wire.pending.push({ seq: state.seq, text });
    state.events.push(full);
    state.lastInput = performance.now();
    publish();
    redraw();
    send();
  }

  function render(answer) {  // hand the answer's views to their components, then the canvas's own
    if (answer.results) document.dispatchEvent(new CustomEvent("es-results", { detail: answer.results }));
    if (answer.panel) document.dispatchEvent(new CustomEvent("es-panel", { detail: answer.panel }));
    if (answer.canvas) applyServerValue(answer.canvas);
    notify(answer.warning);
    if (answer.trial_ended) trigger("trial_check");  // Gradio shows Next trial
  }

  function acknowledge(applied) {
    wire.acked = Math.max(wire.acked, applied);
    wire.pending = wire.pending.filter((e) => e.seq > wire.acked);
    for (const seq of wire.chains.keys()) if (seq < wire.acked - MAX_BATCH) wire.chains.delete(seq);
    wrap.dataset.acked = String(wire.acked);
  }

  async function send() {
    if (wire.inflight || wire.waiting || !state.trial || !wire.pending.length) return;
    wire.inflight = true;
    const trial = state.trial;
    const batch = wire.pending.slice(0, MAX_BATCH);
    const base = batch[0].seq - 1;
    const rect = canvas.getBoundingClientRect();
    const body = JSON.stringify({
      trial, base, chain: wire.chains.get(base), width: state.width || rect.width, height: state.height || rect.height,
      dpr: window.devicePixelRatio || 1, t0_utc_ms: state.t0Utc, events: batch.map((e) => e.text),
    });
    let status = 0, answer = null, retryAfter = 0;
    try {
      const response = await fetch(STROKE_URL, {
        method: "POST", headers: { "content-type": "application/json" }, body, credentials: "same-origin",
      });
      status = response.status;
      retryAfter = Number(response.headers.get("retry-after")) || 0;
      answer = await response.json();
    } catch (err) {
      answer = null;  // the network or the server is down: send again below
    }
    wire.inflight = false;
    if (trial !== state.trial) { send(); return; }  // a new trial began meanwhile: its own journal goes on
    if (status === 200) {
      wire.backoffMs = 0;
      acknowledge(answer.applied);
      render(answer);
    } else if (status === 409 && answer) {  // out of sync: the server says what it holds, send from there
      acknowledge(answer.applied);
      if (wire.pending.length && wire.pending[0].seq !== wire.acked + 1) {
        wire.pending = [];  // what the server misses is gone here too: the next stroke starts afresh
        notify("The drawing is out of step with the server: reload the page");
      }
    } else if (status === 400 || status === 410 || status === 413) {
      // Never accepted as it is (malformed, over a limit, trial closed): say why and drop it.
      wire.pending = wire.pending.filter((e) => e.seq > batch[batch.length - 1].seq);
      notify((answer && (answer.warning || answer.error)) || `Stroke refused (${status})`);
    } else if (status === 401) {
      notify((answer && answer.error) || "Reload the page");
      return;
    } else {  // 503 (not saved), 429 (too fast), network: the same events again later
      notify((answer && (answer.warning || answer.error)) || "Connection lost: retrying");
      wire.backoffMs = Math.min(10000, Math.max(retryAfter * 1000, wire.backoffMs * 2 || 1000));
      wire.waiting = true;
      setTimeout(() => { wire.waiting = false; send(); }, wire.backoffMs);
      return;
    }
    send();  // what was drawn meanwhile, or (409) what the server misses
  }

  function reset(trial, locked) {
    Object.assign(state, {
      trial, events: [], seq: 0, width: 0, height: 0, active: null, points: 0,
      t0: performance.now(), t0Utc: Date.now(), locked: !!locked, lastInput: performance.now(),
    });
    Object.assign(wire, { pending: [], chains: new Map([[0, CHAIN_START]]), acked: 0 });
    publish();
    redraw();
    // The grid and panel show this script's stroke answers; Gradio set their values for the new sketch
    // in the same update as this token, but an unchanged value would not re-render them.
    document.dispatchEvent(new CustomEvent("es-reset"));
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
      state.trial = v.trial; state.locked = !!v.locked; publish(); redraw(); send();
    } else if (v.trial && v.trial !== state.trial) reset(v.trial, v.locked);
    else { state.locked = !!v.locked; publish(); redraw(); }
    lockMsg.textContent = v.message || "";
    clearTimeout(deadlineTimer);
    // Time limit: wake the server when it passes even if nobody draws (it decides, not us).
    if (typeof v.deadline_s === "number") deadlineTimer = setTimeout(() => trigger("trial_check"), v.deadline_s * 1000 + 250);
  }
  // Only objects come from Python; the strings are this script's own {trial, seq}.
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
