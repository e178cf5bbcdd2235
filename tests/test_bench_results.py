"""The benchmarks' one results writer and their registry (bench/lib/common.py, bench/registry.py)."""

from __future__ import annotations

import json

import pytest

from bench.lib.common import Target, header_lines, machine_info, write_results
from bench.registry import BENCHES, PURPOSES
from retrieval.provenance import PROJECT_ROOT as ROOT


def test_a_result_names_its_machine_date_commit_and_load_at_both_ends(tmp_path):
    machine = machine_info()
    lines = [*header_lines("A bench", "python -m bench.speed.bench_x", machine), "", "body"]
    target = Target("p50", 1.0, 2.0)
    md = write_results("x", lines, [target], {"rows": [{"p50": 1.0}]}, machine, tmp_path)
    text = md.read_text()
    for key in ("- date: ", "- commit: ", "- machine: ", "- command: ", "- load average at the end: "):
        assert key in text
    assert text.index("- load average at the end: ") < text.index("body")
    saved = json.loads((tmp_path / "x.json").read_text())
    assert {"date_utc", "commit", "cpu", "load_avg_1m", "load_avg_1m_end"} <= set(saved["machine"])
    assert saved["targets"][0]["met"] is True and saved["data"] == {"rows": [{"p50": 1.0}]}


def test_a_result_without_the_header_is_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(ValueError, match="header_lines"):
        write_results("x", ["# A bench", "", "body"], [], {}, machine_info(), tmp_path)
    assert not list(tmp_path.iterdir())


def test_every_bench_script_is_registered_in_its_purpose_folder():
    registered = {(ROOT / "bench" / b.purpose / b.script) for b in BENCHES}
    assert all(path.exists() for path in registered), sorted(str(p) for p in registered if not p.exists())
    scripts = {p for purpose in PURPOSES for p in (ROOT / "bench" / purpose).glob("bench_*.py")}
    assert scripts <= registered, f"benches run_all does not know: {sorted(str(p) for p in scripts - registered)}"
