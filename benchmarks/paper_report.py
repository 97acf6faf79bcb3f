"""The Markdown tables and the galleries of ``benchmarks/paper.py``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import torch

from benchmarks.common import markdown_table
from lvebm_lightning.data.systems import magnetisation

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NA = "n/a"


def summary(values: list[Any], spec: str = ".3g") -> str:
    """mean ± sd of the finite numbers in ``values`` ("n/a" when there are no numbers, "nan" when none is finite)."""
    numbers = [v for v in values if isinstance(v, (int, float))]
    if not numbers:
        return NA
    finite = [v for v in numbers if math.isfinite(v)]
    if not finite:
        return "nan"
    mean = sum(finite) / len(finite)
    text = format(mean, spec)
    if len(finite) > 1:
        sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
        text += f" ± {format(sd, '.2g')}"
    return text


def cell(rows: list[dict[str, Any]], key: str, spec: str = ".3g", se_key: str | None = None) -> str:
    """mean ± sd over the seeds' rows of ``key`` (``summary``); a single row with ``se_key`` gets its standard
    error beside it, and "(k/n finite)" says when only k of the n rows are finite."""
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    text = summary(values, spec)
    if text in (NA, "nan"):
        return text
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) == 1 and se_key and isinstance(rows[0].get(se_key), (int, float)):
        text += f" ± {format(rows[0][se_key], '.2g')} (se)"
    if len(finite) < len(rows):
        text += f" ({len(finite)}/{len(rows)} finite)"
    return text


def observable(rows: list[dict[str, Any]], dataset: str) -> str:
    if dataset == "phi4":
        return (f"TV {cell(rows, 'mag_tv', '.2f')} (floor {cell(rows, 'mag_tv_floor', '.2f')}), "
                f"M>0 {cell(rows, 'positive_share', '.2f')}, G z {cell(rows, 'g_z', '.2g')}")
    if dataset == "pendulum":
        return f"energy W1/floor {cell(rows, 'energy_w1_ratio', '.2f')}"
    if dataset == "linear_gaussian":
        return f"cov err {cell(rows, 'cov_error', '.3f')} (floor {cell(rows, 'cov_error_floor', '.3f')})"
    return NA


def groups(rows: list[dict[str, Any]]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    seen: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        seen.setdefault((row["dataset"], row["method"]), []).append(row)
    return [(d, m, rs) for (d, m), rs in seen.items()]


DENSITY = ("dataset", "method", "seeds", "ok", "train s", "W2/floor", "sliced W2", "NLL gap", "FE spread (kT)",
           "observable")
LATENTS = ("dataset", "method", "ELBO gain vs fitted encoder", "gain, chains from N(0, I)", "test ELBO",
           "R² posterior mean", "R² encoder mean", "recon RMSE", "recon ES", "recon 90% coverage")


def tables(rows: list[dict[str, Any]], refs: dict[str, dict[str, Any]]) -> str:
    """Two Markdown tables: the density and physics of the samples, and what the latents carry."""
    density, latents = [], []
    for dataset, method, rs in groups(rows):
        ok = [r for r in rs if r.get("status") == "ok"]
        density.append((
            dataset, method, len(rs), len(ok), cell(rs, "train_s", ".0f"), cell(ok, "w2_ratio", ".2f"),
            cell(ok, "sliced_w2", ".3g"), cell(ok, "nll_gap", ".3f"), cell(ok, "fe_spread", ".3f"),
            observable(ok, dataset),
        ))
        if method != "flow" or any("recon_rmse" in r for r in ok):
            latents.append((
                dataset, method, cell(ok, "elbo_gain", ".3f", "elbo_gain_se"),
                cell(ok, "elbo_gain_prior", ".3f", "elbo_gain_prior_se"), cell(ok, "elbo", ".3f"),
                cell(ok, "r2_posterior", ".3f"), cell(ok, "r2_encoder", ".3f"), cell(ok, "recon_rmse", ".3f"),
                cell(ok, "recon_es", ".3f"), cell(ok, "recon_cov90", ".2f"),
            ))
    for dataset, ref in refs.items():
        if "r2_pca" in ref or "recon_rmse" in ref:
            latents.append((
                dataset, "pca / knn (reference)", NA, NA, NA, cell([ref], "r2_pca", ".3f"), NA,
                cell([ref], "recon_rmse", ".3f"), cell([ref], "recon_es", ".3f"), cell([ref], "recon_cov90", ".2f"),
            ))
        if "r2_bayes" in ref:  # the generator is known: the Bayes-optimal answers, the row no model beats on average
            latents.append((
                dataset, "bayes (the limit)", NA, NA, NA, cell([ref], "r2_bayes", ".3f"), NA,
                cell([ref], "bayes_recon_rmse", ".3f"), cell([ref], "bayes_recon_es", ".3f"),
                cell([ref], "bayes_recon_cov90", ".2f"),
            ))
    return "\n".join(["### Samples, density and physics", "", markdown_table(DENSITY, density), "", "### Latents", "",
                      markdown_table(LATENTS, latents)])


def gallery(dataset: str, data: Any, rows: list[dict[str, Any]], path: Path) -> None:
    """One figure: the test data and every method's samples (seed 0); phi4: magnetisation histograms."""
    shown = [r for r in rows if r.get("seed") == 0 and r.get("samples")]
    test = data.raw["test"][:1000]
    fig, axes = plt.subplots(1, len(shown) + 1, figsize=(3.0 * (len(shown) + 1), 3.0), squeeze=False)
    panels = [("data (test)", test), *((r["method"], torch.tensor(r["samples"])) for r in shown)]
    for ax, (title, x) in zip(axes[0], panels):
        if dataset == "phi4":
            bins = torch.linspace(-3, 3, 31).tolist()
            ax.hist(magnetisation(test.double()).numpy(), bins=bins, density=True, histtype="step", color="k")
            ax.hist(magnetisation(x.double()).numpy(), bins=bins, density=True, alpha=0.5)
            ax.set_xlabel("magnetisation M")
        else:
            ax.scatter(test[:, 0], test[:, 1], s=2, c="0.8", rasterized=True)
            ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, rasterized=True)
            ax.set_xlabel("x1")
            ax.set_ylabel("x2")
        ax.set_title(title)
    fig.suptitle(f"{dataset}: samples of each method (seed 0) over the test data")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
