// EarlySketch target/trial panel (gr.HTML js_on_load): the photo to find, trial progress, a
// countdown (display only: the server enforces the time limit) and a result banner.
// value: {title, subtitle, target_src, target_id, remaining_s, banner, banner_kind: "found"|"miss"|""}
(() => {
  const root = element.querySelector(".es-panel");
  const title = element.querySelector(".es-panel-title");
  const sub = element.querySelector(".es-panel-sub");
  const img = element.querySelector(".es-target-img");
  const box = element.querySelector(".es-target-box");
  const countdown = element.querySelector(".es-countdown");
  const banner = element.querySelector(".es-banner");
  let deadline = null;

  function tick() {
    if (deadline === null) { countdown.textContent = ""; return; }
    const left = Math.max(0, Math.ceil((deadline - performance.now()) / 1000));
    countdown.textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")} left`;
    countdown.classList.toggle("es-hurry", left <= 10);
  }

  function render() {
    const v = props.value || {};
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
    root.dataset.targetId = v.target_id || "";
    root.dataset.banner = v.banner_kind || "";
  }

  setInterval(tick, 500);
  watch("value", render);
  render();
  root.dataset.ready = "1";
})();
