"""retrieval.cli: one --flag per dataclass field, docstrings as help."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from retrieval.cli import field_docs, parse_config


@dataclass
class Demo:
    """A demo config."""

    out: Path = Path("runs")
    """where runs go"""
    share: float = 0.1
    """share of photos (10% by default) held out"""
    stages: tuple[str, ...] = ("a", "b")
    """stages to run"""
    progress: bool = True
    """show bars"""


def test_fields_become_typed_flags():
    cfg = parse_config(Demo, ["--out", "x", "--share", "0.25", "--stages", "b", "--no-progress"])
    assert cfg == Demo(out=Path("x"), share=0.25, stages=("b",), progress=False)
    assert field_docs(Demo)["out"] == "where runs go"


def test_help_with_percent_signs_prints(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(Demo, ["--help"])
    assert exit_info.value.code == 0
    assert "10% by default" in capsys.readouterr().out


@dataclass
class DemoChild(Demo):
    """A config that shares Demo's fields (as rl.control shares rl.inputs.HeadInputs)."""

    share: float = 0.2
    """the child's own share"""
    seed: int = 0
    """seed of the child"""


def test_inherited_fields_keep_their_docs_and_a_subclass_doc_wins():
    docs = field_docs(DemoChild)
    assert docs == {
        "out": "where runs go",
        "share": "the child's own share",
        "stages": "stages to run",
        "progress": "show bars",
        "seed": "seed of the child",
    }
    assert parse_config(DemoChild, ["--seed", "3"]) == DemoChild(seed=3)
