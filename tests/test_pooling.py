"""GeM / L2N: the pooling maths the encoder relies on."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from retrieval.model.pooling import L2N, GeM, gem, l2n


def test_gem_p1_is_average_pooling():
    x = torch.rand(2, 5, 7, 6) + 0.01
    torch.testing.assert_close(gem(x, p=1.0), F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_gem_large_p_approaches_max_pooling():
    x = torch.rand(2, 5, 7, 6) + 0.01
    max_pool = x.amax(dim=(2, 3))
    err_small, err_large = ((gem(x, p=p) - max_pool).abs().max() for p in (3.0, 200.0))
    assert err_large < err_small
    assert err_large < 0.05 * max_pool.max()


def test_gem_module_learns_p_and_shows_it():
    pool = GeM(p=3.0)
    assert "p=3.0000" in repr(pool)
    out = pool(torch.rand(3, 4, 5, 5))
    assert out.shape == (3, 4)
    out.sum().backward()
    assert pool.p.grad is not None and pool.p.grad.abs().item() > 0


def test_l2n_rows_have_unit_norm_and_zero_row_stays_finite():
    x = torch.randn(6, 16) * 10
    x[3] = 0
    y = l2n(x)
    norms = torch.linalg.vector_norm(y, dim=1)
    torch.testing.assert_close(norms[[0, 1, 2, 4, 5]], torch.ones(5))
    assert torch.isfinite(y).all()
    torch.testing.assert_close(L2N()(x), y)


def test_l2n_on_numpy_rows_matches_the_tensor_path_and_keeps_tiny_rows_short():
    x = torch.randn(6, 16) * 10
    x[2] = 1e-8  # norm 4e-8 < eps: divided by eps, so it stays a short row instead of turning unit length
    y = l2n(x.numpy())
    assert isinstance(y, np.ndarray)
    np.testing.assert_allclose(y, l2n(x).numpy(), rtol=1e-6, atol=0)
    assert np.linalg.norm(y[2]) < 1e-1
    np.testing.assert_allclose(np.linalg.norm(l2n(np.array([3.0, 4.0]))), 1.0)  # one vector: its last axis
