"""Shared helpers for the benchmarks: machine header, percentiles, result files, the model, the app.

Every result file carries the machine (CPU model, cores, RAM, load average at the start and at the
end), the date, the git commit, library versions and a plot (bench/lib/plots.py). Each benchmark writes
``bench/results/<name>.md`` (human) and ``<name>.json`` (read by ``bench/run_all.py``: the targets
with measured value and met / not met) through :func:`write_results`, the one results writer, and
``<name>.png``.

Starting the app and calling its endpoint live in ``harness/api_client.py``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.provenance import PROJECT_ROOT as ROOT
from retrieval.provenance import git_output

RESULTS = ROOT / "bench" / "results"
DEFAULT_MODEL = ROOT / "assets" / "model"
BENCH_CACHE = ROOT / ".cache" / "bench"  # galleries built for benchmarks (git-ignored, rebuilt on demand)
VERSIONED = ("numpy", "torch", "torchvision", "faiss-cpu", "opencv-python-headless", "gradio", "playwright")


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


RECORDS = (":!bench/results", ":!bench/RESULTS.md", ":!docs/results")  # result files: records, not code


def code_version() -> str:
    """The checkout's short commit, ``+changes`` when the tree has uncommitted edits ("unknown" without git).
    Result files do not count: a bench run rewrites them, and the next bench in the same run would say
    ``+changes`` of code that did not change."""
    commit = git_output("rev-parse", "--short=12", "HEAD")
    if commit is None:
        return "unknown"
    edits = git_output("status", "--porcelain", "--untracked-files=no", "--", ".", *RECORDS)
    return commit + ("+changes" if edits else "")


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, OS, load average, UTC date, commit and library versions, as a dict."""
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": code_version(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": round(ram_gb(), 1),
        "os": platform.platform(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "versions": versions(),
    }


def header_lines(title: str, command: str, machine: dict[str, Any] | None = None) -> list[str]:
    """The Markdown head every result file starts with: title, date, commit, machine, versions, command."""
    m = machine or machine_info()
    libs = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return [
        f"# {title}",
        "",
        f"- date: {m['date_utc']}",
        f"- commit: {m.get('commit', 'unknown')}",
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


def cpu_seconds() -> float:
    """User + system CPU seconds this process has used (for a load generator's own share)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb() -> float:
    """Current resident memory of this process in MiB (VmRSS; 0 when /proc is absent)."""
    return status_mb("VmRSS")


def status_mb(key: str, pid: int | str = "self", missing: float = 0.0) -> float:
    """The memory line ``key`` (VmRSS, VmHWM: peak resident...) of ``/proc/<pid>/status`` in MiB,
    ``missing`` when it cannot be read."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    return missing


@contextlib.contextmanager
def measure_memory():
    """Yields a dict filled on exit with ``rss_delta_mb`` and ``peak_delta_mb`` (VmHWM after a reset)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS watermark (Linux >= 4.0)
    before = rss_mb()
    out: dict[str, float] = {}
    yield out
    out["rss_delta_mb"] = rss_mb() - before
    out["peak_delta_mb"] = max(status_mb("VmHWM") - before, out["rss_delta_mb"])


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

    def cells(self) -> tuple[str, str, str, str]:
        """A target table's row: name, limit, measured, verdict (and the note, when there is one)."""
        verdict = ("met" if self.met else f"NOT met: {self.gap}") + (f"; {self.note}" if self.note else "")
        return self.name, f"{self.op} {self.limit:g} {self.unit}", f"{self.measured:.3g} {self.unit}", verdict

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met, "gap": self.gap}


def target_table(targets: Sequence[Target]) -> list[str]:
    """Markdown table of targets (target, limit, measured, met / gap)."""
    return markdown_table(("target", "limit", "measured", "verdict"), [t.cells() for t in targets], "llll")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> list[str]:
    """A Markdown table: ``align`` has one letter per column, ``l`` or ``r`` (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or any(len(row) != len(header) for row in rows):
        raise ValueError("markdown_table: every row and the alignment need one entry per header cell")
    rule = "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"
    return ["| " + " | ".join(map(str, header)) + " |", rule, *("| " + " | ".join(map(str, r)) + " |" for r in rows)]


def write_results(
    name: str,
    lines: list[str],
    targets: Sequence[Target],
    data: dict[str, Any],
    machine: dict[str, Any],
    out_dir: Path = RESULTS,
) -> Path:
    """Write ``<name>.md`` and ``<name>.json`` (the command that wrote it, targets, machine, raw data) and
    return the .md path. The JSON is what ``bench/run_all.py`` reads back: nothing is parsed out of the Markdown.

    ``lines`` start with :func:`header_lines` (a ValueError otherwise: every result file names its machine,
    date and commit); the load average now, at the end of the run, is added to both files."""
    end = header_end(lines)
    machine = {**machine, "load_avg_1m_end": round(os.getloadavg()[0], 2)}
    lines = [*lines[:end], f"- load average at the end: {machine['load_avg_1m_end']}", *lines[end:]]
    md = write_markdown(out_dir / f"{name}.md", lines)
    command = command_line(sys.argv[0], None)
    payload = {"name": name, "command": command, "machine": machine, "targets": [t.as_dict() for t in targets]}
    payload["data"] = data
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=2, default=_json_default))
    return md


def header_end(lines: Sequence[str]) -> int:
    """The index just past :func:`header_lines`' block at the top of ``lines`` (ValueError when it is not there)."""
    keys = ("# ", "", "- date: ", "- commit: ", "- machine: ", "- libraries: ", "- command: ")
    if len(lines) < len(keys) or not all(line.startswith(k) for line, k in zip(lines, keys)):
        raise ValueError("a result file starts with header_lines(title, command, machine): machine, date, commit")
    return len(keys)


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
    """How the benchmark was run, for the result file: ``python -m bench.<purpose>.<module> <args>``
    (``script`` is the module's file, ``argv`` its arguments: None for ``sys.argv[1:]``)."""
    path = Path(script).resolve()
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts) if path.is_relative_to(ROOT / "bench") else ""
    runs = f"-m {module}" if module else str(script)  # a bench, or whatever else called (a test)
    return f"python {runs} " + " ".join(sys.argv[1:] if argv is None else argv)


# --- model ---------------------------------------------------------------------------------------
def load_encoder(model: Path = DEFAULT_MODEL, channels_last: bool = False):
    """The app's model: ``model`` if it holds a checkpoint, else the app's untrained fallback.

    The fallback is ``create_encoder(seed=0)``, exactly what app.py uses, so the benchmark, the
    app subprocess and the gallery cache (keyed by model hash) agree. Latency does not depend on
    the weights; accuracy does, so results say which model was used.
    """
    from retrieval.model.encoder import Encoder, create_encoder

    if (Path(model) / "model.safetensors").exists():
        return Encoder.load(model, channels_last=channels_last)
    return create_encoder(seed=0, channels_last=channels_last)


def model_label(model: Path = DEFAULT_MODEL) -> str:
    return (
        str(model)
        if (Path(model) / "model.safetensors").exists()
        else "untrained create_encoder(seed=0) (no assets/model yet)"
    )
