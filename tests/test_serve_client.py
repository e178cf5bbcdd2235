"""A front end on a cluster (app.py --serve-url) starts only with the cluster's photos; no cluster needed."""

from __future__ import annotations

import pytest

from retrieval.serving.serve_client import check_cluster_gallery
from retrieval.serving.versions import SnapshotMismatch, encoder_hash_of, ids_digest, snapshot_id

IDS = [f"photo_{i:02d}" for i in range(10)]
INFO = {"snapshot": snapshot_id("abc123", "def456"), "gallery_size": 10, "ids_digest": ids_digest(IDS)}


def test_the_same_photos_listed_in_another_order_are_the_clusters():
    check_cluster_gallery(INFO, IDS[::-1], "photos")  # a folder's listing order need not be the index's
    assert (
        encoder_hash_of(INFO["snapshot"]) == "abc123" and encoder_hash_of(snapshot_id("", "f00")) == "unknown-encoder"
    )


@pytest.mark.parametrize(
    "ids, why",
    [
        (IDS + ["photo_10"], "holds 1 photo\\(s\\) fewer \\(it skips photos it cannot read"),
        (IDS[:8], "holds 2 photo\\(s\\) more"),
        (IDS[:9] + ["other"], "holds other photo ids"),
    ],
)
def test_a_front_end_with_other_photos_is_refused_with_both_counts(ids, why):
    with pytest.raises(
        SnapshotMismatch, match=f"cluster's gallery \\(10 photos.*front end's photos \\({len(ids)} photos\\).*{why}"
    ):
        check_cluster_gallery(INFO, ids, "photos")


def test_a_cluster_that_does_not_report_its_ids_is_refused():
    with pytest.raises(SnapshotMismatch, match="redeploy"):
        check_cluster_gallery({"snapshot": "a-b", "gallery_size": 10}, IDS, "photos")
