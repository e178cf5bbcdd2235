"""The certified target rank: one canonical score kernel, and a counter that reads only what it must.

The project's ranking rule (``true_ranks`` below): rank = #(photos scoring >= the target's score),
ties counted against the query, the target counting itself as the ``1 +``. Two things make that
rule hard to keep at scale:

* **One kernel.** A BLAS product rounds differently with the shape of the call, so a target score
  from one matrix product and the counted scores from another can differ by an ulp: the target
  then fails to count itself (off by one) or ties flip. Here every score that is *compared* comes
  from :func:`canonical_scores` (float64 sums of exact float32 products, reduced row by row in one
  fixed order). Fast float32 or quantised scores only *filter*: a photo whose fast score is more
  than ``eps`` (a proven bound on the fast kernel's error) above / below the target score is
  counted / dropped; the ``eps`` band around it is re-scored canonically.
* **Sublinear in practice.** :class:`IVFRankCounter` bounds every IVF list by its centroid, its
  members' distances to it and their norms (:meth:`ListStats.bounds`: the ball ``q.c +- |q| r``
  cut by the cone of directions those allow): lists entirely above the target score count their size unread,
  lists entirely below are skipped, and only the lists that straddle it are scanned, in order of
  decreasing upper bound, by faiss' ``range_search_preassigned`` over their codes. Past a cap K
  the scan stops and the answer is an interval: ``[counted, counted + unread candidates]``, with
  an estimate inside it, labelled ``exact=False``.

The counter works over any faiss ``IndexIVF`` whose codes decode with a known per-dimension error:
IVF-Flat (error 0) or IVF-SQ8 (measured at build, :func:`code_error`), re-scoring band photos from
the float32 matrix (which may be a read-only memory map).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import faiss
import numpy as np

from retrieval.serving.list_bounds import ListStats

F32_UNIT_ROUNDOFF = 2.0**-24
# Ranks above this are answered as an interval: a study reads ranks up to a few hundred, and the
# interval keeps a far target's count from reading most of a large gallery.
DEFAULT_RANK_CAP = 1000
# Codes read per range_search call: large enough to amortise the call, small enough to stop soon
# after the cap.
CODES_PER_SCAN = 65_536


def true_ranks(scores: np.ndarray, true_idx: np.ndarray) -> np.ndarray:
    """Rank (1-based) of each query's true item, ties counted against the query.

    Args:
        scores: ``(Q, N)`` similarity of each query to each gallery item (higher = closer).
        true_idx: ``(Q,)`` column of each query's true item.

    Returns:
        ``(Q,)`` int64 ranks in ``1..N``.
    """
    scores = np.asarray(scores)
    true_idx = np.asarray(true_idx, dtype=np.int64)
    if scores.ndim != 2 or true_idx.shape != (scores.shape[0],):
        raise ValueError(f"expected scores (Q, N) and true_idx (Q,), got {scores.shape} and {true_idx.shape}")
    if len(true_idx) and (true_idx.min() < 0 or true_idx.max() >= scores.shape[1]):
        raise ValueError(f"true_idx must index the {scores.shape[1]} gallery columns")
    true_scores = scores[np.arange(len(true_idx)), true_idx][:, None]
    # ">=" counts the true item itself once: that is the "1 +" of the definition.
    return (scores >= true_scores).sum(axis=1).astype(np.int64)


def canonical_scores(query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """THE score of ``query`` ``(D,)`` against each row of ``vectors`` ``(N, D)``: float64 ``(N,)``.

    Products of float32 numbers are exact in float64; each row is summed by numpy's reduction over
    the contiguous last axis, whose order depends only on D, never on N or on the row's position.
    So a photo scores the same whether it is scored alone, in a list or in the whole gallery.
    """
    q = np.asarray(query, np.float32).astype(np.float64)
    v = np.asarray(vectors, np.float32).astype(np.float64)
    return np.multiply(v, q).sum(axis=-1)


def fast_score_error(query: np.ndarray, max_norm: float, code_error: np.ndarray | None = None) -> float:
    """Bound on ``|fast score - canonical score|`` for photos of norm <= ``max_norm``.

    A float32 dot product of length D errs by at most ``D u sum|q_i v_i| <= D u |q| |v|``
    (u = 2^-24, FMA or not, any summation order); the canonical float64 score by far less. Scores
    of codes that decode within ``code_error[i]`` of each coordinate err by ``sum |q_i| code_error[i]``
    more (rigorous: each decoded coordinate is within ``code_error[i]``). The arithmetic part is
    doubled: a wider band only costs a few extra canonical re-scores.
    """
    q = np.asarray(query, np.float64)
    norm_q = float(np.linalg.norm(q))
    arithmetic = 1.01 * len(q) * F32_UNIT_ROUNDOFF * norm_q * float(max_norm)
    decoding = 0.0
    if code_error is not None:
        decoding = float(np.abs(q) @ code_error)
        arithmetic += 1.01 * len(q) * F32_UNIT_ROUNDOFF * norm_q * float(np.linalg.norm(code_error))
    return 2.0 * arithmetic + 1.001 * decoding + 1e-12


def count_at_or_above(query: np.ndarray, vectors: np.ndarray, threshold: float) -> int:
    """Exact ``#(canonical score >= threshold)`` over ``vectors``: a float32 product filters, the
    ``eps`` band is re-scored canonically."""
    if len(vectors) == 0:
        return 0
    q = np.asarray(query, np.float32)
    fast = (vectors @ q).astype(np.float64)
    eps = fast_score_error(q, float(np.sqrt(np.max(np.einsum("nd,nd->n", vectors, vectors)))))
    band = np.flatnonzero(np.abs(fast - threshold) <= eps)
    certain = int(np.count_nonzero(fast > threshold + eps))
    return certain + int(np.count_nonzero(canonical_scores(q, vectors[band]) >= threshold))


@dataclass(frozen=True)
class TargetRank:
    """A target's rank under the project's rule, exact or bounded.

    ``rank`` is exact when ``exact``; otherwise an estimate inside ``[lower, upper]`` (a rank above
    the cap, or a partial answer from shards that missed their deadline).
    """

    rank: int
    lower: int
    upper: int
    scanned: int = field(default=0, compare=False)  # photos whose codes were read

    @property
    def exact(self) -> bool:
        return self.lower == self.upper

    @classmethod
    def of(cls, count: int, scanned: int = 0) -> TargetRank:
        return cls(count, count, count, scanned)

    def __add__(self, other: TargetRank) -> TargetRank:
        """Counts of disjoint photo sets add up (the sharded rank)."""
        return TargetRank(
            self.rank + other.rank, self.lower + other.lower, self.upper + other.upper, self.scanned + other.scanned
        )

    def widened(self, unanswered: int) -> TargetRank:
        """This count plus ``unanswered`` photos nobody counted (a shard past its deadline)."""
        if unanswered <= 0:
            return self
        # The estimate stays the counted one: nothing is known about the missing photos' scores.
        return TargetRank(self.rank, self.lower, self.upper + unanswered, self.scanned)

    def as_json(self) -> dict[str, object]:
        return {"rank": self.rank, "rank_exact": self.exact, "rank_bounds": [self.lower, self.upper]}


def code_error(index: faiss.IndexIVF, vectors: np.ndarray, chunk: int = 500_000) -> np.ndarray:
    """Per-dimension max ``|decode(encode(v)) - v|`` of ``index``'s codes over ``vectors`` (0 for IVF-Flat).

    One pass over ``vectors`` in chunks (a memory map is fine); a scalar quantiser of raw vectors
    is run alone, without assigning lists.
    """
    err = np.zeros(index.d, np.float64)
    if isinstance(index, faiss.IndexIVFFlat):
        return err
    direct = isinstance(index, faiss.IndexIVFScalarQuantizer) and not index.by_residual
    for start in range(0, len(vectors), chunk):
        block = np.ascontiguousarray(vectors[start : start + chunk], np.float32)
        if direct:
            decoded = index.sq.decode(index.sq.compute_codes(block))
        else:
            decoded = index.sa_decode(index.sa_encode(block))
        np.maximum(err, np.abs(decoded.astype(np.float64) - block).max(axis=0), out=err)
    return err


class IVFRankCounter:
    """Exact ``#(canonical score >= s)`` over an IVF index, reading only the lists that straddle ``s``.

    Args:
        ivf: a trained, filled faiss ``IndexIVF`` (Flat or scalar-quantised) whose ids are the rows of
            ``vectors``.
        stats: :meth:`ListStats.compute` of the same vectors and assignment.
        errors: :func:`code_error` of its codes.
        vectors: the float32 ``(N, D)`` matrix (array or memory map) the band is re-scored from.
    """

    def __init__(self, ivf: faiss.IndexIVF, stats: ListStats, errors: np.ndarray, vectors: np.ndarray) -> None:
        self.ivf, self.stats, self.errors, self.vectors = ivf, stats, np.asarray(errors, np.float64), vectors

    @classmethod
    def over(cls, ivf: faiss.IndexIVF, vectors: np.ndarray) -> IVFRankCounter:
        """The counter of a filled IVF index whose ids are the rows of ``vectors``."""
        stats = ListStats.compute(vectors, list_labels(ivf), ivf.quantizer.reconstruct_n(0, ivf.nlist))
        return cls(ivf, stats, code_error(ivf, vectors), vectors)

    def _rescore(self, rows: np.ndarray) -> np.ndarray:
        rows = np.sort(rows)  # sequential reads of a memory map
        return np.asarray(self.vectors[rows], np.float32)

    def count(self, query: np.ndarray, threshold: float, cap: int | None = None) -> TargetRank:
        """``#(score >= threshold)``, exact up to ``cap``; above it, bounds and an estimate."""
        q = np.ascontiguousarray(query, np.float32).reshape(-1)
        st = self.stats
        lower, upper = st.bounds(q)
        full = (lower >= threshold) & (st.sizes > 0)
        counted = int(st.sizes[full].sum())
        candidates = np.flatnonzero((upper >= threshold) & ~full & (st.sizes > 0))
        candidates = candidates[np.argsort(-upper[candidates], kind="stable")]
        unread = int(st.sizes[candidates].sum())
        eps = fast_score_error(q, st.max_norm, self.errors)
        # Codes scoring <= this cannot reach the threshold; float32 rounding of it goes downwards.
        floor = float(np.nextafter(np.float32(threshold - eps), np.float32(-np.inf)))
        scanned = hits_scanned = 0
        for batch in _batches(candidates, st.sizes[candidates], CODES_PER_SCAN):
            if cap is not None and counted > cap:
                break
            found = self._scan(q, floor, batch)
            certain = found[1] > threshold + eps
            band_rows = found[0][~certain]
            hits = int(np.count_nonzero(certain))
            if len(band_rows):
                hits += int(np.count_nonzero(canonical_scores(q, self._rescore(band_rows)) >= threshold))
            counted += hits
            hits_scanned += hits
            size = int(st.sizes[batch].sum())
            scanned += size
            unread -= size
        if unread == 0:
            return TargetRank.of(counted, scanned)
        return self._bounded(counted, unread, hits_scanned, scanned)

    @staticmethod
    def _bounded(counted: int, unread: int, hits_scanned: int, scanned: int) -> TargetRank:
        # Estimate: the unread candidates hit as often as the scanned ones (an over-estimate: lists
        # are read best bound first), clamped inside the certified interval.
        estimate = counted + int(round(unread * hits_scanned / max(scanned, 1)))
        return TargetRank(min(estimate, counted + unread), counted, counted + unread, scanned)

    def _scan(self, query: np.ndarray, floor: float, lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows and fast scores ``> floor`` in ``lists`` (faiss range search over their codes)."""
        keys = np.ascontiguousarray(lists, np.int64).reshape(1, -1)
        coarse = np.zeros(keys.shape, np.float32)
        result = faiss.RangeSearchResult(1)
        params = faiss.SearchParametersIVF(nprobe=keys.shape[1])
        self.ivf.range_search_preassigned_c(
            1, faiss.swig_ptr(query), floor, faiss.swig_ptr(keys), faiss.swig_ptr(coarse), result, False, params
        )
        n = int(faiss.rev_swig_ptr(result.lims, 2)[1])
        rows = faiss.rev_swig_ptr(result.labels, n).copy() if n else np.zeros(0, np.int64)
        scores = faiss.rev_swig_ptr(result.distances, n).astype(np.float64) if n else np.zeros(0)
        return rows, scores


def _batches(lists: np.ndarray, sizes: np.ndarray, codes: int) -> list[np.ndarray]:
    """``lists`` cut, in order, into runs of about ``codes`` codes (a run holds at least one list)."""
    ends = np.cumsum(sizes)
    cuts = np.flatnonzero(np.diff(ends // codes)) + 1  # a cut after each list that crosses a multiple
    return np.split(lists, cuts) if len(lists) else []


def list_labels(ivf: faiss.IndexIVF) -> np.ndarray:
    """``(ntotal,)`` IVF list of each stored id (ids = rows), read from the inverted lists."""
    labels = np.full(ivf.ntotal, -1, np.int64)
    invlists = ivf.invlists
    for lst in range(ivf.nlist):
        size = invlists.list_size(lst)
        if size:
            labels[faiss.rev_swig_ptr(invlists.get_ids(lst), size)] = lst
    if labels.min(initial=0) < 0:
        raise ValueError("IVF ids are not the rows 0..N-1; rebuild the index")
    return labels


def with_target_in_top_k(
    scores: np.ndarray, ids: list[str], target: str, score: float, rank: TargetRank, k: int
) -> tuple[np.ndarray, list[str]]:
    """``(scores, ids)`` of one top-``k`` row with ``target`` placed at its rank when that rank is
    exact and within ``k`` but the (approximate) search missed it: the grid then shows what the
    "found" banner names."""
    if not rank.exact or rank.rank > k or target in ids:
        return scores, ids
    at = min(rank.rank - 1, len(ids))
    new_ids = (ids[:at] + [target] + ids[at:])[:k]
    new_scores = np.concatenate([scores[:at], [np.float32(score)], scores[at : len(ids)]])[:k].astype(np.float32)
    return new_scores, new_ids


def pad_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Score rows of unequal length as one ``(B, max len)`` float32 matrix, padded like faiss pads."""
    merged = np.full((len(rows), max((len(r) for r in rows), default=0)), -np.finfo(np.float32).max, np.float32)
    for b, row in enumerate(rows):
        merged[b, : len(row)] = row
    return merged
