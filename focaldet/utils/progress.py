"""A progress bar for long loops over images (``eval``, ``predict``), as ``data make`` shows."""
from __future__ import annotations

import sys
from typing import Optional


class _NoBar:
    """Stands in for a tqdm bar when none is shown."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, *, enabled: Optional[bool] = None, unit: str = "img", stream=None):
    """A tqdm bar with count, rate and ETA on ``stream`` (default stderr), or a no-op stand-in.

    ``enabled``: True / False force it on / off; None shows it only when ``stream`` is a terminal,
    so logs and pipes get no carriage-return noise. Call ``update(n)`` per batch and ``close()``.
    """
    stream = sys.stderr if stream is None else stream
    if enabled is None:
        enabled = bool(getattr(stream, "isatty", None) and stream.isatty())
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    # every update drawn (per image or batch: cheap), so the final count is always on screen before
    # the bar clears itself
    return tqdm(total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True, leave=False,
                mininterval=0, miniters=1)
