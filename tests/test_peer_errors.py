"""Which errors of a collective mean "another rank is lost" (``training.ranks.is_peer_error``): the backends' own
wordings, gloo's timeout included, and not an ordinary error of the training code."""

from __future__ import annotations

import pytest

from lvebm_lightning.training.ranks import is_peer_error


@pytest.mark.parametrize("message", [
    "Application timeout caused pair closure",  # gloo, a collective past trainer.strategy.timeout
    "[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Read error [127.0.0.1]:1234: Connection reset by peer",
    "Timed out waiting 30000ms for recv operation to complete",
    "NCCL communicator was aborted on rank 0",
])
def test_a_backends_error_of_a_collective_is_a_lost_peer(message):
    assert is_peer_error(RuntimeError(message))


@pytest.mark.parametrize("error", [
    RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x2 and 3x8)"),
    ValueError("Application timeout caused pair closure"),  # the wording, but not a backend's runtime error
])
def test_other_errors_are_not_a_lost_peer(error):
    assert not is_peer_error(error)
