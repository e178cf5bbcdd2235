import faiss
import pytest
import torch

from retrieval.runtime import THREADS_ENV, default_threads, set_threads


def test_set_threads_sets_torch_and_faiss_to_the_same_count():
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1
        assert torch.get_num_threads() == 1
        assert faiss.omp_get_max_threads() == 1
    finally:
        set_threads(before)


def test_the_thread_count_comes_from_the_environment_and_a_bad_value_is_named(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "3")
    assert default_threads() == 3
    monkeypatch.setenv(THREADS_ENV, "two")
    with pytest.raises(ValueError, match=THREADS_ENV):
        default_threads()
    monkeypatch.delenv(THREADS_ENV)
    assert 1 <= default_threads() <= 2
