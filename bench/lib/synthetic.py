"""Synthetic embedding galleries for the index and latency benchmarks, and exact top-k.

- :func:`clustered`: unit vectors from a Gaussian mixture (real embeddings are clustered, which is
  harder for approximate indexes than uniform noise).
- :func:`synthesise`: extra photos for galleries larger than what is rendered (1M): perturbed
  copies of real embeddings whose cosine to their source matches a real photo's to its nearest
  neighbour, so the synthetic photos sit in the real clusters as near-duplicates.
- :func:`exact_top_k`: the ground truth for recall@10, chunked so 1M photos never make a
  (queries x photos) matrix.
"""

from __future__ import annotations

import numpy as np

COLLAPSED_COSINE = 0.999  # median nearest-neighbour cosine above which real embeddings carry no structure


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float32."""
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int, rng: np.random.Generator, clusters: int = 256, spread: float = 1.0) -> np.ndarray:
    """``n`` unit vectors from a Gaussian mixture on the sphere: ``clusters`` centres, points
    jittered by ``spread`` (noise norm relative to the unit centre), renormalised."""
    centres = unit(rng.standard_normal((clusters, dim)))
    labels = rng.integers(0, clusters, n)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):  # chunks keep the float64 temporaries small at 1M
        stop = min(n, start + 100_000)
        noise = rng.standard_normal((stop - start, dim)) * spread / np.sqrt(dim)
        out[start:stop] = unit(centres[labels[start:stop]] + noise)
    return out


def nn_cosine(vectors: np.ndarray, sample: int, rng: np.random.Generator) -> float:
    """Median cosine between a real photo embedding and its nearest other real photo."""
    rows = rng.choice(len(vectors), min(sample, len(vectors)), replace=False)
    sims = vectors[rows] @ vectors.T
    sims[np.arange(len(rows)), rows] = -np.inf
    return float(np.median(sims.max(axis=1)))


def synthesise(base: np.ndarray, n_extra: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """``n_extra`` synthetic embeddings and a description of how they were made.

    Normally perturbed copies of random ``base`` rows (see module docstring). When the real
    embeddings have collapsed (an untrained model maps every photo to nearly the same vector, so
    neighbours and recall would be meaningless), unit vectors from a Gaussian mixture on the sphere
    instead (:func:`clustered`: 256 clusters), like bench/speed/bench_index.py.
    """
    cos = nn_cosine(base, 2000, rng)
    dim = base.shape[1]
    if cos > COLLAPSED_COSINE:
        return clustered(n_extra, dim, rng), f"clustered (real embeddings collapsed, NN cos {cos:.4f})"
    sigma = float(np.sqrt(1.0 / max(cos, 0.05) ** 2 - 1.0))  # |v + noise| = sqrt(1 + sigma^2) -> cos(copy, v) = cos
    out = np.empty((n_extra, dim), np.float32)
    for start in range(0, n_extra, 100_000):  # chunks keep float temporaries small at 1M
        stop = min(n_extra, start + 100_000)
        x = base[rng.integers(0, len(base), stop - start)] + rng.standard_normal((stop - start, dim)).astype(
            np.float32
        ) * (sigma / np.sqrt(dim))
        out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, f"perturbed real (NN cos {cos:.3f}, sigma {sigma:.3f})"


def exact_top_k(
    queries: np.ndarray, vectors: np.ndarray, k: int, chunk: int = 200_000
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` rows and scores per query by chunked matmul (never a (Q, N) matrix at 1M)."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(vectors), chunk):
        s = queries @ vectors[start : start + chunk].T
        top = np.argpartition(-s, min(k, s.shape[1] - 1), axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], axis=1)
        best_i = np.concatenate([best_i, top + start], axis=1)
        keep = np.argsort(-best_s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return best_i, best_s


class FittedMixture:
    """A Gaussian mixture fitted to real embeddings, to sample *new* realistic photos (not copies).

    k-means on the real rows gives ``components`` clusters; each gets its mean and a full covariance
    shrunk towards its diagonal (``shrink``; a 128-d covariance from ~100 rows needs it). Samples
    are drawn per component in proportion to its size and L2-normalised like the encoder's output.
    Unlike :func:`synthesise`, a sample is no closer to any real photo than real photos are to
    each other, so IVF bounds and recall are measured on a gallery as spread as the real one.
    """

    def __init__(self, real: np.ndarray, components: int = 64, shrink: float = 0.1, seed: int = 0) -> None:
        import faiss

        real = np.ascontiguousarray(real, np.float32)
        kmeans = faiss.Kmeans(real.shape[1], components, niter=25, seed=seed, spherical=True)
        kmeans.train(real)
        labels = kmeans.index.search(real, 1)[1].ravel()
        self.weights = np.bincount(labels, minlength=components) / len(real)
        self.means = np.zeros((components, real.shape[1]))
        self.factors = np.zeros((components, real.shape[1], real.shape[1]))
        for c in range(components):
            rows = real[labels == c].astype(np.float64)
            if len(rows) < 2:
                rows = real.astype(np.float64)  # an empty or singleton cluster borrows the global spread
            self.means[c] = rows.mean(axis=0)
            cov = np.cov(rows, rowvar=False)
            cov = (1 - shrink) * cov + shrink * np.diag(np.diag(cov)) + 1e-8 * np.eye(len(cov))
            self.factors[c] = np.linalg.cholesky(cov)
        self.description = (
            f"Gaussian mixture fitted to {len(real):,} real photo embeddings ({components} k-means components, "
            f"full covariance shrunk {shrink:.0%} to its diagonal), samples L2-normalised"
        )

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, D)`` float32 unit rows."""
        comp = rng.choice(len(self.weights), n, p=self.weights)
        out = np.empty((n, self.means.shape[1]), np.float32)
        for c in np.unique(comp):
            rows = np.flatnonzero(comp == c)
            x = self.means[c] + rng.standard_normal((len(rows), self.means.shape[1])) @ self.factors[c].T
            out[rows] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out


def recall_at_k(
    queries: np.ndarray, vectors: np.ndarray, found_rows, truth_rows: np.ndarray, eps: float = 1e-6
) -> float:
    """Mean recall@k of an approximate search against exact search (``truth_rows``: the exact top-k
    rows per query), tie-aware: a returned row is a hit when its exact score reaches the k-th best
    exact score (minus ``eps``), so a photo tied with the k-th is not a miss; rows < 0 (faiss found
    fewer) are misses. The one recall every index bench reports."""
    hits = []
    for q, found, truth in zip(queries, found_rows, truth_rows):
        found = np.asarray(found, dtype=np.int64)
        found = found[found >= 0]
        kth = float(np.min(vectors[np.asarray(truth)] @ q))
        hits.append(float(np.sum(vectors[found] @ q >= kth - eps)) / len(truth) if len(found) else 0.0)
    return float(np.mean(hits))
