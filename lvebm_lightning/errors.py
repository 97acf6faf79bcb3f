"""Bad input, reported at the boundary: one line that names the problem and the fix, then exit status 2."""

from __future__ import annotations

import sys
from typing import Any, NoReturn


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) folded to one space."""
    return " ".join(text.split())


def exit_with_error(program: str, kind: str, err: BaseException, status: int = 2) -> NoReturn:
    """Print ``<program>: <kind>: <the error on one line>`` to stderr and exit with ``status``."""
    print(f"{program}: {kind}: {one_line(str(err)) or type(err).__name__}", file=sys.stderr)
    sys.exit(status)


def is_positive_number(value: Any) -> bool:
    """Whether ``value`` is an int or float (not a bool) greater than 0."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
