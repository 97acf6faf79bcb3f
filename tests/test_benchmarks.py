"""The benchmarks' toolkit (``benchmarks.common``): the run timer on a real trainer, the report writer, and the
results folders, where no run replaces another's file and a quick run stays out of the full results."""

from __future__ import annotations

import datetime
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmarks import common
from benchmarks.common import Report, RunTimer, markdown_table, report_path, results_dir


class Tiny(pl.LightningModule):
    """A linear regression: the smallest module with training, validation and test steps."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return ((self.layer(x) - y) ** 2).mean()

    def validation_step(self, batch, batch_idx):
        return self.training_step(batch, batch_idx)

    def test_step(self, batch, batch_idx):
        return self.training_step(batch, batch_idx)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_run_timer_stamps_the_steps_after_warmup_and_every_phase() -> None:
    gen = torch.Generator().manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(24, 2, generator=gen), torch.randn(24, 1, generator=gen)), batch_size=4)
    timer = RunTimer(warmup=2)
    trainer = pl.Trainer(
        max_steps=6, val_check_interval=3, limit_val_batches=2, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
        accelerator="cpu",
    )
    model = Tiny()
    trainer.fit(model, train_dataloaders=data, val_dataloaders=data)
    trainer.test(model, dataloaders=data, verbose=False)

    assert RunTimer.runs[-1] is timer
    assert len(timer.steps) == 6 - 2 and timer.global_step == 6
    for step, following in zip(timer.steps, timer.steps[1:]):
        assert step.start < step.end <= following.start
    assert timer.busy_s == pytest.approx(sum(s.end - s.start for s in timer.steps))
    assert timer.window_s == timer.steps[-1].end - timer.steps[0].start >= timer.busy_s
    assert timer.steps[0].start <= timer.finished
    assert [(p.name, p.step) for p in timer.phases] == [("validation", 3), ("validation", 6), ("fit", 6), ("test", 6)]
    fit = timer.phases[2]
    assert all(fit.start < p.start < p.end < fit.end for p in timer.phases[:2])
    assert timer.phase_s("validation") == pytest.approx(sum(p.end - p.start for p in timer.phases[:2]))
    assert math.isnan(RunTimer(warmup=0).window_s)  # no finished step yet


def test_report_writes_what_it_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sub" / "report.md"
    with Report(path) as report:
        report.line("# a header")
        report.header(("a", "b"))
        report.row((1, "x"))
        report.table(("c",), [(2.5,)])
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == f"# written to {path}"
    assert path.read_text().splitlines() == printed[:-1]
    assert printed[1:4] == ["| a | b |", "|---|---|", "| 1 | x |"]
    assert markdown_table(("c",), [(2.5,)]).splitlines() == printed[4:7] == ["| c |", "|---|", "| 2.5 |"]


def test_report_paths_never_replace_a_run_and_quick_runs_stay_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    today = datetime.date.today().isoformat()
    first = report_path("speed")
    assert first == tmp_path / "speed" / f"cpu_{today}.md"
    with Report(first) as report:
        report.line("a full run")
    second = report_path("speed")
    assert second == tmp_path / "speed" / f"cpu_{today}_2.md"
    quick = report_path("speed", quick=True)
    assert quick.parent == results_dir("speed", quick=True) == tmp_path / "speed" / "quick"
    with Report(quick) as report:
        report.line("a quick run")
    assert first.read_text() == "a full run\n"
