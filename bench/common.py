"""Shared helpers for the benchmarks: machine header, percentiles, result files, the model, the app.

Every result file carries the machine (CPU model, cores, RAM, load), the date, library versions
and a plot. Each benchmark writes ``bench/results/<name>.md`` (human), ``<name>.json`` (read by
``bench/run_all.py``: the targets with measured value and met / not met) and ``<name>.png``.

The app helpers start ``app.py`` in a subprocess on a free 127.0.0.1 port and call its ``rank``
endpoint over plain HTTP (``POST /gradio_api/call/rank`` + the SSE result); they are shared by
the concurrency and browser benchmarks and by the hardening tests.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DEFAULT_MODEL = ROOT / "assets" / "model"
BENCH_CACHE = ROOT / ".cache" / "bench"  # galleries built for benchmarks (git-ignored, rebuilt on demand)
VERSIONED = ("numpy", "torch", "torchvision", "faiss-cpu", "opencv-python-headless", "gradio", "playwright")
LOCALHOST = "127.0.0.1"


if str(ROOT) not in sys.path:  # benches run as scripts: make `retrieval` importable
    sys.path.insert(0, str(ROOT))


# --- machine / versions --------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (falls back to the platform's processor string)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def ram_gb() -> float:
    """Total physical memory in GiB (0 when unknown)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    return 0.0


def versions(packages: Sequence[str] = VERSIONED) -> dict[str, str]:
    """Installed versions of the libraries that shape the timings (missing ones are left out)."""
    found = {"python": platform.python_version()}
    for name in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, OS, load average, UTC date and library versions, as a dict."""
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": round(ram_gb(), 1),
        "os": platform.platform(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "versions": versions(),
    }


def header_lines(title: str, command: str, machine: dict[str, Any] | None = None) -> list[str]:
    """The Markdown head every result file starts with: title, machine, date, versions, command."""
    m = machine or machine_info()
    libs = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return [
        f"# {title}",
        "",
        f"- date: {m['date_utc']}",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GiB RAM, {m['os']}; "
        f"load average {m['load_avg_1m']} at start (shared machines make p95 noisy)",
        f"- libraries: {libs}",
        f"- command: `{command}`",
    ]


# --- statistics ----------------------------------------------------------------------------------
def percentiles(samples: Sequence[float] | np.ndarray, qs: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """``{"n", "mean", "p50", "p95", ...}`` of a sample (NaN when empty)."""
    x = np.asarray(samples, dtype=np.float64)
    out: dict[str, float] = {"n": int(x.size), "mean": float(x.mean()) if x.size else math.nan}
    for q in qs:
        out[f"p{q}"] = float(np.percentile(x, q)) if x.size else math.nan
    return out


def time_calls(fn: Callable[[], Any], reps: int, warmup: int = 3, max_s: float = 120.0) -> np.ndarray:
    """Milliseconds of ``reps`` calls of ``fn`` after ``warmup`` untimed ones, stopping at ``max_s``."""
    for _ in range(warmup):
        fn()
    times = []
    deadline = time.perf_counter() + max_s
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
        if start > deadline:
            break
    return np.asarray(times)


def rss_mb() -> float:
    """Current resident memory of this process in MiB (VmRSS; 0 when /proc is absent)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --- targets and result files ---------------------------------------------------------------------
@dataclass
class Target:
    """One checked target: ``measured <op> limit`` (op ``<=`` or ``>=``), with its unit."""

    name: str
    measured: float
    limit: float
    op: str = "<="
    unit: str = "ms"
    note: str = ""

    @property
    def met(self) -> bool:
        if not math.isfinite(self.measured):
            return False
        return self.measured <= self.limit if self.op == "<=" else self.measured >= self.limit

    @property
    def gap(self) -> str:
        """How far from the target, in words ("" when met)."""
        if self.met:
            return ""
        if not math.isfinite(self.measured):
            return "not measured"
        diff = self.measured - self.limit
        rel = f" ({self.measured / self.limit:.2f}x the limit)" if self.limit > 0 and self.measured > 0 else ""
        return f"{diff:+.3g} {self.unit}{rel}"

    def row(self) -> str:
        verdict = "met" if self.met else f"NOT met: {self.gap}"
        return f"| {self.name} | {self.op} {self.limit:g} {self.unit} | {self.measured:.3g} {self.unit} | {verdict} |"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met, "gap": self.gap}


def target_table(targets: Sequence[Target]) -> list[str]:
    """Markdown table of targets (target, measured, met / gap)."""
    return ["| target | limit | measured | verdict |", "|---|---|---|---|", *(t.row() for t in targets)]


def write_results(
    name: str,
    lines: list[str],
    targets: Sequence[Target],
    data: dict[str, Any],
    machine: dict[str, Any],
    out_dir: Path = RESULTS,
) -> Path:
    """Write ``<name>.md`` and ``<name>.json`` (targets, machine, raw data) and return the .md path."""
    md = write_markdown(out_dir / f"{name}.md", lines)
    payload = {"name": name, "machine": machine, "targets": [t.as_dict() for t in targets], "data": data}
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=2, default=_json_default))
    return md


def write_markdown(path: Path, lines: Sequence[str]) -> Path:
    """Write ``lines`` as the Markdown file ``path`` (creating its folder), say so, and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}", flush=True)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def parse_sizes(text: str) -> list[int]:
    """``"1k,10k,1M"`` -> ``[1000, 10000, 1000000]``."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        scale = {"k": 1_000, "m": 1_000_000}.get(part[-1], 1)
        out.append(int(float(part.rstrip("km")) * scale))
    if not out or min(out) < 1:
        raise ValueError(f"sizes must be positive counts like 1k,10k,1M; got {text!r}")
    return out


