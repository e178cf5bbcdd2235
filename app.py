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
from dataclasses import replace

from retrieval.cli import parse_config
from retrieval.ui.config import ENV_PREFIX, AppConfig


def parse_args(argv: list[str] | None = None) -> AppConfig:
    """Flags override ``EARLYSKETCH_*`` environment variables, which override the defaults."""
    return parse_config(AppConfig, argv, __doc__, env_prefix=ENV_PREFIX, validate=AppConfig.check)


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    if config.adapt_minutes:  # the model the gallery is indexed and ranked with: adapted to it, once
        from retrieval.adapt.cache import cached_adaptation

        config = replace(
            config, model=cached_adaptation(config.model, config.photos, config.adapt_minutes, config.cache_dir)
        )
    # Set before gradio is first imported (by the server module): no analytics or version check, no hub calls.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from retrieval.ui.server import launch

    launch(config)


if __name__ == "__main__":
    main()
