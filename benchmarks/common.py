"""The benchmarks' one toolkit: the dense-matmul rate, a timer, the run timer, the report writer, the results folder.

Every script runs from the repository root as a module, ``python -m benchmarks.<name>``, and takes from here:

- ``matmul_gflops``: the machine's speed, printed beside every ratio a script measures: 2 n^3 / t for one
  float32 n x n matmul, n = 2048, the best of ``repeats`` calls (the least disturbed call on a shared machine).
- ``seconds``: the wall time of one call (CUDA-synchronised on a GPU, so it counts the work, not its launch).
- ``RunTimer``: a Lightning callback that stamps every training step and every fit / validation / test phase.
- ``Report``: lines and markdown tables printed and written to the run's file as they come, so a run cut short
  keeps what it measured.
- ``results_dir`` / ``report_path``: a full run writes to ``benchmarks/results/<name>/``; a quick or partial run
  writes to ``benchmarks/results/<name>/quick/`` (git-ignored), so it never replaces the figures of a full run.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TextIO

import lightning.pytorch as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MATMUL_N = 2048


def sync(device: str | torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def seconds(fn: Callable[[], object], device: str | torch.device = "cpu") -> float:
    """Wall time of one call of ``fn``, the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def matmul_gflops(device: str | torch.device = "cpu", repeats: int = 10) -> float:
    """Dense float32 matmul rate 2 n^3 / t in GFLOP/s (n = 2048), best of ``repeats`` calls after one warm-up."""
    a, b = torch.randn(MATMUL_N, MATMUL_N, device=device), torch.randn(MATMUL_N, MATMUL_N, device=device)
    a @ b
    return max(2 * MATMUL_N**3 / seconds(lambda: a @ b, device) for _ in range(repeats)) / 1e9


def machine(device: str | torch.device, rates: Sequence[float]) -> str:
    """One line naming the machine and its matmul rate(s) measured in this run (a range when measured often)."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    low, high = f"{min(rates):.0f}", f"{max(rates):.0f}"
    rate = low if low == high else f"{low}-{high}"
    return (f"# {device.type} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads of "
            f"{os.cpu_count()} cores; dense matmul {rate} GFLOP/s ({MATMUL_N}^2 float32, this run)")


class Step(NamedTuple):
    logged: bool  # whether Lightning writes the logged scalars on this step
    start: float  # perf_counter at the batch's start
    end: float  # perf_counter at the batch's end (NaN while it runs)


class Phase(NamedTuple):
    name: str  # "fit", "validation" or "test"
    start: float
    end: float
    step: int  # global_step at its end


class RunTimer(pl.Callback):
    """Stamps of a training run (``perf_counter``, the device synchronised on a GPU): every training batch from
    optimizer step ``warmup`` on, and every fit, validation and test phase.

    Hydra instantiates it inside ``train(cfg)`` (``+callbacks.timer._target_=benchmarks.common.RunTimer``), so
    every instance is kept in ``RunTimer.runs`` for the script to read after the run, or after it failed."""

    runs: ClassVar[list[RunTimer]] = []

    def __init__(self, warmup: int = 0) -> None:
        self.warmup = warmup
        self.steps: list[Step] = []
        self.phases: list[Phase] = []
        self.finished = math.nan  # the end of training (``on_train_end``)
        self.global_step = 0  # at the end of fit
        self._open: dict[str, float] = {}
        RunTimer.runs.append(self)

    @staticmethod
    def _now(pl_module: pl.LightningModule) -> float:
        sync(pl_module.device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step >= self.warmup:
            logged = bool(trainer._logger_connector.should_update_logs)
            self.steps.append(Step(logged, self._now(pl_module), math.nan))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.steps and math.isnan(self.steps[-1].end):
            self.steps[-1] = self.steps[-1]._replace(end=self._now(pl_module))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.finished = self._now(pl_module)

    def _begin(self, name: str, pl_module: pl.LightningModule) -> None:
        self._open[name] = self._now(pl_module)

    def _close(self, name: str, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.phases.append(Phase(name, self._open.pop(name), self._now(pl_module), trainer.global_step))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._begin("fit", pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close("fit", trainer, pl_module)
        self.global_step = trainer.global_step

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._begin("validation", pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close("validation", trainer, pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._begin("test", pl_module)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close("test", trainer, pl_module)

    @property
    def busy_s(self) -> float:
        """Seconds inside the finished training batches, batch start to batch end (validation excluded)."""
        return sum(s.end - s.start for s in self.steps if not math.isnan(s.end))

    @property
    def window_s(self) -> float:
        """Seconds from the first timed batch's start to the last finished batch's end."""
        done = [s for s in self.steps if not math.isnan(s.end)]
        return done[-1].end - self.steps[0].start if done else math.nan

    def phase_s(self, name: str) -> float:
        """Seconds summed over the phases called ``name``."""
        return sum(p.end - p.start for p in self.phases if p.name == name)


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A markdown table of the cells' ``str``."""
    lines = [_markdown_row(columns), "|" + "---|" * len(columns)]
    return "\n".join([*lines, *(_markdown_row(row) for row in rows)])


def _markdown_row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


class Report:
    """What a benchmark prints, also written line by line to ``path`` (none: stdout only)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("w")

    def line(self, text: str = "") -> None:
        print(text, flush=True)
        if self._file is not None:
            self._file.write(text + "\n")
            self._file.flush()

    def header(self, columns: Sequence[str]) -> None:
        """The head of a markdown table whose rows follow one by one (``row``)."""
        self.line(_markdown_row(columns))
        self.line("|" + "---|" * len(columns))

    def row(self, cells: Sequence[object]) -> None:
        self.line(_markdown_row(cells))

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
        self.line(markdown_table(columns, rows))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            print(f"# written to {self.path}", flush=True)

    def __enter__(self) -> Report:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def results_dir(name: str, quick: bool = False) -> Path:
    """``benchmarks/results/<name>/`` for a full run; its git-ignored ``quick/`` for a quick or partial one."""
    return RESULTS / name / "quick" if quick else RESULTS / name


def report_path(name: str, device: str = "cpu", quick: bool = False, suffix: str = ".md") -> Path:
    """A new file for one run's report, ``<device>_<date><suffix>`` in ``results_dir(name, quick)``: a run of a
    day that already has one gets ``_2``, ``_3``, ... so that no run replaces another's figures."""
    folder = results_dir(name, quick)
    stem = f"{torch.device(device).type}_{datetime.date.today().isoformat()}"
    path, n = folder / f"{stem}{suffix}", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}_{n}{suffix}"
    return path
