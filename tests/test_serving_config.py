"""The fields the app and the Serve app share come from one place (ServingConfig) and mean the same in both."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from retrieval.cli import field_docs
from retrieval.serving.ray_setup import ServeConfig
from retrieval.serving.serving_config import ServingConfig, default_cache_dir
from retrieval.ui.config import AppConfig

SHARED = [f.name for f in fields(ServingConfig)]


def test_both_configs_inherit_the_shared_fields_with_one_default_and_one_help_text():
    base = {f.name: f.default for f in fields(ServingConfig)}
    for config in (AppConfig, ServeConfig):
        assert {f.name: f.default for f in fields(config) if f.name in base} == base
        assert {n: field_docs(config)[n] for n in SHARED} == {n: field_docs(ServingConfig)[n] for n in SHARED}


def test_the_default_gallery_is_procedural_of_gallery_size_in_both():
    assert ServeConfig(gallery_size=250).gallery_spec() == "procedural:photos=250"
    assert AppConfig(gallery_size=250).gallery_spec() == "procedural:photos=250"
    assert ServeConfig(gallery="data@val", gallery_size=250).gallery_spec() == "data@val"


def test_the_apps_photo_folder_comes_before_its_gallery():
    assert AppConfig(gallery="data@val", photos="~/photos").gallery_spec() == "~/photos"


def test_cache_path_expands_the_home_and_defaults_to_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EARLYSKETCH_CACHE", str(tmp_path / "cache"))
    assert ServeConfig().cache_path() == default_cache_dir() == tmp_path / "cache"
    assert AppConfig(cache_dir="~/c").cache_path() == Path.home() / "c"
