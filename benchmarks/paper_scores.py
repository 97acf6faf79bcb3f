"""The scores of ``benchmarks/paper.py`` beyond what training's test logs: latents, reconstruction, physics.

Every function takes a trained model (``inference.LoadedModel``), the run's own data module (raw splits in data
units, the hidden truth in ``latents``) and the run's budget, and returns a dict of plain floats. Everything is on
the test split, which training never saw; the hidden truth is read here and nowhere in training.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional import mean_squared_error

from benchmarks.flow import flow_conditional
from lvebm_lightning.data.pendulum_posterior import pendulum_posterior
from lvebm_lightning.data.systems import GridDensity, Phi4, linear_gaussian_ml, magnetisation
from lvebm_lightning.inference import LoadedModel, infer, reconstruct, sample
from lvebm_lightning.metrics import choose_box, elbo, log_marginal
from lvebm_lightning.metrics.fitted_encoder import encoder_bounds, fit_encoder
from lvebm_lightning.metrics.physical import covariance_error, free_energy_spread, histogram_tv, tv_floor, two_point_z
from lvebm_lightning.metrics.reconstruction import central_coverage, cv_knn_r2, energy_score, knn_predict

MAG_RANGE = (-3.0, 3.0)
"""Bins of the phi4 magnetisation histogram (the ordered modes sit near +-1.45)."""


def truth(data: Any, x: Tensor) -> Tensor | None:
    """The hidden variables a latent should carry, ``[B, m]``, for test rows x: pendulum (energy, cos phase,
    sin phase); phi4 the sign of the magnetisation; None elsewhere."""
    if data.name == "pendulum":
        h, phase = data.latents["test"][: len(x), 0], data.latents["test"][: len(x), 1]
        return torch.stack([h, phase.cos(), phase.sin()], dim=1).double()
    if data.name == "phi4":
        return magnetisation(x.double()).sign().unsqueeze(1)
    return None


def principal_components(train: Tensor, x: Tensor, k: int) -> Tensor:
    """x projected on the first k principal components of the training data, ``[B, k]``."""
    centred = train.double() - train.double().mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return (x.double() - train.double().mean(0)) @ v[:k].T


def reference_scores(data: Any, budget: Any, hidden: list[int] | None, dz: int) -> dict[str, float]:
    """Per dataset, method-free references: the PCA probe of the hidden truth and the k-NN reconstruction."""
    out: dict[str, float] = {}
    train, test = data.raw["train"], data.raw["test"]
    x = test[: budget.n_probe]
    target = truth(data, x)
    if target is not None:
        out["r2_pca"] = float(cv_knn_r2(principal_components(train, x, max(dz, 1)), target)[0])
    if hidden:
        out.update(knn_reconstruction(train, test[: budget.n_recon], hidden, budget.recon_samples))
    if data.name == "pendulum":
        out.update(bayes_scores(data, x, test[: budget.n_recon], hidden, budget.recon_samples))
    return out


def bayes_scores(data: Any, probed: Tensor, test: Tensor, hidden: list[int], n_samples: int) -> dict[str, float]:
    """The limit where the generator is known (the pendulum, ``data.pendulum_posterior``): the Bayes-optimal
    reconstruction of the hidden coordinates (``bayes_recon_*``) and the R^2 ceiling of latent recovery, the R^2 of
    the hidden energy by its exact posterior mean given the whole datum (``r2_bayes``)."""
    generator = torch.Generator().manual_seed(0)
    out: dict[str, float] = {}
    if hidden:
        observed = torch.ones(test.shape[1], dtype=torch.bool)
        observed[hidden] = False
        post = pendulum_posterior(data.system, test, observed, n_samples=n_samples, generator=generator)
        scores = recon_scores(post.samples[:, :, hidden], post.mean[:, hidden], test[:, hidden].double())
        out.update({f"bayes_{k}": v for k, v in scores.items()})
    whole = pendulum_posterior(data.system, probed, torch.ones(probed.shape[1], dtype=torch.bool), n_samples=1,
                               generator=generator)
    energy = truth(data, probed)[:, 0]  # E[H | x] is the least-squares predictor of H: no probe scores above it
    out["r2_bayes"] = float(1.0 - ((whole.energy - energy) ** 2).mean() / energy.var(unbiased=False))
    return out


def knn_reconstruction(train: Tensor, test: Tensor, hidden: list[int], n_samples: int) -> dict[str, float]:
    """The k-NN regression from observed to hidden coordinates fitted on training data: RMSE of the mean of the
    10 nearest neighbours, and ES / 90% coverage of the hidden values of the ``n_samples`` nearest as samples."""
    observed = [j for j in range(train.shape[1]) if j not in hidden]
    tr_o, tr_h = train[:, observed].double(), train[:, hidden].double()
    mean = knn_predict(tr_o, tr_h, test[:, observed].double(), k=10)
    return recon_scores(nearest_hidden(train, test, hidden, n_samples), mean, test[:, hidden].double())


def nearest_hidden(train: Tensor, test: Tensor, hidden: list[int], n: int) -> Tensor:
    """The hidden coordinates ``[B, n, h]`` of the n training rows nearest to each test row in its observed
    coordinates (standardised by the training data's spread)."""
    observed = [j for j in range(train.shape[1]) if j not in hidden]
    tr_o = train[:, observed].double()
    scale = tr_o.std(0).clamp_min(1e-12)
    nearest = torch.cdist(test[:, observed].double() / scale, tr_o / scale).topk(n, largest=False).indices
    return train[:, hidden].double()[nearest]


def flow_reconstruction(
    flow: torch.nn.Module, mean: Tensor, std: Tensor, train: Tensor, test: Tensor, hidden: list[int], budget: Any,
    seed: int,
) -> dict[str, float]:
    """The flow sampled conditionally (``benchmarks.flow.flow_conditional``: MALA on its exact log density over
    the hidden coordinates, the observed ones fixed), ``budget.recon_samples`` chains per test row started at the
    hidden values of the nearest training rows (the k-NN imputer's samples), ``budget.flow_chain_steps`` steps
    after a warm-up of half as many that tunes h."""
    starts = nearest_hidden(train, test, hidden, budget.recon_samples).float()
    samples = flow_conditional(flow, mean, std, test.float(), hidden, starts, budget.flow_chain_steps, seed).double()
    return recon_scores(samples, samples.mean(1), test[:, hidden].double())


def recon_scores(samples: Tensor, mean: Tensor, target: Tensor) -> dict[str, float]:
    """RMSE of ``mean`` ``[B, h]``, mean energy score and 90% central coverage of ``samples`` ``[B, S, h]``."""
    return {
        "recon_rmse": float(mean_squared_error(mean.contiguous(), target.contiguous(), squared=False)),
        "recon_es": float(energy_score(samples, target).mean()),
        "recon_cov90": float(central_coverage(samples, target, 0.9)),
    }


def elbo_gaps(
    model: LoadedModel, data: Any, budget: Any, seed: int, chain_steps: tuple[int, ...] | None = None,
    starts: tuple[str, ...] = ("prior",),
) -> tuple[dict[tuple[str, int], Tensor], dict[str, Tensor]]:
    """Per-datum particle ELBO minus the ELBO of a Gaussian encoder fitted to the same frozen energy (their
    difference needs no log Z), ``[n_probe]`` for each chain start (``inference.infer``'s ``start``: ``prior``,
    ``neighbours``) and posterior chain length in ``chain_steps`` (default: the budget's), K fresh chains per test
    datum; and the posterior particles of each start at the last chain length. Every particle ELBO draws from the
    same stream, so the starts and lengths are compared on common random numbers."""
    module = model.module
    x = data.raw["test"][: budget.n_probe]
    x_std = module.to_standard_units(x)
    gen = torch.Generator().manual_seed(seed)
    train_std = module.to_standard_units(data.raw["train"][: budget.encoder_data])
    fitted = fit_encoder(module.energy, train_std, model.dz, max_steps=budget.encoder_steps, generator=gen)
    encoder, _ = encoder_bounds(module.energy, fitted.encoder, x_std, 0.0, budget.elbo_samples, gen)
    gaps: dict[tuple[str, int], Tensor] = {}
    particles: dict[str, Tensor] = {}
    for start in starts:
        for steps in chain_steps or (budget.chain_steps,):
            z = torch.from_numpy(infer(model, x, budget.n_particles, n_steps=steps, seed=seed, start=start))
            bound = elbo(module.energy, x_std, z, 0.0, budget.elbo_samples, torch.Generator().manual_seed(seed))
            gaps[start, steps] = bound.elbo - encoder
            particles[start] = z
    return gaps, particles


def latent_scores(model: LoadedModel, data: Any, budget: Any, seed: int) -> dict[str, float]:
    """Posterior of the test data by K fresh chains: the particle ELBO against the fitted encoder's (``elbo_gaps``;
    mean, its standard error and the median over test data), and the k-NN probe of the hidden truth. A model of the
    persistent method starts its chains from the stored particles of the nearest training data (its store
    amortises inference, ``particles.starts``), every other from N(0, I); the method's gain from N(0, I)
    is reported beside (``elbo_gain_prior``)."""
    module, out = model.module, {}
    x = data.raw["test"][: budget.n_probe]
    x_std = module.to_standard_units(x)
    starts = ("neighbours", "prior") if model.particles is not None else ("prior",)
    gaps, particles = elbo_gaps(model, data, budget, seed, starts=starts)
    gap, z = gaps[starts[0], budget.chain_steps], particles[starts[0]]
    out.update(elbo_gain=float(gap.mean()), elbo_gain_se=float(gap.std() / math.sqrt(len(gap))),
               elbo_gain_median=float(gap.median()), elbo_start=starts[0])
    if len(starts) > 1:
        prior = gaps["prior", budget.chain_steps]
        out.update(elbo_gain_prior=float(prior.mean()), elbo_gain_prior_se=float(prior.std() / math.sqrt(len(prior))))
    target = truth(data, x)
    if target is not None:
        out["r2_posterior"] = float(cv_knn_r2(z.mean(1), target)[0])
        if getattr(module.posterior, "trainable", False):
            with torch.no_grad():
                mu, _ = module.posterior(x_std)
            out["r2_encoder"] = float(cv_knn_r2(mu, target)[0])
    return out


def reconstruction_scores(model: LoadedModel, data: Any, budget: Any, hidden: list[int], seed: int) -> dict[str, float]:
    """Conditional samples of the hidden coordinates of test data given the rest (``inference.reconstruct``)."""
    test = data.raw["test"][: budget.n_recon]
    partial = test.numpy().copy()
    partial[:, hidden] = np.nan
    out = reconstruct(model, partial, budget.recon_samples, n_steps=budget.chain_steps, seed=seed)
    samples = torch.from_numpy(out["samples"][:, :, hidden]).double()
    return recon_scores(samples, torch.from_numpy(out["mean"][:, hidden]).double(), test[:, hidden].double())


def model_log_density(model: LoadedModel, x: Tensor, seed: int) -> Tensor:
    """log p_model(x) up to a constant ``[B]`` (standardised units: the Jacobian is a constant too), the latent
    integrated out by quadrature on a box around the model's own z samples (dz <= 2)."""
    module = model.module
    x_std = module.to_standard_units(x)
    if model.dz == 0:
        return log_marginal(module.energy, x_std, 0, torch.empty(0), torch.empty(0))
    _, z = sample(model, 1000, pairs=True, seed=seed)
    lo, hi = choose_box(torch.from_numpy(z).double(), margin=0.5)
    return log_marginal(module.energy, x_std, model.dz, lo.float(), hi.float(), 256 if model.dz == 1 else 48)


def is_boltzmann(data: Any) -> bool:
    """Whether the system's true density is known up to Z (the free-energy spread applies)."""
    return isinstance(data.system, (GridDensity, Phi4))


def physics_scores(
    data: Any, x_model: Tensor, log_p_model: Tensor | None, budget: Any,
) -> dict[str, float]:
    """The physical comparisons of model samples ``[n, dx]`` (data units) with the test data: the free-energy
    spread (Boltzmann systems, given log p_model of the first n_probe test rows), and per system its observable."""
    system, out = data.system, {}
    test, train = data.raw["test"], data.raw["train"]
    if log_p_model is not None and is_boltzmann(data):
        x = test[: len(log_p_model)]
        out["fe_spread"] = float(free_energy_spread(log_p_model, -system.energy(x.double())))
    n = min(len(x_model), len(test))
    if data.name == "phi4":
        m_model, m_data = magnetisation(x_model[:n].double()), magnetisation(test[:n].double())
        out["mag_tv"] = float(histogram_tv(m_model, m_data, *MAG_RANGE))
        out["mag_tv_floor"] = float(tv_floor(m_model, m_data, *MAG_RANGE))
        out["positive_share"] = float((m_model > 0).double().mean())
        out["g_z"] = float(two_point_z(x_model[:n], test[:n])[0])
    elif data.name == "pendulum":
        e_model = system.trajectory_energy(x_model[:n].double()).sort().values
        e_data = system.trajectory_energy(test[:n].double()).sort().values
        e_ref = system.trajectory_energy(train[:n].double()).sort().values
        out["energy_w1_ratio"] = float((e_model - e_data).abs().mean() / (e_ref - e_data).abs().mean())
    elif data.name == "linear_gaussian":
        cov = torch.from_numpy(linear_gaussian_ml(train.numpy()).cov)
        out["cov_error"] = float(covariance_error(x_model[:n], cov))
        out["cov_error_floor"] = float(covariance_error(train[:n], cov))
    return out
