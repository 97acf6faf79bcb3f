"""A new user's first contact, through the real ``train.py`` and console commands: resumes that end
cleanly, every class of bad input in one line before anything is written (the README's list, walked), a quiet
console, galleries for short runs, and commands that answer ``help`` before importing torch."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lvebm_lightning.inference.commands import eval_main, sample_main
from tests.helpers.commands import run_command

ROOT = Path(__file__).resolve().parents[1]
STEPS = 60
"""The first run: 60 steps, validation every 100, so it is shorter than its validation interval."""


def train_py(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in __import__("os").environ.items() if k != "WANDB_SILENT"}
    return subprocess.run([sys.executable, "train.py", "debug=fast", "trainer.accelerator=cpu", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def first(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A finished run of ``train.py``, its output captured as a log file would capture it (no terminal)."""
    run = tmp_path_factory.mktemp("first") / "run"
    done = train_py(f"trainer.max_steps={STEPS}", "trainer.val_check_interval=100", f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    return run, done


def test_a_run_shorter_than_its_validation_interval_still_draws_galleries(first):
    run, _ = first
    names = sorted(p.name for p in (run / "galleries").glob("*.png"))
    assert names == [f"test_{f}_step{STEPS:07d}.png" for f in ("landscape", "posterior", "samples")]


def test_the_console_is_quiet_and_ends_with_the_projects_block(first):
    run, done = first
    text = done.stdout + done.stderr
    for noise in ("Tip:", "wandb:", "GPU available", "deprecated", "Previous log files", "log_every_n_steps",
                  "anonymous"):
        assert noise not in text, noise
    lines = text.rstrip().splitlines()
    block = lines[next(i for i, line in enumerate(lines) if "Run finished at step" in line):]
    assert block[0].endswith(f"Run finished at step {STEPS}: {run}") and "W&B         offline run" in block[-1]
    assert f"upload: wandb sync {run}" in block[-1]
    # Not a terminal: one bar over the run's steps, drawn about 20 times (tests/test_progress.py counts them).
    assert re.search(rf"Training: 100%\|[^|\n]*\| {STEPS}/{STEPS} \[", text) and not re.search(r"Epoch \d+:", text)


def test_resuming_a_finished_run_says_so_and_writes_nothing(first, tmp_path):
    run, _ = first
    before = snapshot(run)
    done = train_py(f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"trainer.max_steps={STEPS}",
                    f"hydra.run.dir={tmp_path / 'again'}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines() == [
        f"lvebm: {run / 'checkpoints' / 'last.ckpt'} is already at step {STEPS} of trainer.max_steps={STEPS}: "
        f"nothing to train; to train on, raise trainer.max_steps (e.g. trainer.max_steps={2 * STEPS})."
    ]
    assert not (tmp_path / "again").exists() and snapshot(run) == before


@pytest.mark.slow
def test_resuming_a_finished_run_into_a_new_directory_with_more_steps_trains_on(first, tmp_path):
    run, _ = first
    done = train_py(f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"trainer.max_steps={STEPS + 10}",
                    "trainer.val_check_interval=100", f"hydra.run.dir={tmp_path / 'more'}")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "more" / "summary.json").read_text())
    assert summary["step"] == STEPS + 10 and "final/w2" in summary


