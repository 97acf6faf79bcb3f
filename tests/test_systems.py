"""The dataset generators against exact answers: quadrature, closed forms and exact identities.

Statistical checks use fixed seeds and a tolerance of 5 standard errors of the sample size.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
import torch
from scipy import integrate, special

from lvebm_lightning.data.systems import (
    DATASETS,
    MB_MINIMA,
    DoubleWell,
    DuffingOscillator,
    GridDensity,
    LinearGaussian,
    Phi4,
    get_dataset,
    grid_log_partition,
    linear_gaussian_ml,
    magnetisation,
    two_point,
)

N_SAMPLES = {"phi4": 4000, "lorenz63": 5000}


@cache
def samples(name: str) -> np.ndarray:
    """The test sample of a dataset, drawn once per session."""
    return get_dataset(name).sample(N_SAMPLES.get(name, 20000), seed=123)


def assert_mean(values: np.ndarray, expected: float, n_se: float = 5.0) -> None:
    """mean(values) equals ``expected`` within ``n_se`` standard errors."""
    values = np.asarray(values, dtype=np.float64)
    se = values.std() / math.sqrt(len(values))
    assert abs(values.mean() - expected) < n_se * se, (values.mean(), expected, se)


def assert_fraction(hits: np.ndarray, p: float, n_se: float = 5.0) -> None:
    """The fraction of true ``hits`` equals the probability ``p`` within ``n_se`` binomial standard errors."""
    se = math.sqrt(p * (1.0 - p) / len(hits))
    assert abs(hits.mean() - p) < n_se * se, (hits.mean(), p, se)


def grid(system: GridDensity, m: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres [m^2, 2] of the system's box and their normalised probabilities [m^2] (float64)."""
    lo, hi = system.box
    axes = [lo_d + (np.arange(m) + 0.5) * (hi_d - lo_d) / m for lo_d, hi_d in zip(lo, hi, strict=True)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
    log_w = -system.energy(torch.from_numpy(points)).numpy()
    w = np.exp(log_w - log_w.max())
    return points, w / w.sum()


DENSITY_NAMES = [name for name in DATASETS if name not in ("lorenz63", "pendulum")]
GRID_NAMES = [name for name, cls in DATASETS.items() if issubclass(cls, GridDensity)]


@pytest.mark.parametrize("name", list(DATASETS))
def test_sample_shape_dtype_and_determinism(name: str) -> None:
    system = get_dataset(name)
    x = system.sample(150, seed=7)
    assert x.shape == (150, system.dim) and x.dtype == np.float32
    assert np.isfinite(x).all()
    np.testing.assert_array_equal(x, system.sample(150, seed=7))
    assert not np.array_equal(x, system.sample(150, seed=8))


def test_get_dataset_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'nope'; valid names: .*double_well.*phi4"):
        get_dataset("nope")


def test_has_density() -> None:
    has_density = [name for name in DATASETS if callable(getattr(get_dataset(name), "energy", None))]
    assert set(has_density) == set(DENSITY_NAMES)


@pytest.mark.parametrize("name", DENSITY_NAMES)
def test_schwinger_dyson_identity(name: str) -> None:
    """<x_i dU/dx_i> = 1 for every coordinate (integration by parts against exp(-U)): samples agree with U."""
    system = get_dataset(name)
    x = torch.from_numpy(samples(name)).double().requires_grad_(True)
    (grad,) = torch.autograd.grad(system.energy(x).sum(), x)
    per_coordinate = (x * grad).detach().numpy()
    if name == "phi4":
        assert_mean(per_coordinate.mean(1), 1.0)
    else:
        for values in per_coordinate.T:
            assert_mean(values, 1.0)


@pytest.mark.parametrize("name", GRID_NAMES)
def test_box_holds_the_mass_and_log_partition_converged(name: str) -> None:
    system = get_dataset(name)
    points, p = grid(system)
    lo, hi = system.box
    m = 1024
    h = (hi - lo) / m
    edge = np.any((points < lo + h) | (points > hi - h), axis=1)
    assert p[edge].max() < 1e-8 * p.max()
    coarse = grid_log_partition(system.energy, system.box, n_points=2**18)
    assert system.log_partition() == pytest.approx(coarse, abs=1e-6)


def test_double_well_well_fraction_and_gaussian_x2() -> None:
    system, x = DoubleWell(), samples("double_well").astype(np.float64)
    f = lambda t: math.exp(-float(system.energy_x1(t)))  # noqa: E731
    z1 = integrate.quad(f, -3.0, 3.0, points=[-1.0, 0.0, 1.0])[0]
    p_left = integrate.quad(f, -3.0, 0.0, points=[-1.0])[0] / z1
    assert p_left == pytest.approx(0.712, abs=1e-3)
    assert_fraction(x[:, 0] < 0.0, p_left)
    assert_mean(x[:, 1], 0.0)
    assert_mean(x[:, 1] ** 2, 1.0)
    assert system.log_partition() == pytest.approx(math.log(z1) + 0.5 * math.log(2 * math.pi), abs=1e-8)


def nearest_minimum(x: np.ndarray) -> np.ndarray:
    return np.argmin(((x[:, None, :] - np.asarray(MB_MINIMA)) ** 2).sum(-1), axis=1)


def test_mueller_brown_basin_occupations_and_log_partition() -> None:
    system, x = get_dataset("mueller_brown"), samples("mueller_brown")
    points, p = grid(system)
    occupation = np.bincount(nearest_minimum(points), weights=p, minlength=3)
    assert occupation.min() > 0.05
    for k in range(3):
        assert_fraction(nearest_minimum(x) == k, occupation[k])
    # log Z against plain Monte Carlo on the box: Z = vol * E_uniform[exp(-U)]
    lo, hi = system.box
    u = lo + (hi - lo) * np.random.default_rng(0).random((2**20, 2))
    w = np.exp(-system.energy(torch.from_numpy(u)).numpy()) * np.prod(hi - lo)
    log_z_mc, se = math.log(w.mean()), w.std() / w.mean() / math.sqrt(len(w))
    assert abs(system.log_partition() - log_z_mc) < 5 * se


def test_eight_gaussians_radius_modes_and_log_partition() -> None:
    system, x = get_dataset("eight_gaussians"), samples("eight_gaussians").astype(np.float64)
    # |x| is Rice(nu = r, s): E|x| = s sqrt(pi/2) L_{1/2}(-t), t = r^2 / (2 s^2)
    s, t = system.std, system.radius**2 / (2 * system.std**2)
    rice_mean = s * math.sqrt(math.pi / 2) * ((1 + t) * special.i0e(t / 2) + t * special.i1e(t / 2))
    assert_mean(np.linalg.norm(x, axis=1), rice_mean)
    mode = np.round(np.arctan2(x[:, 1], x[:, 0]) / (2 * math.pi / 8)).astype(int) % 8
    for k in range(8):
        assert_fraction(mode == k, 1 / 8)
    assert system.log_partition() == pytest.approx(grid_log_partition(system.energy, system.box), abs=1e-8)


def test_oscillator_equipartition_virial_and_log_partition() -> None:
    system, x = DuffingOscillator(), samples("oscillator").astype(np.float64)
    q, p, temp = x[:, 0], x[:, 1], system.temperature
    assert_mean(p, 0.0)
    assert_mean(p**2, temp)
    assert_mean(q**4 - q**2, temp)
    f = lambda t: math.exp(-float(system.potential(t)) / temp)  # noqa: E731
    z_q = integrate.quad(f, -4.0, 4.0, points=[-1.0, 0.0, 1.0])[0]
    q2 = integrate.quad(lambda t: t * t * f(t), -4.0, 4.0, points=[-1.0, 0.0, 1.0])[0] / z_q
    assert_mean(q**2, q2)
    log_z = math.log(z_q) + 0.5 * math.log(2 * math.pi * temp)
    assert system.log_partition() == pytest.approx(log_z, abs=1e-8)


def test_linear_gaussian_covariance_log_partition_and_ml() -> None:
    system, x = LinearGaussian(), samples("linear_gaussian").astype(np.float64)
    c, n = system.cov, len(x)
    s = np.cov(x, rowvar=False, bias=True)
    se = np.sqrt((np.outer(np.diag(c), np.diag(c)) + c**2) / n)  # sd of a Gaussian sample covariance entry
    assert np.all(np.abs(s - c) < 5 * se)
    assert_mean(x[:, 0], system.mu[0])
    assert system.log_partition() == pytest.approx(grid_log_partition(system.energy, system.box), abs=1e-8)

    ml = linear_gaussian_ml(x, dz=1)
    np.testing.assert_allclose(ml.cov, s, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ml.w @ ml.w.T + ml.sigma2 * np.eye(2), s, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ml.mean, x.mean(0))
    assert ml.nll == pytest.approx(0.5 * (2 * (1 + math.log(2 * math.pi)) + np.linalg.slogdet(s)[1]))
    true_nll = system.energy(torch.from_numpy(x)).mean().item() + system.log_partition()
    assert ml.nll <= true_nll


def test_linear_gaussian_ml_beats_other_parameters_when_dz_below_dx_minus_1() -> None:
    """For dx = 3, dz = 1 the ML covariance is not S, but no other W, sigma does better."""
    x = np.random.default_rng(0).multivariate_normal(np.zeros(3), [[3, 1, 0], [1, 2, 0.5], [0, 0.5, 1]], 5000)
    ml = linear_gaussian_ml(x, dz=1)
    s = np.cov(x, rowvar=False, bias=True)
    assert not np.allclose(ml.cov, s)
    rng = np.random.default_rng(1)
    for _ in range(20):
        w = ml.w + 0.1 * rng.standard_normal(ml.w.shape)
        cov = w @ w.T + ml.sigma2 * math.exp(0.1 * rng.standard_normal()) * np.eye(3)
        nll = 0.5 * (3 * math.log(2 * math.pi) + np.linalg.slogdet(cov)[1] + np.trace(np.linalg.inv(cov) @ s))
        assert nll > ml.nll


def test_lorenz63_attractor_range_and_invariant_measure_identities() -> None:
    x, y, z = samples("lorenz63").astype(np.float64).T
    assert np.abs(x).max() < 21 and np.abs(y).max() < 29 and 0 < z.min() and z.max() < 51
    beta = 8.0 / 3.0
    assert_mean(x**2 - beta * z, 0.0)
    assert_mean(x * y - beta * z, 0.0)
    assert_mean(x * y * z - beta * z**2, 0.0)
    assert_mean(x, 0.0)


def test_phi4_energy_matches_the_lattice_sum() -> None:
    system = Phi4()
    phi = torch.randn(3, system.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    side = system.side
    lattice = phi.reshape(3, side, side)
    expected = torch.zeros(3, dtype=torch.float64)
    for i in range(side):
        for j in range(side):
            f = lattice[:, i, j]
            hop = f * (lattice[:, (i + 1) % side, j] + lattice[:, i, (j + 1) % side])
            expected += -2 * system.kappa * hop + f**2 + system.lam * (f**2 - 1) ** 2
    torch.testing.assert_close(system.energy(phi), expected)


def test_phi4_symmetry_bimodality_and_observables() -> None:
    x = samples("phi4").astype(np.float64)
    phi = torch.from_numpy(x)
    m = magnetisation(phi).numpy()
    np.testing.assert_allclose(m, x.mean(1))
    assert_mean(m, 0.0)
    # the ordered phase: two modes near |M| = 1.45, almost nothing near M = 0 (probability per unit of M)
    centre = np.mean(np.abs(m) < 0.25) / 0.5
    peaks = np.mean((np.abs(m) > 1.05) & (np.abs(m) < 1.85)) / 1.6
    assert centre < 0.05 * peaks
    assert_fraction(m > 0, 0.5)
    g = two_point(phi).numpy()
    assert g.shape == (Phi4().side // 2 + 1,)
    assert g[0] == pytest.approx(np.mean(x**2) - np.mean(x) ** 2)
    assert g[0] > g[1] > g[2] > 0
    disordered = magnetisation(torch.from_numpy(Phi4(kappa=0.2).sample(2000, seed=5)).double()).numpy()
    assert np.mean(np.abs(disordered) < 0.25) > 0.7  # one mode at M = 0
    with pytest.raises(ValueError, match="square lattice"):
        two_point(torch.zeros(2, 15))


def test_observables_on_exact_samples_match_exact_values() -> None:
    x = torch.from_numpy(samples("double_well"))
    assert_fraction(x[:, 0].numpy() > 0, 1 - 0.712, n_se=5.0)
    assert float(DoubleWell().observables(x)["right_well_mass"]) == pytest.approx(float((x[:, 0] > 0).double().mean()))
    osc = DuffingOscillator()
    obs = osc.observables(torch.from_numpy(samples("oscillator")))
    p2 = samples("oscillator")[:, 1].astype(np.float64) ** 2
    assert abs(float(obs["kinetic_temperature"]) - osc.temperature) < 5 * p2.std() / math.sqrt(len(p2))
    assert abs(float(obs["right_well_mass"]) - 0.5) < 5 * math.sqrt(0.25 / len(p2))
    phi = torch.from_numpy(samples("phi4"))
    obs = Phi4().observables(phi)
    m = magnetisation(phi.double())
    assert float(obs["abs_magnetisation"]) == pytest.approx(float(m.abs().mean()))
    assert float(obs["susceptibility"]) > 0
    assert float(obs["g1"]) > float(obs["g2"]) > 0
    lorenz = get_dataset("lorenz63")
    obs = lorenz.observables(torch.from_numpy(samples("lorenz63")))
    assert float(obs["mean_x2"]) == pytest.approx(lorenz.beta * float(obs["mean_z"]), rel=0.05)


def test_a_data_module_built_again_in_one_process_gets_the_same_data_and_cannot_change_it() -> None:
    """The data module remembers generated data sets per process (paper.py builds each one per method): a second
    build equals a fresh generation exactly, a change to one build's arrays does not reach the next, and another
    seed, size or option is generated anew."""
    from lvebm_lightning.data import datamodule

    def build(**kw):
        return datamodule.LVEBMDataModule("pendulum", n_train=40, n_val=8, n_test=8, **kw).prepare()

    datamodule._GENERATED.clear()
    first = build()
    first.raw["train"].add_(1.0)
    first.latents["train"].add_(1.0)
    second = build()
    fresh_x, fresh_latents = get_dataset("pendulum").sample_with_latents(56, seed=0)
    assert torch.equal(second.raw["train"], torch.from_numpy(fresh_x[:40]))
    assert torch.equal(second.latents["train"], torch.from_numpy(fresh_latents[:40]))
    assert not torch.equal(build(seed=1).raw["train"], second.raw["train"])
    other = build(options={"noise": 0.2})
    assert not torch.equal(other.raw["train"], second.raw["train"])
    assert len(datamodule._GENERATED) == 3
    build(options={"noise": 0.05})  # the default spelled out: the same system, the same entry
    assert len(datamodule._GENERATED) == 3