def size_label(n: int) -> str:
    return (
        f"{n // 1_000_000}M"
        if n >= 1_000_000 and n % 1_000_000 == 0
        else (f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n))
    )


# --- command line --------------------------------------------------------------------------------
def command_line(script: str, argv: list[str] | None) -> str:
    """How the benchmark was run, for the result file: ``python bench/<script name> <args>``."""
    return f"python bench/{Path(script).name} " + " ".join(sys.argv[1:] if argv is None else argv)


# --- model ---------------------------------------------------------------------------------------
def load_encoder(model: Path = DEFAULT_MODEL, channels_last: bool = False):
    """The app's model: ``model`` if it holds a checkpoint, else the app's untrained fallback.

    The fallback is ``Encoder.create(seed=0)``, exactly what app.py uses, so the benchmark, the
    app subprocess and the gallery cache (keyed by model hash) agree. Latency does not depend on
    the weights; accuracy does, so results say which model was used.
    """
    from retrieval.encoder import Encoder

    if (Path(model) / "model.safetensors").exists():
        return Encoder.load(model, channels_last=channels_last)
    return Encoder.create(seed=0, channels_last=channels_last)


def model_label(model: Path = DEFAULT_MODEL) -> str:
    return (
        str(model)
        if (Path(model) / "model.safetensors").exists()
        else "untrained Encoder.create(seed=0) (no assets/model yet)"
    )


# --- the app in a subprocess ---------------------------------------------------------------------
def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


@dataclass
class AppProcess:
    """A running ``app.py``: its process, base URL and console log file."""

    proc: subprocess.Popen
    url: str
    log_path: Path

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""


@contextlib.contextmanager
def running_app(
    args: Sequence[str] = (),
    log_path: Path | None = None,
    ready_timeout_s: float = 600.0,
    env: dict[str, str] | None = None,
) -> Iterator[AppProcess]:
    """Start ``app.py --host 127.0.0.1 --port <free> *args``; yield once ``/gradio_api/info`` answers.

    The gallery may be embedded on first start (cached afterwards), hence the long default
    ``ready_timeout_s``. The process is terminated (then killed) on exit.
    """
    import httpx

    port = free_port()
    log_path = Path(log_path or (BENCH_CACHE / f"app-{port}.log"))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {
        **os.environ,
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "NO_PROXY": LOCALHOST,
        **(env or {}),
    }
    cmd = [sys.executable, str(ROOT / "app.py"), "--host", LOCALHOST, "--port", str(port), *args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=full_env, start_new_session=True
        )
    app = AppProcess(proc, f"http://{LOCALHOST}:{port}", log_path)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with code {proc.returncode} before it was ready:\n{app.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{app.url}/gradio_api/info", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"app.py not ready after {ready_timeout_s:.0f} s:\n{app.log_tail()}")
            time.sleep(0.5)
        yield app
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(grace_s)


class ApiError(RuntimeError):
    """The endpoint answered with an error event (the message is the server's)."""


def parse_sse(text: str) -> tuple[str, Any]:
    """The last ``event:``/``data:`` pair of a Gradio SSE body: (event name, decoded data)."""
    event, data = "", None
    for line in text.splitlines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            raw = line[5:].strip()
            try:
                data = json.loads(raw)
            except json.JSONDecodeError:
                data = raw
    return event, data


def call_rank(
    client, url: str, sketch: str, k: int = 10, target_id: str | None = None, timeout_s: float = 60.0
) -> dict:
    """Call the app's ``rank`` endpoint with an ``httpx.Client``; returns its result dict.

    Raises:
        ApiError: the app answered with an error event (e.g. an invalid sketch).
    """
    start = client.post(f"{url}/gradio_api/call/rank", json={"data": [sketch, k, target_id]}, timeout=timeout_s)
    start.raise_for_status()
    event_id = start.json()["event_id"]
    result = client.get(f"{url}/gradio_api/call/rank/{event_id}", timeout=timeout_s)
    result.raise_for_status()
    return unpack_rank_event(*parse_sse(result.text))


async def call_rank_async(
    client, url: str, sketch: str, k: int = 10, target_id: str | None = None, timeout_s: float = 60.0
) -> dict:
    """:func:`call_rank` with an ``httpx.AsyncClient``."""
    start = await client.post(f"{url}/gradio_api/call/rank", json={"data": [sketch, k, target_id]}, timeout=timeout_s)
    start.raise_for_status()
    event_id = start.json()["event_id"]
    result = await client.get(f"{url}/gradio_api/call/rank/{event_id}", timeout=timeout_s)
    result.raise_for_status()
    return unpack_rank_event(*parse_sse(result.text))


def unpack_rank_event(event: str, data: Any) -> dict:
    if event == "complete" and isinstance(data, list) and data and isinstance(data[0], dict):
        return data[0]
    raise ApiError(f"rank endpoint answered event {event!r}: {data!r:.300}")


def save_plot(fig, name: str, out_dir: Path = RESULTS) -> Path:
    """Save a matplotlib figure as ``<name>.png`` next to the results and close it."""
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def use_agg() -> None:
    """Headless matplotlib backend (call before pyplot is imported)."""
    import matplotlib

    matplotlib.use("Agg")
