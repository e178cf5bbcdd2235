"""Write the deployed sketch encoder: the frozen backbone plus the RL-trained sketch head.

The output is an ordinary encoder checkpoint, so the app and ``retrieval.evaluation.evaluate`` load it exactly
like the supervised one: a head without MLP (``hidden=0``) is written as the plain linear
``sketch_head`` (``Encoder.with_sketch_head``); a progress-aware head goes in beside the network
(``Encoder.with_progress_head``: ``meta["sketch_head"]`` + ``progress_head.*`` tensors), and the
encoder feeds it the ink share of each raster it embeds.
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass, replace
from pathlib import Path
from typing import Any

from retrieval.model.card import Provenance
from retrieval.provenance import git_commit


def _headline(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "curve"}


def export_encoder(
    encoder: Any,
    head: Any,
    out: str | Path,
    config: Any = None,
    result: Any = None,
    kind: str = "rl",
    card_extra: dict | None = None,
) -> Path:
    """Save ``encoder`` with its sketch head replaced by ``head`` (a ``ProgressHead``); returns the folder.

    Args:
        encoder: the supervised ``retrieval.model.encoder.Encoder`` whose backbone RL kept frozen.
        head: the trained head (any scale: embeddings are L2-normalised).
        out: checkpoint folder to write.
        config: the RL config (a dataclass or dict), recorded in the card.
        result: an ``rl.train.RLResult``; its validation metrics go into the card.
        kind: how the head was trained, the card's ``sketch_head``: ``"rl"`` or ``"control"``
            (``rl.control``'s supervised training of the same head).
        card_extra: further top-level card entries (``pipeline.reproduce``'s ship decision).
    """
    if head.hidden:
        deployed = encoder.with_progress_head(head)
    else:
        deployed = encoder.with_sketch_head({k: v.detach() for k, v in head.linear.state_dict().items()})
    supervised = encoder.card
    rl_card: dict[str, Any] = {
        "config": asdict(config) if is_dataclass(config) else config,
        "code_commit": git_commit(),
    }
    # The supervised card's split and data (the head was selected on that carve), with the supervised
    # card kept whole beside the head's own record.
    counts = {k: supervised.details[k] for k in ("n_train_photos", "n_val_photos") if k in supervised.details}
    provenance = Provenance(
        data=supervised.provenance.data, dataset=supervised.provenance.dataset, seed=supervised.provenance.seed
    )
    card = replace(supervised, provenance=provenance, details=counts)
    if result is not None:
        rl_card.update(
            val_supervised=_headline(result.baseline_metrics),
            val_rl=_headline(result.best_metrics),
            timesteps=result.timesteps,
            best_timesteps=result.best_timesteps,
        )
        card = card.with_entries(val=_headline(result.best_metrics))
    card = card.with_entries(sketch_head=kind, rl=rl_card, supervised_card=supervised.to_json(), **(card_extra or {}))
    return deployed.save(out, card)