# -- the README's "Bad input" list, walked --------------------------------------------------------------------
def bad_input_examples() -> list[tuple[str, str]]:
    """(class, arguments) for every ``python train.py ...`` and ``lvebm-<command> ...`` example of the README's
    "Bad input" list (a train.py example without its ``python train.py``).

    Each item of the list is ``- <class>: <examples>``, continued on lines indented by two spaces; its examples in
    backticks that start with ``python train.py`` or ``lvebm-`` are walked here."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Bad input\n"):].split("\n## ")[1]
    items: list[str] = []
    for line in section.splitlines():
        if line.startswith("- "):
            items.append(line[2:])
        elif line.startswith("  ") and items:
            items[-1] += " " + line.strip()
    examples = []
    for item in items:
        name, _, rest = item.partition(":")
        found = re.findall(r"`(?:python train\.py ([^`]+)|(lvebm-[a-z]+ [^`]+))`", rest)
        examples += [(name, train or command) for train, command in found]
    return examples


EXAMPLES = bad_input_examples()
FIRST_OF_CLASS = {name: example for name, example in reversed(EXAMPLES)}
COVERED_IN_PROCESS = ("data file", "checkpoint that is missing", "value out of range", "dataset parameter",
                      "energy that does not fit", "console command", "chains that cannot start")
"""The fast subset runs the first example of each class that ``tests/test_bad_input.py`` does not already cover
in process; the rest (several seconds each: they import Lightning) are marked slow and run in the full suite."""
WALK = [pytest.param(name, ex, id=ex, marks=[] if FIRST_OF_CLASS[name] == ex and not name.startswith(
    COVERED_IN_PROCESS) else [pytest.mark.slow]) for name, ex in EXAMPLES]


def test_the_readme_lists_every_class_of_bad_input():
    classes = {name for name, _ in EXAMPLES}
    assert len(classes) == 13 and len(EXAMPLES) >= 27
    assert any("MisconfigurationException" in c for c in classes) and any("wrong type" in c for c in classes)
    examples = " ".join(example for _, example in EXAMPLES)
    for added in ("data.options.", "model/energy=", "lvebm-reconstruct ", "start=neighbours"):
        assert added in examples, added


def bad_input_command(example: str, run: Path, out: Path) -> list[str]:
    """The command line of ``example``, a ``train.py`` one writing under ``out``."""
    args = example.replace("<double-well run>", str(run)).split()
    if args[0].startswith("lvebm-"):
        return [sys.executable, "-m", "lvebm_lightning.inference.commands", args[0].removeprefix("lvebm-"), *args[1:]]
    return [sys.executable, "train.py", "debug=fast", "trainer.accelerator=cpu", *args, f"hydra.run.dir={out / 'new'}"]


@pytest.fixture(scope="module")
def walked(request, first, tmp_path_factory) -> tuple[dict[str, tuple[subprocess.CompletedProcess, Path]], bool]:
    """Every bad-input example this session selected, run two at a time (each is one process that imports
    Lightning on one core), each with its own output folder; and whether the finished run was left untouched."""
    run, _ = first
    chosen = [item.callspec.params["example"] for item in request.session.items
              if item.originalname == "test_every_listed_bad_input_fails_in_one_line_before_anything_is_written"]
    env = {k: v for k, v in __import__("os").environ.items() if k != "WANDB_SILENT"}
    env["OMP_NUM_THREADS"] = "1"
    before = snapshot(run)

    def one(example: str) -> tuple[subprocess.CompletedProcess, Path]:
        out = tmp_path_factory.mktemp("bad_input")
        command = bad_input_command(example, run, out)
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env), out

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(chosen, pool.map(one, chosen), strict=True))
    return results, snapshot(run) == before


@pytest.mark.parametrize(("name", "example"), WALK)
def test_every_listed_bad_input_fails_in_one_line_before_anything_is_written(name, example, walked):
    """A ``train.py`` example must leave no run folder; a console command's (``lvebm-...``) no output; none of
    them touches the finished run."""
    results, run_untouched = walked
    done, out = results[example]
    program = "lvebm" if not example.startswith("lvebm-") else example.split()[0]
    assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{program}: error: "), done.stderr[-3000:]
    assert list(out.iterdir()) == []
    assert run_untouched
    if "data=mueller_brown" in example:  # another dataset of the same dx: the differences are listed
        assert "data: checkpoint 'double_well' vs run 'mueller_brown'" in lines[0]


def test_a_checkpoint_of_the_same_data_drawn_otherwise_is_refused(first, tmp_path):
    """The same dataset drawn with another seed differs only in its values, which the fingerprint catches (another
    dataset of the same dx is the README walk's example)."""
    run, _ = first
    other_seed = train_py(f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "seed=1",
                          f"hydra.run.dir={tmp_path / 'new'}")
    assert other_seed.returncode == 2 and "training data fingerprint: checkpoint " in other_seed.stderr


# -- the console commands ----------------------------------------------------------------------------------------
def test_eval_takes_a_seed_and_reproduces_the_logged_elbo(first, capsys):
    run, _ = first
    ckpt = run / "checkpoints" / "last.ckpt"
    code, out, _ = run_command(eval_main, [f"ckpt={ckpt}", "data=test"], capsys)
    assert code == 0 and f"wrote {run / 'eval.json'}" in out  # beside the checkpoint's run directory
    metrics = json.loads((run / "eval.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert metrics["w2"] == pytest.approx(summary["final/w2"], rel=1e-5)
    assert metrics["train_elbo"] == pytest.approx(summary["final/elbo"], rel=1e-5)
    assert "val/elbo and test/elbo" in out  # says why elbo (the test split's) differs from the logged one
    code, _, _ = run_command(eval_main, [f"ckpt={ckpt}", "data=test", "seed=3", f"out={run / 'eval3.json'}"], capsys)
    assert code == 0 and json.loads((run / "eval3.json").read_text())["w2"] != metrics["w2"]


def test_sample_writes_beside_the_checkpoint_by_default(first, capsys):
    run, _ = first
    code, out, _ = run_command(sample_main, [f"ckpt={run / 'checkpoints' / 'last.ckpt'}", "n=50", "n_steps=2"], capsys)
    assert code == 0 and out.strip().endswith(f"to {run / 'samples.npy'}") and (run / "samples.npy").is_file()


@pytest.mark.parametrize(("args", "expected"), [
    (["-m", "lvebm_lightning.inference.commands", "sample", "help"], 0),
    (["-m", "lvebm_lightning.inference.commands", "sample", "ckpt=x.ckpt", "nn=3"], 2),
    (["-m", "lvebm_lightning.inference.commands", "eval", "ckpt=README.md", "data=tset"], 2),
])
def test_commands_answer_help_and_typos_before_importing_torch(args, expected):
    probe = ("import runpy, sys\nmodule, sys.argv = sys.argv[1], ['lvebm'] + sys.argv[2:]\ntry:\n"
             "    runpy.run_module(module, run_name='__main__')\nexcept SystemExit:\n"
             "    print('torch' in sys.modules, file=sys.stderr)\n    raise\n")
    done = subprocess.run([sys.executable, "-c", probe, args[1], *args[2:]], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == expected
    assert done.stderr.strip().splitlines()[-1] == "False"
    if args[-1] == "data=tset":
        assert "data=tset is neither a split of the run (val, test) nor an existing file" in done.stderr


def test_train_py_answers_a_typo_before_importing_torch():
    probe = ("import runpy, sys\nsys.argv = ['train.py', 'model.lrr=1']\ntry:\n    runpy.run_path('train.py', "
             "run_name='__main__')\nexcept SystemExit as e:\n    print(e.code, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "2 False", done.stdout + done.stderr
    assert "unknown config key 'model.lrr'" in done.stderr
