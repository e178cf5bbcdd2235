"""EarlySketch web app: draw, and after every stroke the gallery is re-ranked.

Modes (``--mode`` or ``EARLYSKETCH_MODE``): ``free`` (default: free drawing on the default
gallery), ``study`` (user study from a JSON config, every stroke logged to disk) and ``demo``
(kiosk: big canvas, target challenge, reset after idle). Every flag also reads an environment
variable ``EARLYSKETCH_<FLAG>``; a flag beats the variable. The named API endpoint ``rank`` takes
a sketch in the stroke JSON format; see docs/app.md. The UI lives in ``retrieval/ui/`` (config,
page, event handlers, views, request guards, server).
"""

from __future__ import annotations

import os

# Before gradio is imported (by retrieval.ui.server): no analytics or version check, no hub calls.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from retrieval.cli import parse_config  # noqa: E402
from retrieval.ui.config import ENV_PREFIX, AppConfig  # noqa: E402
from retrieval.ui.server import launch  # noqa: E402


def parse_args(argv: list[str] | None = None) -> AppConfig:
    """Flags override ``EARLYSKETCH_*`` environment variables, which override the defaults."""
    return parse_config(AppConfig, argv, __doc__, env_prefix=ENV_PREFIX, validate=AppConfig.check)


if __name__ == "__main__":
    launch(parse_args())
