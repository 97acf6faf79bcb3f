"""Run a console command's main function in process: its exit status and what it printed."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest


def run_command(main: Callable[[list[str]], None], args: Sequence[object], capsys) -> tuple[int, str, str]:
    """``main(args)`` as the console script would run it: (exit status, stdout, stderr); 0 when it returns."""
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in args])
        raise SystemExit(0)
    captured = capsys.readouterr()
    return stop.value.code, captured.out, captured.err
