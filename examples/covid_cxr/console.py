"""What the example prints: progress lines and numbers.

Example:
    >>> fmt(0.91234), fmt(float("nan")), fmt(None)
    ('0.912', 'n/a', 'n/a')
"""

from __future__ import annotations

import math


def log(msg: str = ""):
    """Prints one progress line, flushed at once (the unit processes' logs are tailed)."""
    print(msg, flush=True)


def fmt(x, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals, or ``"n/a"`` when it is missing or not finite."""
    finite = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return f"{x:.{digits}f}" if finite else "n/a"
