"""The Recall@k surrogate (retrieval.model.losses.recall_at_k_loss) against the recall it stands in for."""

from __future__ import annotations

import pytest
import torch

from retrieval.model.losses import recall_at_k_loss
from retrieval.model.pooling import l2n

KS = (1, 2, 4, 8, 16)


def _true_recall(sim: torch.Tensor, ks: tuple[int, ...]) -> float:
    """Mean over ks and rows of [rank of the diagonal <= k], rank = 1 + keys scoring above the match."""
    rank = 1 + (sim > sim.diagonal().unsqueeze(1)).sum(dim=1)
    return torch.stack([(rank <= k).double().mean() for k in ks]).mean().item()


def test_loss_falls_as_the_matching_similarity_rises():
    torch.manual_seed(0)
    q, k = l2n(torch.randn(12, 16)), l2n(torch.randn(12, 16))
    k = k.clone().requires_grad_(True)
    loss = recall_at_k_loss(q, k, rank_temperature=0.1)
    loss.backward()
    # Moving each key towards its own query raises s_ii: the loss must go down along that direction.
    towards_match = q - k.detach()
    assert (k.grad * towards_match).sum() < 0
    with torch.no_grad():
        nearer = l2n(k + 0.2 * towards_match)
        assert recall_at_k_loss(q, nearer, rank_temperature=0.1) < loss


def test_gradient_of_a_single_pair_raises_its_similarity_and_lowers_the_rivals():
    q = torch.eye(4, dtype=torch.float64)
    sim = torch.tensor(
        [[0.5, 0.6, 0.1, 0.0], [0.0, 0.9, 0.2, 0.1], [0.1, 0.0, 0.9, 0.3], [0.0, 0.1, 0.2, 0.9]],
        dtype=torch.float64,
        requires_grad=True,
    )
    # queries = identity, keys = sim.T gives queries @ keys.T == sim exactly
    recall_at_k_loss(q, sim.T, ks=(1,), rank_temperature=0.1).backward()
    grad = sim.grad
    assert grad[0, 0] < 0  # raising row 0's match lowers the loss
    assert grad[0, 1] > 0  # raising the rival that outranks it raises the loss
    assert grad[0, 1] > abs(grad[0, 3])  # the rival above the match weighs more than a distant one


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surrogate_approaches_true_recall_as_temperatures_shrink(seed):
    gen = torch.Generator().manual_seed(seed)
    q = l2n(torch.randn(40, 8, generator=gen, dtype=torch.float64))
    k = l2n(q + 0.8 * torch.randn(40, 8, generator=gen, dtype=torch.float64))
    truth = _true_recall(q @ k.T, KS)
    assert 0.2 < truth < 0.95  # a matrix where the ranks vary, so the check means something
    errors = [
        abs((1 - recall_at_k_loss(q, k, KS, rank_temperature=t, recall_temperature=t)).item() - truth)
        for t in (1e-1, 1e-2, 1e-4)
    ]
    assert errors[0] > errors[-1]
    assert errors[-1] < 1e-6


def test_perfect_ranking_gives_zero_loss_and_reversed_ranking_full_loss():
    q = torch.eye(20)
    assert recall_at_k_loss(q, q, KS, rank_temperature=1e-3, recall_temperature=1e-2).item() == pytest.approx(
        0, abs=1e-6
    )
    # Every query's match scores below all 19 other keys: rank 20 > 16, so every recall is 0.
    worst = l2n(torch.ones(20, 20) - 2 * torch.eye(20))
    assert recall_at_k_loss(q, worst, KS, rank_temperature=1e-3, recall_temperature=1e-2).item() == pytest.approx(
        1, abs=1e-6
    )


def test_default_temperatures_still_order_good_above_bad_rankings():
    q = torch.eye(20)
    worst = l2n(torch.ones(20, 20) - 2 * torch.eye(20))
    assert recall_at_k_loss(q, q) < 0.5 < recall_at_k_loss(q, worst)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scalar_of_the_input_dtype_in_unit_interval(dtype):
    q = l2n(torch.randn(32, 128, dtype=dtype))
    loss = recall_at_k_loss(q, l2n(torch.randn(32, 128, dtype=dtype)))
    assert loss.shape == () and loss.dtype == dtype and 0 <= loss.item() <= 1


def test_refuses_mismatched_shapes_and_bad_settings():
    q = torch.randn(4, 8)
    with pytest.raises(ValueError, match="one shape"):
        recall_at_k_loss(q, torch.randn(5, 8))
    with pytest.raises(ValueError, match="one shape"):
        recall_at_k_loss(torch.randn(8), torch.randn(8))
    with pytest.raises(ValueError, match="positive temperatures"):
        recall_at_k_loss(q, q, rank_temperature=0)
    with pytest.raises(ValueError, match="ks >= 1"):
        recall_at_k_loss(q, q, ks=())


def test_recall_step_temperature_grows_with_k_as_in_the_paper():
    q = torch.eye(20, dtype=torch.float64)  # every match ranks first
    for k in (1, 4, 16):
        loss = recall_at_k_loss(q, q, ks=(k,), rank_temperature=1e-3, recall_temperature=1.0)
        assert loss.item() == pytest.approx(
            1 - torch.sigmoid(torch.tensor((k - 0.5) / k, dtype=torch.float64)).item(), abs=1e-9
        )
