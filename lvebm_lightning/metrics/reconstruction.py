"""Scores of conditional samples and of latent probes against a known truth.

- ``energy_score``: ES(P, y) = E|X - y| - E|X - X'| / 2 for X, X' ~ P independent (Gneiting & Raftery 2007), a
  strictly proper score of a sample cloud against the truth y; in one dimension it is the CRPS. Estimated from S
  samples without bias: the pair term averages over the S (S - 1) ordered pairs s != s'.
- ``central_coverage``: the share of true values inside the central ``level`` interval of their samples.
- ``knn_predict`` / ``cv_knn_r2``: a k-nearest-neighbour regression and its K-fold cross-validated R^2, the probe
  for "how much of a hidden variable does a representation carry" (posterior means, principal components,
  observed coordinates). R^2 itself is torchmetrics' ``r2_score`` (1 - sum (y - yhat)^2 / sum (y - mean y)^2 per
  column).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional import r2_score


def energy_score(samples: Tensor, truth: Tensor) -> Tensor:
    """ES of each datum's samples ``[B, S, d]`` (S >= 2) against its truth ``[B, d]``, ``[B]``."""
    s = samples.shape[1]
    if s < 2:
        raise ValueError(f"energy_score needs at least 2 samples per datum, got {s}.")
    to_truth = (samples - truth.unsqueeze(1)).norm(dim=-1).mean(1)
    pairs = torch.cdist(samples, samples).sum((1, 2)) / (s * (s - 1))
    return to_truth - 0.5 * pairs


def central_coverage(samples: Tensor, truth: Tensor, level: float = 0.9) -> Tensor:
    """Share (0-d) of entries of ``truth`` ``[B, d]`` inside the central ``level`` interval of ``samples``
    ``[B, S, d]`` (empirical quantiles (1 - level) / 2 and (1 + level) / 2 per datum and coordinate)."""
    lo = torch.quantile(samples, (1.0 - level) / 2.0, dim=1)
    hi = torch.quantile(samples, (1.0 + level) / 2.0, dim=1)
    return ((truth >= lo) & (truth <= hi)).double().mean()


def knn_predict(train_x: Tensor, train_y: Tensor, query: Tensor, k: int = 10) -> Tensor:
    """The mean of ``train_y`` ``[N, m]`` over the k nearest rows of ``train_x`` ``[N, p]`` to each ``query``
    ``[Q, p]`` (Euclidean), ``[Q, m]``; features are standardised by the training rows' scale first."""
    scale = train_x.std(0).clamp_min(1e-12)
    distances = torch.cdist(query / scale, train_x / scale)
    nearest = distances.topk(min(k, len(train_x)), largest=False).indices
    return train_y[nearest].mean(1)


def cv_knn_r2(features: Tensor, target: Tensor, k: int = 10, folds: int = 5, seed: int = 0) -> Tensor:
    """K-fold cross-validated R^2 ``[m]`` of a k-NN regression of ``target`` ``[N, m]`` on ``features`` ``[N, p]``:
    predictions for each fold come from the other folds only, then one R^2 over all held-out predictions."""
    n = len(features)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    prediction = torch.empty_like(target, dtype=torch.float64)
    for held in order.chunk(folds):
        keep = torch.ones(n, dtype=torch.bool)
        keep[held] = False
        prediction[held] = knn_predict(features[keep].double(), target[keep].double(), features[held].double(), k)
    return r2_score(prediction, target.double(), multioutput="raw_values")
