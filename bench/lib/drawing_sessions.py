"""Scripted drawing sessions at human times, and the check that each answer is the session's own.

Shared by ``bench_concurrency.py`` (open loop: a stroke is sent when its pen lifts) and
``bench_cluster.py`` (closed loop: a stroke waits for the previous answer). Each session draws its
own procedural sketch of a distinct gallery photo; the library's answer for every prefix is
computed before the load, so the load generator only compares.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from bench.lib.common import load_encoder
from retrieval.runtime import set_threads


@dataclass(frozen=True)
class SessionPlan:
    """What the sessions draw and against which gallery (the fields a bench's config shares)."""

    users: int
    strokes: int
    gallery_size: int
    k: int
    pace: float
    model: Path
    cache_dir: Path
    seed: int
    start_spread_s: float = 2.0

    @classmethod
    def of(cls, cfg) -> SessionPlan:
        """The plan of a bench config that has every one of these fields."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})


@dataclass
class Session:
    """One scripted user: its sketch prefixes, send times and what the library expects back."""

    user: int
    photo_id: str
    payloads: list[str]
    send_at_s: list[float]
    expected_ids: list[list[str]] = field(default_factory=list)
    embeddings: np.ndarray | None = None  # (strokes, D) this sketch's own prefix embeddings
    expected_ranks: list[int] = field(default_factory=list)  # exact rank of photo_id per prefix (closed loop)


def make_sessions(plan: SessionPlan, rng: np.random.Generator) -> list[Session]:
    from retrieval.data.formats.stroke_json import to_stroke_json
    from retrieval.data.procedural import generate_sketch
    from retrieval.data.procedural.dataset import photo_id_of
    from retrieval.data.procedural.timing import pen_up_gap

    sessions = []
    for user, index in enumerate(rng.choice(plan.gallery_size, plan.users, replace=False)):
        sketch = generate_sketch(plan.seed, int(index), user % 3)
        n = min(plan.strokes, sketch.num_strokes)
        t = float(rng.uniform(0, plan.start_spread_s))
        send, payloads = [], []
        for i in range(n):
            stroke = sketch.strokes[i]
            t += ((pen_up_gap(rng) if i else 0.0) + float(stroke[-1, 2] - stroke[0, 2])) / 1e3 / plan.pace
            send.append(t)
            payloads.append(json.dumps(to_stroke_json(sketch.first_strokes(i + 1))))
        sessions.append(Session(user, photo_id_of(plan.seed, int(index)), payloads, send))
    return sessions


def expected_rankings(sessions: list[Session], plan: SessionPlan):
    """What the library answers for every prefix (computed before the load, not during it)."""
    from retrieval.serving.gallery import open_gallery
    from retrieval.serving.retriever import Retriever

    encoder = load_encoder(plan.model)
    gallery = open_gallery(encoder, f"procedural:photos={plan.gallery_size}", plan.cache_dir, progress=True)
    set_threads(1)
    retriever = Retriever(encoder, gallery.index)
    for s in sessions:
        s.expected_ids = [retriever.rank(p, k=plan.k).ids for p in s.payloads]
        s.embeddings = encoder.embed_sketches(np.stack([retriever.render(retriever.validate(p)) for p in s.payloads]))
    return gallery.index


def check_answer(session: Session, stroke: int, answer: dict, index, tol: float) -> str:
    """ "exact", "equivalent" (same scores under float noise, near-tied order) or "mixup".

    The returned scores must be what this session's own sketch embedding gives for the returned
    ids (within ``tol``): an answer computed from another session's sketch fails that even when an
    untrained model makes every ranking look alike.
    """
    vectors, row_of = index.vectors, {pid: i for i, pid in enumerate(index.ids)}
    ids, expected = answer["ids"], session.expected_ids[stroke]
    if len(ids) != len(expected) or any(pid not in row_of for pid in ids):
        return "mixup"
    own = vectors[[row_of[p] for p in ids]] @ session.embeddings[stroke]
    if not np.allclose(own, np.asarray(answer["scores"], dtype=np.float32), atol=tol):
        return "mixup"
    if ids == expected:
        return "exact"
    best = vectors[[row_of[p] for p in expected]] @ session.embeddings[stroke]
    return "equivalent" if np.allclose(np.sort(own), np.sort(best), atol=tol) else "mixup"


def score_signatures(sessions: list[Session], index, tol: float) -> int:
    """Distinct expected top-k score vectors (rounded to ``tol``): how well the check tells sketches apart."""
    row_of = {pid: i for i, pid in enumerate(index.ids)}
    sigs = set()
    for s in sessions:
        for emb, ids in zip(s.embeddings, s.expected_ids):
            sigs.add(tuple(np.round((index.vectors[[row_of[p] for p in ids]] @ emb) / tol).astype(np.int64)))
    return len(sigs)


def prewarm_thumbnails(plan: SessionPlan, max_s: float) -> None:
    """Let the app fill its thumbnail cache first (for up to ``max_s``): on a fresh clone its background
    thread renders every photo (~6 ms CPU each) while the sessions draw, which is not what a warm server does."""
    import glob

    from harness.api_client import running_app

    args = ["--gallery-size", str(plan.gallery_size), "--cache-dir", str(plan.cache_dir), "--model", str(plan.model)]
    start = time.perf_counter()
    with running_app(args):
        done = 0
        while done < plan.gallery_size and time.perf_counter() - start < max_s:
            time.sleep(2)
            done = max((len(glob.glob(f"{d}/*.jpg")) for d in glob.glob(f"{plan.cache_dir}/thumbs/*")), default=0)
    print(f"thumbnail cache: {done} of {plan.gallery_size} after {time.perf_counter() - start:.0f} s", flush=True)
