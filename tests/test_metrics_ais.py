"""AIS log Z against a 5-D Gaussian energy with known normaliser.

Tolerance. Z_hat is a mean of C i.i.d. weights, so by the delta method
sd(log Z_hat) ~ sd(w) / (sqrt(C) mean w) = sqrt(1/ESS - 1/C), which AIS reports as `log_z_std_err`. Single
runs are checked to 4 of those; the bias check pools R seeds, whose mean has standard error
(sd over seeds) / sqrt(R), and allows 3 of those above log Z.
"""

import math

import pytest
import torch

from lvebm_lightning.metrics import ais_log_partition, annealing_schedule

DX, DZ = 3, 2
DIAGONAL, COUPLING = [0.5, 1.0, 2.0, 4.0, 8.0], 0.3
PRECISION = torch.diag(torch.tensor(DIAGONAL, dtype=torch.float64))
PRECISION[0, 1] = PRECISION[1, 0] = COUPLING
LOG_Z = 0.5 * (DX + DZ) * math.log(2 * math.pi) - 0.5 * float(torch.logdet(PRECISION))


class QuadraticEnergy(torch.nn.Module):
    """E(x, z) = 0.5 y^T P y with y = (x, z) and P = diag(DIAGONAL) + COUPLING (e_0 e_1^T + e_1 e_0^T).

    P's diagonal is a trainable parameter, to check that AIS builds no parameter gradients. Written with
    elementwise operations: a BLAS matmul on these tiny batches is slow when a busy CPU starves its threads.
    """

    def __init__(self) -> None:
        super().__init__()
        self.diagonal = torch.nn.Parameter(torch.tensor(DIAGONAL))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = torch.cat([x, z], dim=-1)
        return 0.5 * (self.diagonal * y**2).sum(dim=-1) + COUPLING * y[:, 0] * y[:, 1]


@pytest.mark.parametrize("kind", ["linear", "sigmoid"])
def test_annealing_schedule_runs_from_zero_to_one(kind: str) -> None:
    betas = annealing_schedule(10, kind)
    assert betas.shape == (11,)
    assert float(betas[0]) == 0.0 and float(betas[-1]) == pytest.approx(1.0, abs=1e-15)
    assert bool((betas.diff() > 0).all())


def test_ais_recovers_the_gaussian_log_partition() -> None:
    energy = QuadraticEnergy()
    result = ais_log_partition(
        energy, DX, DZ, n_chains=500, n_temperatures=200, generator=torch.Generator().manual_seed(0)
    )
    assert result.log_z == pytest.approx(LOG_Z, abs=4 * result.log_z_std_err)
    assert result.ess > 100
    assert 0.3 < result.acceptance < 0.9
    assert energy.diagonal.grad is None


def test_ais_is_not_biased_above_log_z_across_seeds() -> None:
    energy = QuadraticEnergy()
    estimates = torch.tensor(
        [
            ais_log_partition(
                energy, DX, DZ, n_chains=200, n_temperatures=100, generator=torch.Generator().manual_seed(s)
            ).log_z
            for s in range(8)
        ],
        dtype=torch.float64,
    )
    assert float(estimates.mean()) - LOG_Z <= 3 * float(estimates.std()) / math.sqrt(8)
