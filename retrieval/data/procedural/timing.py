"""Human drawing tempo for synthetic sketches, calibrated on Quick, Draw! raw timing.

Constants measured on ../shared/data/quickdraw-raw (9,570 drawings, 345 categories) with
``python -m bench.speed.bench_procedural --calibrate ../shared/data/quickdraw-raw`` (stroke lengths in
pixels after scaling each drawing's bounding box to 256): pen-up gap p10/p50/p90 = 155/439/1116 ms;
stroke duration p10/p50/p90 = 134/584/2562 ms; a log-log fit gives duration = 23.3 * length^0.687 ms
with a residual log-sd of 0.67; pointer samples arrive every 17 ms (p50; p10 7, p90 51).
The generator never reads that data: these numbers are all it needs.
"""

from __future__ import annotations

import numpy as np

GAP_MEDIAN_MS = 439.0
GAP_LOG_SD = 0.80  # lognormal: p10 = 439 / e^(1.28*0.80) = 157 ms, p90 = 1,227 ms (measured 155 / 1,116)
DURATION_COEF_MS = 23.3  # duration = coef * length_px ** exponent
DURATION_EXPONENT = 0.687
DURATION_LOG_SD = 0.67  # split below between the drawer (habit) and the stroke (chance)
DRAWER_LOG_SD = 0.35
STROKE_LOG_SD = float(np.sqrt(DURATION_LOG_SD**2 - DRAWER_LOG_SD**2))
SAMPLE_MS = 17.0  # pointer event interval (60 Hz)
MIN_GAP_MS = 40.0


def pen_up_gap(rng: np.random.Generator, gap_scale: float = 1.0) -> float:
    """Milliseconds between a pen-up and the next pen-down."""
    return max(MIN_GAP_MS, GAP_MEDIAN_MS * gap_scale * float(np.exp(rng.normal(0.0, GAP_LOG_SD))))


def stroke_duration(length_px: float, rng: np.random.Generator, speed: float = 1.0) -> float:
    """Milliseconds a person takes to draw a stroke ``length_px`` long on a 256-pixel drawing."""
    base = DURATION_COEF_MS * max(length_px, 1.0) ** DURATION_EXPONENT
    return max(SAMPLE_MS, base * speed * float(np.exp(rng.normal(0.0, STROKE_LOG_SD))))


def min_jerk(tau: np.ndarray) -> np.ndarray:
    """Fraction of the path covered at normalised time ``tau``: slow start, fast middle, slow end."""
    return tau**3 * (10.0 - 15.0 * tau + 6.0 * tau * tau)


def sample_times(duration_ms: float, rng: np.random.Generator, sample_ms: float = SAMPLE_MS) -> np.ndarray:
    """Pointer event times from 0 to ``duration_ms`` (inclusive) with a jittered event interval."""
    n = max(1, int(duration_ms / sample_ms))
    steps = sample_ms * rng.uniform(0.7, 1.3, size=n)
    times = np.concatenate([[0.0], np.cumsum(steps)])
    times = times[times < duration_ms]
    return np.append(times, duration_ms)
