"""Rankings in the study log: schema 2 writes them as their own records, schema 1 inside events."""

from __future__ import annotations

RANKING_FIELDS = ("target_rank", "top_ids", "top_scores", "server_ms", "timings_ms")
ESTIMATE_FIELDS = ("rank_exact", "rank_bounds")  # only on an estimated rank (retrieval.serving.rank_result.proven_rank)
SHOWN_FIELD = "shown"  # whether the participant saw the ranking (a study condition may hide it)
EVENT_TYPES = ("stroke", "undo", "clear")


def with_rankings(records: list[dict]) -> list[dict]:
    """Records with each ``rank`` record's ranking copied into the event it ranked (schema 2).

    Schema 1 wrote the ranking into the request's last event record; schema 2 writes the events
    before ranking and the ranking after, as a ``rank`` record naming the event's trial token and
    ``seq``. This puts the fields back where schema 1 had them (``ranked`` true only when a
    ranking arrived; ``shown`` when the rank record has it), so tables built from event records read
    both schemas alike. The ``rank``
    records stay in the list. Records of schema 1 pass unchanged.
    """
    rankings = {
        (r.get("participant"), r.get("session"), r.get("trial_token"), r.get("seq")): r
        for r in records
        if r.get("type") == "rank" and "error" not in r
    }
    if not rankings:
        return records
    out = []
    for record in records:
        key = (record.get("participant"), record.get("session"), record.get("trial_token"), record.get("seq"))
        ranking = rankings.get(key) if record.get("type") in EVENT_TYPES else None
        if ranking is not None:
            record = {**record, "ranked": True, **{f: ranking.get(f) for f in RANKING_FIELDS}}
            record |= {f: ranking[f] for f in ESTIMATE_FIELDS if f in ranking}
            if SHOWN_FIELD in ranking:
                record[SHOWN_FIELD] = ranking[SHOWN_FIELD]
        elif record.get("schema_version", 1) >= 2 and record.get("type") in EVENT_TYPES:
            record = {**record, "ranked": False}
        out.append(record)
    return out
