"""Certified bounds on the scores of an IVF list's members, from a few numbers per list.

A list is summarised by its centroid, its size and the smallest / largest distance of its
members to the centroid; the gallery by its smallest / largest norm. :meth:`ListStats.bounds`
turns these into bounds on ``q.v`` that hold for every member, which the certified rank
(retrieval/serving/exact_rank.py) uses to count whole lists unread or skip them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

# Widening of every angle in ListStats.bounds: arccos near +-1 amplifies float64 rounding.
ANGLE_GUARD = 1e-6


@dataclass(frozen=True)
class _Cones:
    """Per list, the angles its members can make with its centroid's direction (ListStats.bounds)."""

    distinct: np.ndarray  # (K, D) distinct centroids
    of_list: np.ndarray  # (L,) row of each list's centroid in ``distinct``
    distinct_norm: np.ndarray  # (K,)
    phi_min: np.ndarray  # (L,) radians
    phi_max: np.ndarray  # (L,)
    informative: np.ndarray  # (L,) bool: False where a centroid (or the norms) is ~0: ball only


@dataclass(frozen=True)
class ListStats:
    """Per IVF list: centroid, size, and the smallest / largest distance of its members to the
    centroid; over the gallery, the smallest / largest norm (all float64, widened by their own
    rounding so that every member lies inside them).

    :meth:`bounds` turns them into certified bounds on ``q.v`` over each list's members.
    """

    centroids: np.ndarray  # (L, D)
    sizes: np.ndarray  # (L,) int64
    radius: np.ndarray  # (L,) max |v - c| over the list's members
    inner_radius: np.ndarray  # (L,) min |v - c| over the list's members (a shell's inner edge)
    max_norm: float  # max |v| over the gallery
    min_norm: float  # min |v| over the gallery

    @classmethod
    def compute(cls, vectors: np.ndarray, labels: np.ndarray, centroids: np.ndarray, chunk: int = 200_000) -> ListStats:
        """Stats of ``vectors`` (any array-like, e.g. a memory map) assigned to lists by ``labels``."""
        centroids = np.asarray(centroids, np.float64)
        labels = np.asarray(labels, np.int64)
        distances, norms = np.empty(len(labels)), np.empty(len(labels))
        for start in range(0, len(labels), chunk):
            block = np.asarray(vectors[start : start + chunk], np.float64)
            distances[start : start + len(block)] = np.linalg.norm(
                block - centroids[labels[start : start + chunk]], axis=1
            )
            norms[start : start + len(block)] = np.linalg.norm(block, axis=1)
        return cls.of_members(centroids, labels, distances, norms)

    @classmethod
    def of_members(
        cls, centroids: np.ndarray, labels: np.ndarray, distances: np.ndarray, norms: np.ndarray
    ) -> ListStats:
        """Stats from each member's list, float64 distance to that list's centroid and norm (computed
        by the caller, e.g. in the pass that encodes the members)."""
        centroids = np.asarray(centroids, np.float64)
        labels = np.asarray(labels, np.int64)
        radius = np.zeros(len(centroids))
        inner = np.full(len(centroids), np.inf)
        np.maximum.at(radius, labels, distances)
        np.minimum.at(inner, labels, distances)
        max_norm = float(np.max(norms, initial=0.0))
        min_norm = float(np.min(norms, initial=np.inf))
        # The float64 distances and norms themselves round: a relative widening keeps every member inside.
        return cls(
            centroids,
            np.bincount(labels, minlength=len(centroids)),
            radius * (1 + 1e-9) + 1e-12,
            np.maximum(np.where(np.isfinite(inner), inner, 0.0) * (1 - 1e-9) - 1e-12, 0.0),
            max_norm * (1 + 1e-9) + 1e-12,
            max(min_norm * (1 - 1e-9) - 1e-12, 0.0) if np.isfinite(min_norm) else 0.0,
        )

    @cached_property
    def _cone(self) -> _Cones:
        """The query-independent half of :meth:`bounds`, computed once."""
        distinct, of_list = np.unique(self.centroids, axis=0, return_inverse=True)
        of_list = of_list.reshape(-1)
        distinct_norm = np.linalg.norm(distinct, axis=1)
        n_lo, n_hi = self.min_norm, self.max_norm
        informative = (distinct_norm[of_list] > 1e-6) & (n_lo > 0)
        c = np.where(informative, distinct_norm[of_list], 1.0)

        def cosine(norm: float | np.ndarray, distance: np.ndarray) -> np.ndarray:
            return (norm * norm + c * c - distance * distance) / (2 * norm * c)

        # cos of a member's angle to the centroid's direction, as a function of its norm t, is
        # t / 2|c| + (|c|^2 - d^2) / (2 |c| t): convex (or increasing) in t, so its largest value
        # is at an end of [n_lo, n_hi] and its smallest at the clamped stationary point.
        with np.errstate(divide="ignore", invalid="ignore"):
            closest = np.maximum(cosine(n_lo, self.inner_radius), cosine(n_hi, self.inner_radius))
            stationary = np.clip(np.sqrt(np.maximum(c * c - self.radius**2, 0.0)), n_lo, n_hi)
            farthest = cosine(stationary, self.radius)
        phi_min = np.arccos(np.clip(np.nan_to_num(closest, nan=1.0), -1.0, 1.0))
        phi_max = np.arccos(np.clip(np.nan_to_num(farthest, nan=-1.0), -1.0, 1.0))
        return _Cones(distinct, of_list, distinct_norm, phi_min, phi_max, informative)

    def bounds(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(lower, upper)``: certified bounds on ``query . v`` over each list's members, float64 ``(L,)``.

        Two bounds, each valid alone, intersected:

        * *ball*: ``|v - c| <= r`` gives ``q.c +- |q| r``;
        * *cone*: a member's angle to the centroid's direction follows from its distance to the
          centroid and its norm (``cos = (|v|^2 + |c|^2 - |v - c|^2) / (2 |v| |c|)``), so it lies in
          ``[phi_min, phi_max]``; the angle between ``q`` and the member is then at least the distance
          from ``q``'s own angle ``theta`` to that interval and at most ``theta + phi_max`` (angles
          obey the triangle inequality). For embeddings on the unit sphere this halves the photos the
          rank reads at 10M (the ball ignores that members cannot leave the sphere), and a shell's
          inner radius also caps how close to the centroid's direction its members come.
        """
        q = np.asarray(query, np.float64).reshape(-1)
        norm_q = float(np.linalg.norm(q))
        cone = self._cone
        dots = cone.distinct @ q  # shells of one k-means list share their centroid: one product each
        centre = dots[cone.of_list]
        spread = norm_q * self.radius
        guard = 1e-9 * (np.abs(centre) + spread + 1.0)  # the bounds' own float64 rounding
        upper, lower = centre + spread + guard, centre - spread - guard
        if norm_q == 0 or not cone.informative.any():
            return lower, upper
        with np.errstate(divide="ignore", invalid="ignore"):
            cos_theta = np.nan_to_num(dots / (norm_q * cone.distinct_norm), nan=0.0)
        theta = np.arccos(np.clip(cos_theta, -1.0, 1.0))[cone.of_list]
        # arccos near +-1 turns a 1e-16 rounding into ~1e-8 rad: ANGLE_GUARD per angle covers it.
        nearest = np.maximum(0.0, np.maximum(cone.phi_min - theta, theta - cone.phi_max) - 3 * ANGLE_GUARD)
        widest = np.minimum(np.pi, theta + cone.phi_max + 3 * ANGLE_GUARD)
        cos_near, cos_wide = np.cos(nearest), np.cos(widest)
        n_lo, n_hi = self.min_norm, self.max_norm
        value_guard = 1e-9 * (norm_q * n_hi + 1.0)
        cone_upper = norm_q * np.where(cos_near >= 0, n_hi, n_lo) * cos_near + value_guard
        cone_lower = norm_q * np.where(cos_wide >= 0, n_lo, n_hi) * cos_wide - value_guard
        upper = np.where(cone.informative, np.minimum(upper, cone_upper), upper)
        lower = np.where(cone.informative, np.maximum(lower, cone_lower), lower)
        return lower, upper
