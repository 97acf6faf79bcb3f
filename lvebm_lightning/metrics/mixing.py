"""Do chains from independent starts agree? A per-datum check of conditional chains.

Chains that condition on a datum (posterior inference, reconstruction) run as two sets from independent starts,
for example one from the store's neighbours and one from N(0, I). If both sets sample the same law, their means
differ only by Monte-Carlo error; if the chains stay in the modes they started in, the means differ by the
distance between modes. For each datum b and compared coordinate j (a missing coordinate, or a latent) the
between-set difference is weighed against the within-set spread (Welch's statistic),

    t_bj = (m1_bj - m2_bj) / sqrt(v1_bj / S1 + v2_bj / S2),

with m, v the mean and unbiased variance of each set's S1, S2 final states. The datum's chains disagree when
max_j |t_bj| exceeds the Student-t quantile at 1 - level / (2 d_b), d_b the number of compared coordinates
(Bonferroni) and min(S1, S2) - 1 degrees of freedom (Welch's conservative choice), so that chains which mix are
flagged with probability at most about ``level``. This is the between-chain against within-chain comparison
of R-hat (Gelman & Rubin 1992; Vehtari et al. 2021) with two sets of independent draws as the two chains, read
as a test so that its false-alarm rate does not depend on S. Its power does: on the bimodal posterior of
``tests/test_mixing.py`` (a store's set in the major mode, a prior's set split between two modes it cannot
leave) it flags 99.75% of the data with 32 chains a set and 77% with 16, while chains that mix are flagged on
1.5%. Sets that both sit in the same wrong mode cannot be
told apart by any comparison of this kind: the check needs starts that differ where it matters.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from scipy import stats
from torch import Tensor

LEVEL = 0.01
"""The per-datum false-alarm rate that the threshold allows for chains that mix."""


class SetAgreement(NamedTuple):
    """Per datum ``[B]``: the largest |t| over the compared coordinates, its threshold, and whether it is exceeded."""

    t: Tensor
    threshold: Tensor
    disagree: Tensor

    def arrays(self) -> dict[str, np.ndarray]:
        """The per-datum diagnostic as NumPy arrays, under the names the commands write."""
        return {"between_set_t": self.t.cpu().numpy(), "t_threshold": self.threshold.cpu().numpy(),
                "disagree": self.disagree.cpu().numpy()}


def summary(disagree: np.ndarray) -> str:
    """One line: the share of data ``[B]`` whose start sets disagree."""
    n, bad = int(disagree.size), int(disagree.sum())
    return (f"chains from the two start sets disagree on {bad} of {n} data ({100.0 * bad / max(n, 1):.1f}%: "
            "between_set_t > t_threshold)")


def set_agreement(
    samples: Tensor, n_first: int, compared: Tensor | None = None, level: float = LEVEL
) -> SetAgreement:
    """Compare the first ``n_first`` chains of each datum with the rest (module docstring).

    Args:
        samples: final states ``[B, S, d]``; chains ``[:, :n_first]`` are one set, ``[:, n_first:]`` the other.
        n_first: S1, the size of the first set (2 <= S1 <= S - 2, so that each set has a spread).
        compared: ``[B, d]`` bool, the coordinates to compare per datum (None: all); coordinates held fixed (the
            observed ones of a reconstruction) must be left out, since they have no spread.
        level: the per-datum false-alarm rate allowed for chains that mix.

    Returns:
        ``SetAgreement`` of ``[B]`` tensors (float64 t and threshold; a datum with nothing compared gets t = 0).
    """
    s = samples.shape[1]
    if not 2 <= n_first <= s - 2:
        raise ValueError(f"each set needs at least 2 chains to have a spread; got sets of {n_first} and {s - n_first}.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}.")
    first, second = samples[:, :n_first].double(), samples[:, n_first:].double()
    difference = first.mean(1) - second.mean(1)
    spread = (first.var(1) / first.shape[1] + second.var(1) / second.shape[1]).sqrt()
    # Equal means with no spread (chains that never moved from one shared start) agree; unequal ones do not.
    t = torch.where(difference == 0, torch.zeros_like(difference), difference.abs() / spread)
    if compared is None:
        compared = torch.ones_like(t, dtype=torch.bool)
    t = torch.where(compared, t, torch.zeros_like(t)).amax(-1)
    n_compared = compared.sum(-1).clamp_min(1).cpu()
    df = min(n_first, s - n_first) - 1
    threshold = torch.from_numpy(stats.t.ppf(1.0 - level / (2.0 * n_compared.double().numpy()), df)).to(t)
    return SetAgreement(t, threshold, t > threshold)
