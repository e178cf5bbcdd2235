"""EarlySketch RL stage: train the sketch head so the true photo ranks high at every drawing step.

Importing ``rl`` registers ``EarlySketch/SketchRetrieval-v0`` (string entry point, so nothing heavy
is imported until an env is made) and has no other side effect.
"""

from __future__ import annotations

import gymnasium

ENV_ID = "EarlySketch/SketchRetrieval-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="rl.env:SketchRetrievalEnv")
