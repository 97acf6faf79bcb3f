"""Dataset generators: physical systems and 2-D toys, each with a fixed seed and a documented formula.

Every dataset is a frozen dataclass (its fields are the documented parameters) with

- ``name`` and ``dim`` (dx),
- ``sample(n, seed) -> np.ndarray`` of shape [n, dx], float32, a deterministic function of ``seed``,
- where the density is known, ``energy(x)``: U(x) in units of kT, [B, dx] -> [B], so that
  p(x) = exp(-U(x)) / Z, and for dx <= 3 also ``box`` (lower and upper corners holding all but a negligible
  part of the mass) and ``log_partition()`` (log Z), so that the exact negative log-likelihood is
  -log p(x) = U(x) + log Z.

``DATASETS`` maps each name to its class; ``get_dataset(name)`` builds one with the documented defaults.
Samples are in the system's own coordinates; standardisation happens in the data module.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch
from torch import Tensor

from lvebm_lightning.metrics.quadrature import log_partition

Box = tuple[np.ndarray, np.ndarray]
Potential = Callable[[Tensor], Tensor]
"""A dataset's potential U(x) in units of kT: x ``[B, dx]`` to ``[B]``."""


class System(ABC):
    """A dataset generator: ``sample(n, seed)`` returns float32 [n, dim], deterministic given ``seed``."""

    name: ClassVar[str]

    @property
    @abstractmethod
    def dim(self) -> int:
        """dx, the number of coordinates of one sample."""

    @abstractmethod
    def sample(self, n: int, seed: int) -> np.ndarray:
        """n samples, [n, dim] float32, drawn with ``np.random.default_rng(seed)``."""

    latent_names: ClassVar[tuple[str, ...]] = ()
    """Names of the hidden variables that generated each sample (empty: none known)."""

    def observables(self, x: Tensor) -> dict[str, Tensor]:
        """Physical observables of an ensemble x [B, dim] (ensemble averages, 0-d tensors), to compare a model's
        samples with the data; none by default."""
        return {}

    def sample_with_latents(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``sample(n, seed)`` and the hidden variables behind each row, [n, len(latent_names)] float64 (None
        when none are known). For evaluation only: training never sees them."""
        return self.sample(n, seed), None


class GridDensity(System):
    """A system with a known density p(x) = exp(-U(x)) / Z in dx <= 3, where Z can be found by quadrature."""

    @abstractmethod
    def energy(self, x: Tensor) -> Tensor:
        """U(x) in units of kT: [B, dx] -> [B], in the dtype and on the device of ``x``."""

    @property
    @abstractmethod
    def box(self) -> Box:
        """(lower, upper) corners, each [dx] float64, outside which the mass is negligible (< 1e-8)."""

    @property
    def dim(self) -> int:
        return len(self.box[0])

    def log_partition(self) -> float:
        """log Z = log integral_box exp(-U(x)) dx by the midpoint rule on a grid of 2^20 points (float64)."""
        return self._grid_log_partition

    @cached_property
    def _grid_log_partition(self) -> float:
        return grid_log_partition(self.energy, self.box)


def grid_log_partition(energy: Potential, box: Box, n_points: int = 2**20) -> float:
    """log integral_box exp(-U(x)) dx by the midpoint rule (``metrics.quadrature.log_partition``), in float64.

    The box [lo, hi] (dx <= 3) is cut into m^dx equal cells, m = round(n_points^(1/dx)), with
    log Z = logsumexp_j(-U(c_j)) + log prod_d h_d over the cell centres c_j, h_d = (hi_d - lo_d) / m. For a
    smooth density that vanishes at the box edges the error falls faster than any power of h.
    """
    lo, hi = (torch.as_tensor(np.asarray(corner), dtype=torch.float64) for corner in box)
    m = round(n_points ** (1.0 / len(lo)))
    return log_partition(lambda x, z: energy(x), len(lo), 0, lo, hi, m, batch_size=2**18).log_z


def _inverse_cdf_sample(energy_1d: Callable[[np.ndarray], np.ndarray], lo: float, hi: float, n: int,
                        rng: np.random.Generator, n_grid: int = 2**16 + 1) -> np.ndarray:
    """Samples of p(t) ∝ exp(-u(t)) on [lo, hi] by inverting the CDF, [n].

    The CDF is the cumulative trapezoid rule of exp(-u) on ``n_grid`` nodes, inverted by linear
    interpolation: the samples are exact for the density that is constant on each cell at the cell's
    trapezoid average, whose CDF differs from p's by O(h^2), h = (hi - lo) / (n_grid - 1) (about 1e-4 here).
    """
    t = np.linspace(lo, hi, n_grid)
    u = energy_1d(t)
    w = np.exp(-(u - u.min()))
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]))])
    return np.interp(rng.random(n), cdf / cdf[-1], t)


def _rejection_sample(energy: Potential, box: Box, n: int, rng: np.random.Generator,
                      chunk: int = 2**18) -> np.ndarray:
    """Exact samples of p(x) ∝ exp(-U(x)) on the box by rejection from the uniform law on it, [n, dx].

    A proposal x is kept with probability exp(-(U(x) - U_min) - margin), where U_min is the minimum of U over
    a 2^20-point grid and margin = 0.1 covers the gap between the grid minimum and the true one. The envelope
    is checked on every proposal: a proposal above it raises instead of biasing the samples.
    """
    lo, hi = np.asarray(box[0], dtype=np.float64), np.asarray(box[1], dtype=np.float64)
    m = round(2 ** (20 / len(lo)))
    axes = [torch.linspace(lo_d, hi_d, m, dtype=torch.float64) for lo_d, hi_d in zip(lo, hi, strict=True)]
    u_min = float(energy(torch.cartesian_prod(*axes).reshape(-1, len(lo))).min())
    margin = 0.1
    kept, n_kept = [], 0
    while n_kept < n:
        x = lo + (hi - lo) * rng.random((chunk, len(lo)))
        log_ratio = -(energy(torch.from_numpy(x)).numpy() - u_min) - margin
        if log_ratio.max() > 0.0:
            raise RuntimeError("rejection envelope violated: U is below its grid minimum by more than 0.1 kT")
        x = x[np.log(rng.random(chunk)) < log_ratio]
        kept.append(x)
        n_kept += len(x)
    return np.concatenate(kept)[:n]


@dataclass(frozen=True)
class DoubleWell(GridDensity):
    """A 2-D Boltzmann double well, p(x) ∝ exp(-U(x)) with U in units of kT:

        U(x) = a (x1^2 - 1)^2 + b x1 + x2^2 / 2,    a = 3, b = 0.5.

    The wells at x1 = -1.02 and x1 = 0.98 meet at the barrier x1 = 0, U = a = 3, which is 3.5 kT above the
    left well and 2.5 kT above the right: the tilt makes the left well about 2b = 1 kT deeper, so it holds
    71.2% of the mass. x2 is an independent N(0, 1).
    log Z = 1.1407 (1-D quadrature of the x1 factor times sqrt(2 pi)).

    Sampling is exact: x1 by inverse-CDF on a 65537-node grid (error O(1e-8), see ``_inverse_cdf_sample``),
    x2 from the Gaussian. The box [-2.5, 2.5] x [-6.5, 6.5] leaves out mass below 1e-9.
    """

    name: ClassVar[str] = "double_well"
    a: float = 3.0
    b: float = 0.5

    def energy_x1(self, x1: np.ndarray | Tensor) -> np.ndarray | Tensor:
        """The x1 part of U, a (x1^2 - 1)^2 + b x1, [B] -> [B] (numpy or torch)."""
        return self.a * (x1**2 - 1.0) ** 2 + self.b * x1

    def energy(self, x: Tensor) -> Tensor:
        return self.energy_x1(x[..., 0]) + 0.5 * x[..., 1] ** 2

    @property
    def box(self) -> Box:
        return np.array([-2.5, -6.5]), np.array([2.5, 6.5])

    def observables(self, x: Tensor) -> dict[str, Tensor]:
        """The mass of the right well, P(x1 > 0) (0.288 exactly)."""
        return {"right_well_mass": (x[:, 0] > 0).double().mean()}

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        x1 = _inverse_cdf_sample(self.energy_x1, -2.5, 2.5, n, rng)
        x2 = rng.standard_normal(n)
        return np.stack([x1, x2], axis=1).astype(np.float32)


_MB_TERMS = (  # (A_k, a_k, b_k, c_k, x0_k, y0_k)
    (-200.0, -1.0, 0.0, -10.0, 1.0, 0.0),
    (-100.0, -1.0, 0.0, -10.0, 0.0, 0.5),
    (-170.0, -6.5, 11.0, -6.5, -0.5, 1.5),
    (15.0, 0.7, 0.6, 0.7, -1.0, 1.0),
)
MB_MINIMA = ((-0.5582, 1.4417), (0.6235, 0.0280), (-0.0500, 0.4667))


def mueller_brown_potential(x: Tensor) -> Tensor:
    """The Müller-Brown potential in its own units, [B, 2] -> [B]:

        V(x, y) = sum_{k=1}^4 A_k exp(a_k (x - x0_k)^2 + b_k (x - x0_k)(y - y0_k) + c_k (y - y0_k)^2)

    with the published parameters (Müller & Brown 1979) A = (-200, -100, -170, 15), a = (-1, -1, -6.5, 0.7),
    b = (0, 0, 11, 0.6), c = (-10, -10, -6.5, 0.7), x0 = (1, 0, -0.5, -1), y0 = (0, 0.5, 1.5, 1).
    Minima (``MB_MINIMA``): V = -146.70 at (-0.558, 1.442), -108.17 at (0.623, 0.028) and -80.77 at
    (-0.050, 0.467).
    """
    v = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
    for amplitude, a, b, c, x0, y0 in _MB_TERMS:
        dx, dy = x[..., 0] - x0, x[..., 1] - y0
        v = v + amplitude * torch.exp(a * dx**2 + b * dx * dy + c * dy**2)
    return v


@dataclass(frozen=True)
class MuellerBrown(GridDensity):
    """The Müller-Brown potential at temperature kT, p(x) ∝ exp(-V(x) / kT), kT = ``temperature`` = 20.

    See ``mueller_brown_potential`` for V. At the often used beta = 0.1 the shallowest basin holds only 0.3%
    of the mass; at kT = 20 the basins of ``MB_MINIMA`` (by steepest descent) hold about 81%, 13%, 6.5%; 1%
    of the mass lies on the plateau V > -20 around them. The box [-3.5, 1.7] x [-1.5, 3.5] takes in that
    plateau (mass outside < 1e-15). Sampling is exact rejection from the uniform law on the box (acceptance
    about 0.5%).
    """

    name: ClassVar[str] = "mueller_brown"
    temperature: float = 20.0

    def energy(self, x: Tensor) -> Tensor:
        return mueller_brown_potential(x) / self.temperature

    @property
    def box(self) -> Box:
        return np.array([-3.5, -1.5]), np.array([1.7, 3.5])

    def sample(self, n: int, seed: int) -> np.ndarray:
        return _rejection_sample(self.energy, self.box, n, np.random.default_rng(seed)).astype(np.float32)


@dataclass(frozen=True)
class EightGaussians(GridDensity):
    """An equal-weight mixture of 8 isotropic Gaussians with centres on a circle:

        p(x) = (1/8) sum_k N(x; m_k, s^2 I),    m_k = r (cos(2 pi k / 8), sin(2 pi k / 8)),  r = 2, s = 0.2,
        U(x) = -log sum_k exp(-|x - m_k|^2 / (2 s^2)),    log Z = log(8 * 2 pi s^2) (exact).

    The box is [-(r + 10 s), r + 10 s]^2.
    """

    name: ClassVar[str] = "eight_gaussians"
    radius: float = 2.0
    std: float = 0.2
    n_modes: ClassVar[int] = 8

    @property
    def centres(self) -> np.ndarray:
        """m_k, [8, 2]."""
        angle = 2.0 * np.pi * np.arange(self.n_modes) / self.n_modes
        return self.radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)

    def energy(self, x: Tensor) -> Tensor:
        m = torch.as_tensor(self.centres, dtype=x.dtype, device=x.device)
        sq = ((x[..., None, :] - m) ** 2).sum(-1)
        return -torch.logsumexp(-sq / (2.0 * self.std**2), dim=-1)

    @property
    def box(self) -> Box:
        half = self.radius + 10.0 * self.std
        return np.array([-half, -half]), np.array([half, half])

    def log_partition(self) -> float:
        return math.log(self.n_modes * 2.0 * math.pi * self.std**2)

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        k = rng.integers(self.n_modes, size=n)
        return (self.centres[k] + self.std * rng.standard_normal((n, 2))).astype(np.float32)


@dataclass(frozen=True)
class Lorenz63(System):
    """Points on the Lorenz-63 attractor, no density known:

        dx/dt = sigma (y - x),   dy/dt = x (rho - z) - y,   dz/dt = x y - beta z,
        sigma = 10, rho = 28, beta = 8/3.

    min(n, n_chains = 1000) trajectories start uniform on [-20, 20]^2 x [0, 50], are integrated by RK4 with
    dt = 0.01, discard a burn-in of 20 time units (the flow contracts volume at rate sigma + 1 + beta = 13.7
    and separates trajectories at about 0.9 per unit time, so they forget their start), then are read every
    2 time units, which leaves consecutive samples of one trajectory nearly independent. Row j comes from
    trajectory j mod n_chains. The attractor lies in |x| < 20, |y| < 28, 0 < z < 50; its invariant measure
    obeys <x^2> = <x y> = beta <z> and <x y z> = beta <z^2> (time averages of d(x^2)/dt, dz/dt, d(z^2)/dt).
    """

    name: ClassVar[str] = "lorenz63"
    sigma: float = 10.0
    rho: float = 28.0
    beta: float = 8.0 / 3.0
    dt: float = 0.01
    n_chains: int = 1000
    burn_in: float = 20.0
    stride: float = 2.0

    @property
    def dim(self) -> int:
        return 3

    def velocity(self, s: np.ndarray) -> np.ndarray:
        """The Lorenz vector field, [B, 3] -> [B, 3]."""
        x, y, z = s[:, 0], s[:, 1], s[:, 2]
        return np.stack([self.sigma * (y - x), x * (self.rho - z) - y, x * y - self.beta * z], axis=1)

    def _rk4(self, s: np.ndarray, n_steps: int) -> np.ndarray:
        h = self.dt
        for _ in range(n_steps):
            k1 = self.velocity(s)
            k2 = self.velocity(s + 0.5 * h * k1)
            k3 = self.velocity(s + 0.5 * h * k2)
            k4 = self.velocity(s + h * k3)
            s = s + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        return s

    def observables(self, x: Tensor) -> dict[str, Tensor]:
        """<z> and <x^2>, tied on the attractor by the exact long-run identity <x^2> = beta <z>."""
        return {"mean_z": x[:, 2].double().mean(), "mean_x2": (x[:, 0].double() ** 2).mean()}

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        n_chains = min(n, self.n_chains)
        s = self._rk4(rng.uniform([-20.0, -20.0, 0.0], [20.0, 20.0, 50.0], size=(n_chains, 3)),
                      round(self.burn_in / self.dt))
        reads = [s]
        for _ in range(math.ceil(n / n_chains) - 1):
            s = self._rk4(s, round(self.stride / self.dt))
            reads.append(s)
        return np.concatenate(reads)[:n].astype(np.float32)


@dataclass(frozen=True)
class DuffingOscillator(GridDensity):
    """Thermal phase space (q, p) of a double-well (Duffing) oscillator at temperature T:

        H(q, p) = p^2 / 2 + q^4 / 4 - q^2 / 2,    p(q, p) ∝ exp(-H / T),  T = 0.25,  U = H / T.

    The barrier at q = 0 is 1/4 = 1 kT above the wells at q = ±1, so q is bimodal with much mass on the
    barrier; p ~ N(0, T) is independent of q. Exact identities: <p^2> = T and <q^4 - q^2> = T (virial).
    Sampling is exact: p from the Gaussian, q by inverse-CDF on a 65537-node grid. The box
    [-2.5, 2.5] x [-3.5, 3.5] leaves out mass below 1e-10.
    """

    name: ClassVar[str] = "oscillator"
    temperature: float = 0.25

    def potential(self, q: np.ndarray | Tensor) -> np.ndarray | Tensor:
        """V(q) = q^4 / 4 - q^2 / 2 (numpy or torch)."""
        return 0.25 * q**4 - 0.5 * q**2

    def energy(self, x: Tensor) -> Tensor:
        return (0.5 * x[..., 1] ** 2 + self.potential(x[..., 0])) / self.temperature

    @property
    def box(self) -> Box:
        return np.array([-2.5, -3.5]), np.array([2.5, 3.5])

    def observables(self, x: Tensor) -> dict[str, Tensor]:
        """The mean energy <H>, the kinetic temperature <p^2> (= T) and the right-well mass P(q > 0) (= 1/2)."""
        q, p = x[:, 0].double(), x[:, 1].double()
        return {
            "mean_energy": (0.5 * p**2 + self.potential(q)).mean(),
            "kinetic_temperature": (p**2).mean(),
            "right_well_mass": (q > 0).double().mean(),
        }

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        q = _inverse_cdf_sample(lambda t: self.potential(t) / self.temperature, -2.5, 2.5, n, rng)
        p = math.sqrt(self.temperature) * rng.standard_normal(n)
        return np.stack([q, p], axis=1).astype(np.float32)


@dataclass(frozen=True)
class Phi4(System):
    """A phi^4 (Ginzburg-Landau) field on a periodic side x side square lattice, dx = side^2 (row-major):

        S(phi) = sum_x [ -2 kappa sum_{mu=1,2} phi_x phi_{x+mu} + phi_x^2 + lam (phi_x^2 - 1)^2 ],
        p(phi) ∝ exp(-S(phi)),    side = 8, kappa = 0.28, lam = 0.022.

    At these couplings the 8 x 8 lattice is in the ordered (broken-symmetry) phase: the magnetisation
    M = mean_x phi_x has two well-separated modes near ±1.45 with almost no mass near 0 (measured: 0.3% of draws
    with |M| < 0.3), so the sign of M is a hidden two-valued variable that local dynamics almost never changes.
    ``kappa = 0.2`` gives the disordered phase (one mode at M = 0, |M| about 0.15; ``conf/data/phi4_disordered``).
    The density is known up to Z; dx = 64 is beyond quadrature, so there is no box or log Z.

    Sampling: min(n, n_chains = 1000) independent chains start from phi ~ N(0, I) and run Hybrid Monte Carlo
    (momenta N(0, I), leapfrog with step eps = 0.2 over n_leapfrog = 8 steps, Metropolis test on the total
    energy; measured acceptance 0.96 ordered, 0.98 disordered), each trajectory followed by the exact global
    flip phi -> -phi with probability 1/2 (S is even), which puts exactly half the mass on each sign. After a
    burn-in of 200 trajectories a chain is read every 20 trajectories; the measured integrated autocorrelation
    time of |M| (the slowest observable the flip does not decorrelate) is 4.4 trajectories ordered and 1.8
    disordered, so reads are nearly independent. Row j comes from chain j mod n_chains. Exact checks: <M> = 0 by
    symmetry, and the Schwinger-Dyson identity <phi_x dS/dphi_x> = 1 at every site.
    """

    name: ClassVar[str] = "phi4"
    side: int = 8
    kappa: float = 0.28
    lam: float = 0.022
    step: float = 0.2
    n_leapfrog: int = 8
    n_chains: int = 1000
    burn_in: int = 200
    thin: int = 20

    @property
    def dim(self) -> int:
        return self.side**2

    def energy(self, x: Tensor) -> Tensor:
        phi = x.reshape(*x.shape[:-1], self.side, self.side)
        hop = phi * (phi.roll(-1, -1) + phi.roll(-1, -2))
        site = -2.0 * self.kappa * hop + phi**2 + self.lam * (phi**2 - 1.0) ** 2
        return site.sum((-1, -2))

    def _action(self, phi: np.ndarray) -> np.ndarray:
        hop = phi * (np.roll(phi, -1, 1) + np.roll(phi, -1, 2))
        return (-2.0 * self.kappa * hop + phi**2 + self.lam * (phi**2 - 1.0) ** 2).sum((1, 2))

    def _force(self, phi: np.ndarray) -> np.ndarray:
        """-dS/dphi, [n, side, side]."""
        nb = np.roll(phi, 1, 1) + np.roll(phi, -1, 1) + np.roll(phi, 1, 2) + np.roll(phi, -1, 2)
        return 2.0 * self.kappa * nb - 2.0 * phi - 4.0 * self.lam * phi * (phi**2 - 1.0)

    def _trajectories(self, phi: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """n HMC trajectories (each followed by the global flip with probability 1/2) of every chain."""
        eps = self.step
        for _ in range(n):
            p = rng.standard_normal(phi.shape)
            h_old = self._action(phi) + 0.5 * (p**2).sum((1, 2))
            q = phi
            p = p + 0.5 * eps * self._force(q)
            for step in range(self.n_leapfrog):
                q = q + eps * p
                p = p + (eps if step < self.n_leapfrog - 1 else 0.5 * eps) * self._force(q)
            h_new = self._action(q) + 0.5 * (p**2).sum((1, 2))
            accept = np.log(rng.random(len(phi))) < h_old - h_new
            phi = np.where(accept[:, None, None], q, phi)
            phi = phi * rng.choice([-1.0, 1.0], size=(len(phi), 1, 1))
        return phi

    def observables(self, x: Tensor) -> dict[str, Tensor]:
        """<|M|>, the susceptibility chi = V (<M^2> - <|M|>^2), the connected G(1), G(2) (``two_point``), the share
        of configurations with M > 0 (1/2 exactly) and the mean action per site."""
        m = magnetisation(x.double())
        g = two_point(x.double())
        return {
            "abs_magnetisation": m.abs().mean(),
            "susceptibility": self.dim * ((m**2).mean() - m.abs().mean() ** 2),
            "g1": g[1],
            "g2": g[2],
            "positive_share": (m > 0).double().mean(),
            "action_per_site": self.energy(x.double()).mean() / self.dim,
        }

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        n_chains = min(n, self.n_chains)
        phi = self._trajectories(rng.standard_normal((n_chains, self.side, self.side)), self.burn_in, rng)
        reads = [phi]
        for _ in range(math.ceil(n / n_chains) - 1):
            phi = self._trajectories(phi, self.thin, rng)
            reads.append(phi)
        return np.concatenate(reads)[:n].reshape(n, self.dim).astype(np.float32)


def magnetisation(phi: Tensor) -> Tensor:
    """M = (1/V) sum_x phi_x, the mean field of each configuration, [B, V] -> [B]."""
    return phi.mean(-1)


def two_point(phi: Tensor) -> Tensor:
    """The connected two-point function of a periodic side x side lattice field, [B, V] -> [side // 2 + 1].

        G(r) = mean_{configs, x, mu} phi_x phi_{x + r mu} - phibar^2,    r = 0 .. side // 2,

    with mu over both lattice axes and phibar the mean of phi over configurations and sites (so G is the
    connected correlation <phi_x phi_y> - <phi_x><phi_y> at |x - y| = r along an axis). G(0) is the variance
    of one site; G(r) = G(side - r) by periodicity, so larger r add nothing.
    """
    side = math.isqrt(phi.shape[-1])
    if side * side != phi.shape[-1]:
        raise ValueError(f"two_point needs a square lattice, got {phi.shape[-1]} sites")
    field = phi.reshape(-1, side, side)
    mean = field.mean()
    g = [(field * (field.roll(r, 1) + field.roll(r, 2))).mean() / 2.0 - mean**2 for r in range(side // 2 + 1)]
    return torch.stack(g)


@dataclass(frozen=True)
class LinearGaussian(GridDensity):
    """The linear-Gaussian hierarchical model (probabilistic PCA):

        z ~ N(0, I_dz),   x = W z + mu + sigma eps,  eps ~ N(0, I_dx),
        so x ~ N(mu, C) with C = W W^T + sigma^2 I,
        U(x) = (x - mu)^T C^{-1} (x - mu) / 2,    log Z = log det(2 pi C) / 2 (exact),

    with W = [[1.5], [1.0]] (dx = 2, dz = 1), mu = (0.5, -0.5), sigma = 0.3: an elongated cloud, principal
    variances 3.34 and 0.09. Its maximum-likelihood answer is in closed form, see ``linear_gaussian_ml``.
    The box is mu ± 8 sqrt(diag C).
    """

    name: ClassVar[str] = "linear_gaussian"
    w: tuple[tuple[float, ...], ...] = ((1.5,), (1.0,))
    mu: tuple[float, ...] = (0.5, -0.5)
    sigma: float = 0.3

    @property
    def cov(self) -> np.ndarray:
        """C = W W^T + sigma^2 I, [dx, dx]."""
        w = np.asarray(self.w)
        return w @ w.T + self.sigma**2 * np.eye(len(w))

    def energy(self, x: Tensor) -> Tensor:
        precision = torch.as_tensor(np.linalg.inv(self.cov), dtype=x.dtype, device=x.device)
        d = x - torch.as_tensor(self.mu, dtype=x.dtype, device=x.device)
        return 0.5 * ((d @ precision) * d).sum(-1)

    @property
    def box(self) -> Box:
        mu, half = np.asarray(self.mu), 8.0 * np.sqrt(np.diag(self.cov))
        return mu - half, mu + half

    def log_partition(self) -> float:
        return 0.5 * float(np.linalg.slogdet(2.0 * np.pi * self.cov)[1])

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        w = np.asarray(self.w)
        z = rng.standard_normal((n, w.shape[1]))
        eps = rng.standard_normal((n, w.shape[0]))
        return (z @ w.T + np.asarray(self.mu) + self.sigma * eps).astype(np.float32)


@dataclass(frozen=True)
class Pendulum(System):
    """Noisy trajectories of a nonlinear pendulum, each with its own energy and phase (hidden truth):

        theta'' = -omega0^2 sin theta,   omega0 = 1,
        H = theta'^2 / 2 + omega0^2 (1 - cos theta)  (conserved; libration below H_sep = 2 omega0^2),

    Datum i draws H_i ~ U[h_min, h_max] = U[0.1, 1.8] (amplitude theta_max = arccos(1 - H / omega0^2), 0.45 to
    2.69 rad) and a phase phi_i ~ U[0, 2 pi). Its trajectory starts at the turning point (theta_max, 0), runs for
    tau_i = phi_i T(H_i) / (2 pi), with the exact period T(H) = 4 K(m) / omega0, m = H / H_sep (K the complete
    elliptic integral of the first kind), and is then observed at m_obs = 16 times tau_i + j dt_obs, j = 0..15,
    dt_obs = 0.5, with independent noise N(0, noise^2), noise = 0.05: x_i = (theta(t_0) + e_0, ..., theta(t_15)
    + e_15), dx = 16. The ODE is integrated by RK4 with step h = 0.01 (dt_obs and tau are rounded to multiples of
    h; over the longest trajectory the RK4 energy drift is below 1e-8 relative). The hidden truth of each datum
    is (H_i, phi_i) (``sample_with_latents``); the phase is an angle, so probes should use cos and sin of it.
    """

    name: ClassVar[str] = "pendulum"
    latent_names: ClassVar[tuple[str, ...]] = ("energy", "phase")
    n_obs: int = 16
    dt_obs: float = 0.5
    omega0: float = 1.0
    h_min: float = 0.1
    h_max: float = 1.8
    noise: float = 0.05
    dt: float = 0.01

    @property
    def dim(self) -> int:
        return self.n_obs

    def period(self, energy: np.ndarray) -> np.ndarray:
        """T(H) = 4 K(H / H_sep) / omega0, the exact libration period, [n] -> [n]."""
        from scipy.special import ellipk

        return 4.0 * ellipk(energy / (2.0 * self.omega0**2)) / self.omega0

    def _acceleration(self, theta: np.ndarray) -> np.ndarray:
        return -(self.omega0**2) * np.sin(theta)

    @property
    def stride(self) -> int:
        """RK4 steps between two observations."""
        return round(self.dt_obs / self.dt)

    def start_step(self, energy: np.ndarray, phase: np.ndarray) -> np.ndarray:
        """The RK4 step at which each trajectory's first observation falls, [n] -> [n] int."""
        return np.rint(phase / (2.0 * np.pi) * self.period(energy) / self.dt).astype(np.int64)

    def _rk4_step(self, theta: np.ndarray, omega: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = self.dt
        k1t, k1w = omega, self._acceleration(theta)
        k2t, k2w = omega + 0.5 * h * k1w, self._acceleration(theta + 0.5 * h * k1t)
        k3t, k3w = omega + 0.5 * h * k2w, self._acceleration(theta + 0.5 * h * k2t)
        k4t, k4w = omega + h * k3w, self._acceleration(theta + h * k3t)
        theta_next = theta + (h / 6.0) * (k1t + 2.0 * k2t + 2.0 * k3t + k4t)
        return theta_next, omega + (h / 6.0) * (k1w + 2.0 * k2w + 2.0 * k3w + k4w)

    def paths(self, energy: np.ndarray, n_steps: int) -> np.ndarray:
        """The angle at every RK4 step 0..n_steps from the turning point, [n] -> [n, n_steps + 1]."""
        theta = np.arccos(1.0 - energy / self.omega0**2)
        omega = np.zeros_like(theta)
        out = np.empty((len(energy), n_steps + 1))
        for t in range(n_steps + 1):
            out[:, t] = theta
            theta, omega = self._rk4_step(theta, omega)
        return out

    def trajectories(self, energy: np.ndarray, phase: np.ndarray) -> np.ndarray:
        """Noise-free angles [n, n_obs] of the pendulums with energies and phases [n] (RK4, step dt)."""
        start = self.start_step(energy, phase)
        theta = np.arccos(1.0 - energy / self.omega0**2)
        omega = np.zeros_like(theta)
        out = np.empty((len(energy), self.n_obs))
        for t in range(int(start.max()) + (self.n_obs - 1) * self.stride + 1):
            offset = t - start
            read = (offset >= 0) & (offset % self.stride == 0) & (offset // self.stride < self.n_obs)
            out[read, offset[read] // self.stride] = theta[read]
            theta, omega = self._rk4_step(theta, omega)
        return out

    def sample_with_latents(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        energy = rng.uniform(self.h_min, self.h_max, n)
        phase = rng.uniform(0.0, 2.0 * np.pi, n)
        x = self.trajectories(energy, phase) + self.noise * rng.standard_normal((n, self.n_obs))
        return x.astype(np.float32), np.stack([energy, phase], axis=1)

    def sample(self, n: int, seed: int) -> np.ndarray:
        return self.sample_with_latents(n, seed)[0]

    def trajectory_energy(self, x: Tensor) -> Tensor:
        """An energy estimate per trajectory, [B, n_obs] -> [B]: the mean over interior times j of
        theta_dot_j^2 / 2 + omega0^2 (1 - cos theta_j) with theta_dot_j = (theta_{j+1} - theta_{j-1}) / (2 dt_obs).
        Applied alike to data and model samples; a biased estimator of H (the central difference at dt_obs = 0.5
        underestimates the speed), so compare its distributions, not its values with H."""
        theta = x[:, 1:-1]
        speed = (x[:, 2:] - x[:, :-2]) / (2.0 * self.dt_obs)
        return (0.5 * speed**2 + self.omega0**2 * (1.0 - torch.cos(theta))).mean(-1)

    def observables(self, x: Tensor) -> dict[str, Tensor]:
        """Mean and standard deviation of ``trajectory_energy`` over the ensemble."""
        e = self.trajectory_energy(x.double())
        return {"mean_energy": e.mean(), "std_energy": e.std()}


class LinearGaussianML(NamedTuple):
    """The maximum-likelihood linear-Gaussian model of a data set (see ``linear_gaussian_ml``)."""

    mean: np.ndarray
    """mu_ML = the sample mean, [dx]."""
    w: np.ndarray
    """W_ML, [dx, dz] (unique up to a rotation of z; here the rotation is the identity)."""
    sigma2: float
    """sigma^2_ML."""
    cov: np.ndarray
    """C_ML = W_ML W_ML^T + sigma^2_ML I, the ML covariance of x, [dx, dx]."""
    nll: float
    """The mean negative log-likelihood of the data under N(mu_ML, C_ML), in nats per datum."""


def linear_gaussian_ml(x: np.ndarray, dz: int = 1) -> LinearGaussianML:
    """The exact maximum-likelihood fit of the linear-Gaussian model with dz latents to data x [N, dx].

    With S the sample covariance (divided by N) and eigenpairs (l_j, u_j) of S in decreasing order
    (Tipping & Bishop 1999):

        mu_ML = mean(x),   sigma^2_ML = mean_{j > dz} l_j,   W_ML = U_dz (L_dz - sigma^2_ML I)^{1/2},
        NLL = (dx log 2 pi + log det C_ML + tr(C_ML^{-1} S)) / 2.

    For dx = 2, dz = 1 (``LinearGaussian``'s default) the model can express any covariance, so C_ML = S:
    the ML model is N(sample mean, sample covariance) with NLL = (dx (1 + log 2 pi) + log det S) / 2. An
    LVEBM fitted by maximum likelihood to these data should reproduce that x-marginal: its samples should
    have the training set's mean and covariance, and its training NLL should approach ``nll``, the best any
    Gaussian achieves; on held-out data the true density's NLL, U(x) + log Z, is the floor.
    """
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(0)
    s = np.cov(x, rowvar=False, bias=True)
    dx = s.shape[0]
    eigval, eigvec = np.linalg.eigh(s)
    eigval, eigvec = eigval[::-1], eigvec[:, ::-1]
    sigma2 = float(eigval[dz:].mean())
    w = eigvec[:, :dz] * np.sqrt(np.maximum(eigval[:dz] - sigma2, 0.0))
    cov = w @ w.T + sigma2 * np.eye(dx)
    nll = 0.5 * (dx * np.log(2.0 * np.pi) + np.linalg.slogdet(cov)[1] + np.trace(np.linalg.solve(cov, s)))
    return LinearGaussianML(mean=mean, w=w, sigma2=sigma2, cov=cov, nll=float(nll))


DATASETS: dict[str, type[System]] = {
    cls.name: cls
    for cls in (
        DoubleWell, MuellerBrown, EightGaussians, Lorenz63, DuffingOscillator, Phi4, LinearGaussian, Pendulum,
    )
}


def get_dataset(name: str, **options: Any) -> System:
    """The dataset ``name`` of ``DATASETS`` with its documented default parameters, ``options`` overriding them."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    cls = DATASETS[name]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(
            f"dataset {name!r} has no parameter {unknown[0]!r} (data.options); its parameters: "
            f"{', '.join(sorted(known))}"
        )
    return cls(**options)
