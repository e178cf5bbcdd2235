"""Cluster settings that need no running Ray: token authentication is required to join a cluster."""

from __future__ import annotations

import pytest

from retrieval.serving.ray_setup import require_token_auth, shard_memory_bytes


def test_joining_a_cluster_without_token_auth_is_refused_with_the_setup_steps(tmp_path):
    with pytest.raises(PermissionError, match="RAY_AUTH_MODE=token"):
        require_token_auth({}, tmp_path)
    with pytest.raises(PermissionError, match="ray get-auth-token --generate"):
        require_token_auth({"RAY_AUTH_MODE": "disabled"}, tmp_path)
    with pytest.raises(PermissionError, match="no token at"):
        require_token_auth({"RAY_AUTH_MODE": "token"}, tmp_path)


def test_a_token_from_the_environment_a_file_or_the_default_path_is_accepted(tmp_path):
    assert require_token_auth({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "abc"}, tmp_path) == "RAY_AUTH_TOKEN"
    token = tmp_path / "token"
    token.write_text("secret\\n")
    assert require_token_auth({"RAY_AUTH_MODE": "TOKEN", "RAY_AUTH_TOKEN_PATH": str(token)}, tmp_path) == str(token)
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("t")
    assert require_token_auth({"RAY_AUTH_MODE": "token"}, tmp_path).endswith("auth_token")
    token.write_text("  ")
    with pytest.raises(PermissionError, match="no token"):
        require_token_auth({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}, tmp_path)


def test_a_shard_requests_memory_in_proportion_to_its_files(tmp_path):
    (tmp_path / "vectors.npy").write_bytes(b"0" * 10_000_000)
    assert shard_memory_bytes(tmp_path) == int(10_000_000 * 1.5) + 64 * 2**20
