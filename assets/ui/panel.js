// EarlySketch target/trial panel (gr.HTML js_on_load): the photo to find, trial progress, a
// countdown (display only: the server enforces the time limit) and a result banner.
// props.value is a PanelValue (retrieval/ui/contract.py; tests/test_ui_contract.py keeps both
// sides equal), or {} before the first event.
/**
 * @typedef {Object} PanelValue
 * @property {string} title
 * @property {string} subtitle
 * @property {string|null} target_src - thumbnail URL of the target; null in free drawing
 * @property {string|null} target_id
 * @property {number|null} remaining_s - study trials with a time limit, while drawing
 * @property {string} banner
 * @property {"found"|"miss"|""} banner_kind
 * @property {string|null} resume_code - a study's resume code, shown while it runs; null otherwise
 */
(() => {
  const root = element.querySelector(".es-panel");
  const title = element.querySelector(".es-panel-title");
  const sub = element.querySelector(".es-panel-sub");
  const img = element.querySelector(".es-target-img");
  const box = element.querySelector(".es-target-box");
  const countdown = element.querySelector(".es-countdown");
  const banner = element.querySelector(".es-banner");
  const resume = element.querySelector(".es-resume");
  let deadline = null;

  function tick() {
    if (deadline === null) { countdown.textContent = ""; return; }
    const left = Math.max(0, Math.ceil((deadline - performance.now()) / 1000));
    countdown.textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")} left`;
    countdown.classList.toggle("es-hurry", left <= 10);
  }

  function render(value) {
    const v = value || props.value || {};
    title.textContent = v.title || "";
    sub.textContent = v.subtitle || "";
    if (v.target_src) {
      if (img.getAttribute("src") !== v.target_src) img.setAttribute("src", v.target_src);
      img.alt = `Target photo ${v.target_id || ""}`;
      box.style.display = "";
    } else {
      img.removeAttribute("src");
      box.style.display = "none";
    }
    deadline = typeof v.remaining_s === "number" && v.remaining_s > 0 ? performance.now() + v.remaining_s * 1000 : null;
    tick();
    banner.textContent = v.banner || "";
    banner.className = "es-banner" + (v.banner_kind ? ` es-${v.banner_kind}` : "");
    resume.textContent = v.resume_code ? `Resume code: ${v.resume_code} (note it to continue this session later)` : "";
    root.dataset.resumeCode = v.resume_code || "";
    root.dataset.targetId = v.target_id || "";
    root.dataset.banner = v.banner_kind || "";
  }

  setInterval(tick, 500);
  watch("value", () => render());
  // The canvas hands over the views of its stroke answers (they come from the app's route, not Gradio).
  document.addEventListener("es-panel", (e) => render(e.detail));
  document.addEventListener("es-reset", () => render());
  render();
  root.dataset.ready = "1";
})();
