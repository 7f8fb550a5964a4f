"""What the example prints and reads on the console: progress lines, numbers, the parsers.

Example:
    >>> fmt(0.91234), fmt(float("nan")), fmt(None)
    ('0.912', 'n/a', 'n/a')
"""

from __future__ import annotations

import argparse
import math


def log(msg: str = ""):
    """Prints one progress line, flushed at once (the unit processes' logs are tailed)."""
    print(msg, flush=True)


def fmt(x, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals, or ``"n/a"`` when it is missing or not finite."""
    finite = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return f"{x:.{digits}f}" if finite else "n/a"


class Parser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` whose errors are one line on stderr, exit code 2, and that
    takes no abbreviated option (``--epoch`` is refused, not read as ``--epochs``); the
    description's paragraphs and the examples' line breaks are kept."""

    def __init__(self, **kwargs):
        formatter = argparse.RawDescriptionHelpFormatter
        super().__init__(allow_abbrev=False, formatter_class=formatter, **kwargs)

    def error(self, message):
        message = " ".join(str(message).split())  # one line, whatever the message held
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")
