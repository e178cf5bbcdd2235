"""Type aliases shared across the library.

A *stroke* is a float64 array of shape ``(n_points, 3)`` holding ``x, y, t_ms`` in drawing order,
``x``/``y`` in canvas pixels and ``t_ms`` in milliseconds since the first point of the sketch.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Stroke = npt.NDArray[np.float64]  # (n_points, 3): x, y, t_ms
GrayImage = npt.NDArray[np.uint8]  # (H, W), white background (255), black ink (0)
RGBImage = npt.NDArray[np.uint8]  # (H, W, 3)
Embeddings = npt.NDArray[np.float32]  # (N, D), rows L2-normalised
