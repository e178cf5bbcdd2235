"""The app's configuration: one field per flag ``--x-y``, also read from ``EARLYSKETCH_X_Y``.

Parsed by :func:`retrieval.cli.parse_config` (flag > environment > default); :meth:`AppConfig.check`
is its validation hook.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from retrieval.serving.serving_config import ServingConfig
from retrieval.ui.rate_limits import ADDRESS_BURST, ADDRESS_PER_S, RATE_BURST, RATE_PER_S

ENV_PREFIX = "EARLYSKETCH_"

Mode = Literal["free", "study", "demo"]
Switch = Literal["auto", "on", "off"]


@dataclass
class AppConfig(ServingConfig):
    """Command-line / environment configuration of the app (model, gallery, cache and threads: ServingConfig)."""

    mode: Mode = "free"
    """free drawing, study (user study, every stroke logged) or demo (kiosk: big canvas, challenge, reset after idle)"""
    photos: str = ""
    """any folder of photos (indexed with the model's photo branch, cached)"""
    adapt_minutes: float = 0.0
    """adapt the model to --photos without sketches for this many minutes before indexing (python -m
    retrieval.adapt; done once, cached by start model, folder content and minutes); 0 = off"""
    study: str = ""
    """study config JSON (study mode)"""
    log_dir: Path = Path("study_logs")
    """one JSONL file per study session"""
    k: int = 12
    """photos shown after each stroke"""
    idle_reset_s: float = 90.0
    """demo mode: clear the canvas after this many idle seconds"""
    challenge: bool = True
    """demo/free: start with a random target to find"""
    host: str = "127.0.0.1"
    """bind address; 0.0.0.0 exposes the app on the network"""
    port: int = 7860
    """HTTP port"""
    share: bool = False
    """public gradio.live link (opt-in)"""
    auth: str = ""
    """user:pass required to open the app"""
    max_file_size: str = "10mb"
    """upload limit"""
    concurrency: int = 2
    """ranking jobs run at once (across sessions)"""
    batch: int = 8
    """most concurrent strokes encoded in one forward (1 = no cross-session batching)"""
    api: Switch = "auto"
    """the public `rank` endpoint: auto (on in free mode, off in study/demo), on or off"""
    api_diagnostics: bool = False
    """add `batch_size` (how many sessions shared the forward) to API answers"""
    max_queue: int = 256
    """events waiting in the server's queue, all sessions together; more are refused (one address: half at most)"""
    max_body_bytes: int = 4_000_000
    """HTTP request body cap (a 50k-point canvas journal is ~2 MB)"""
    rate_limit: Switch = "auto"
    """event rate limit per browser and per address: auto (on in study/demo, off in free), on or off"""
    rate_limit_burst: int = RATE_BURST
    """events a browser (its server-issued session) may send in a row (retrieval/ui/request_limits.py: why 40)"""
    rate_limit_per_s: float = RATE_PER_S
    """events a second a browser may keep sending after its burst"""
    rate_limit_address_burst: int = ADDRESS_BURST
    """events one address (a lab or a conference behind one NAT) may send in a row"""
    rate_limit_address_per_s: float = ADDRESS_PER_S
    """events a second one address may keep sending after its burst"""
    serve_url: str = ""
    """rank on a Ray Serve app (make serve-cluster), e.g. http://127.0.0.1:8000; "" = in process"""

    def gallery_spec(self) -> str:
        """``--photos`` when given, else :meth:`ServingConfig.gallery_spec`."""
        return self.photos or super().gallery_spec()

    def check(self) -> None:
        """Raise ``ValueError`` for settings that cannot work together (the parser's validation hook)."""
        if self.mode == "study" and not self.study:
            raise ValueError("--mode study needs --study CONFIG.json (e.g. assets/study_example.json)")
        if self.adapt_minutes and not (self.photos and self.adapt_minutes > 0):
            raise ValueError("--adapt-minutes needs --photos DIR (the folder to adapt to) and a positive number")
        if self.adapt_minutes and self.serve_url:
            raise ValueError(
                "--adapt-minutes adapts the model this process ranks with; with --serve-url the cluster ranks"
            )
        if self.auth and ":" not in self.auth:
            raise ValueError("--auth must be user:pass")
        for flag, per_s, burst in (
            ("--rate-limit", self.rate_limit_per_s, self.rate_limit_burst),
            ("--rate-limit-address", self.rate_limit_address_per_s, self.rate_limit_address_burst),
        ):
            if not per_s > 0 or burst < 1:
                raise ValueError(
                    f"{flag}-per-s must be > 0 and {flag}-burst >= 1 (turn the limit off with --rate-limit off)"
                )
