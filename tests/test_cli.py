"""retrieval.cli: one --flag per dataclass field, docstrings as help."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from retrieval.cli import POSITIONAL, field_docs, parse_config


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
class Served:
    """A config read from the environment too."""

    mode: Literal["free", "study", "demo"] = "free"
    """what the app does"""
    port: int = 7860
    """HTTP port"""
    share: bool = False
    """public link"""
    stages: tuple[str, ...] = ("a",)
    """stages to run"""


def test_a_flag_beats_the_environment_which_beats_the_default(monkeypatch):
    assert parse_config(Served, [], env_prefix="ES_") == Served()
    monkeypatch.setenv("ES_PORT", "8001")
    monkeypatch.setenv("ES_STAGES", "b, c")
    assert parse_config(Served, [], env_prefix="ES_") == Served(port=8001, stages=("b", "c"))
    assert parse_config(Served, ["--port", "9000"], env_prefix="ES_").port == 9000
    assert parse_config(Served, []).port == 7860, "without a prefix the environment is not read"


@pytest.mark.parametrize(
    ("text", "expected"), [("1", True), ("true", True), ("YES", True), ("0", False), ("no", False)]
)
def test_booleans_read_from_the_environment(monkeypatch, text, expected):
    monkeypatch.setenv("ES_SHARE", text)
    assert parse_config(Served, [], env_prefix="ES_").share is expected
    assert parse_config(Served, ["--no-share" if expected else "--share"], env_prefix="ES_").share is not expected


def test_a_bad_environment_value_is_a_usage_error_naming_the_variable(monkeypatch, capsys):
    for variable, text in (("ES_SHARE", "maybe"), ("ES_PORT", "eighty"), ("ES_MODE", "kiosk")):
        with monkeypatch.context() as env:
            env.setenv(variable, text)
            with pytest.raises(SystemExit) as exit_info:
                parse_config(Served, [], env_prefix="ES_")
        assert exit_info.value.code == 2 and variable in capsys.readouterr().err


def test_a_literal_annotation_gives_the_choices(capsys):
    assert parse_config(Served, ["--mode", "demo"]).mode == "demo"
    with pytest.raises(SystemExit):
        parse_config(Served, ["--mode", "kiosk"])
    assert "argument --mode: invalid choice: 'kiosk'" in capsys.readouterr().err


def test_the_validation_hook_turns_value_errors_into_usage_errors(capsys):
    def no_low_ports(cfg: Served) -> None:
        if cfg.port < 1024:
            raise ValueError("--port must be 1024 or more")

    assert parse_config(Served, ["--port", "2000"], validate=no_low_ports).port == 2000
    with pytest.raises(SystemExit) as exit_info:
        parse_config(Served, ["--port", "80"], validate=no_low_ports)
    assert exit_info.value.code == 2 and "--port must be 1024 or more" in capsys.readouterr().err


def test_help_shows_each_field_doc_and_its_variable(capsys):
    with pytest.raises(SystemExit):
        parse_config(Served, ["--help"], env_prefix="ES_")
    out = " ".join(capsys.readouterr().out.split())
    assert "--mode {free,study,demo} what the app does (env ES_MODE) (default: free)" in out
    assert "public link (env ES_SHARE)" in out


# --- the app's command line (app.py) ---------------------------------------------------------------
def test_the_app_reads_flags_then_earlysketch_variables(monkeypatch):
    from app import parse_args

    monkeypatch.setenv("EARLYSKETCH_MODE", "demo")
    monkeypatch.setenv("EARLYSKETCH_CHALLENGE", "false")
    monkeypatch.setenv("EARLYSKETCH_RATE_LIMIT_PER_S", "0.5")
    config = parse_args(["--k", "6"])
    assert (config.mode, config.challenge, config.rate_limit_per_s, config.k) == ("demo", False, 0.5, 6)
    assert parse_args(["--mode", "free"]).mode == "free"
    assert parse_args(["--log-dir", "x"]).log_dir == Path("x")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--mode", "study"], "--mode study needs --study CONFIG.json"),
        (["--auth", "nopassword"], "--auth must be user:pass"),
        (["--rate-limit-per-s", "0"], "--rate-limit-per-s must be > 0"),
        (["--api", "maybe"], "invalid choice: 'maybe'"),
    ],
)
def test_the_app_refuses_settings_that_cannot_work(capsys, argv, message):
    from app import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


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


@dataclass
class Positional:
    """Arguments by position."""

    source: Path | None = field(default=None, metadata=POSITIONAL)
    """required: no default"""
    extra: tuple[str, ...] = field(default=(), metadata=POSITIONAL)
    """one or more"""
    limit: int | None = None
    """an optional flag typed from its annotation"""


def test_positional_fields_are_required_without_a_default_and_typed_from_the_annotation(capsys):
    config = parse_config(Positional, ["photos", "a", "b", "--limit", "3"])
    assert config == Positional(Path("photos"), ("a", "b"), 3)
    with pytest.raises(SystemExit):
        parse_config(Positional, ["photos"])  # ``extra`` needs at least one value
    assert "required: extra" in capsys.readouterr().err
