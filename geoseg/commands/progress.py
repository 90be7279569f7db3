"""A small progress bar for the terminal (windows/s and ETA), fed through a callback."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    """Render ``done/total`` with rate and ETA on stderr; silent when disabled.

    Compute code never prints: it calls ``bar(done, total)``.
    """

    def __init__(self, label: str, unit: str = "windows", enabled: bool = True) -> None:
        self.label, self.unit, self.enabled = label, unit, enabled
        self._t0 = time.perf_counter()
        self._last = 0.0
        self._tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        """Update the bar."""
        if not self.enabled:
            return
        now = time.perf_counter()
        if done < total and now - self._last < (0.2 if self._tty else 5.0):
            return
        self._last = now
        elapsed = now - self._t0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else float("nan")
        width = 30
        filled = int(width * done / total) if total else width
        bar = "#" * filled + "-" * (width - filled)
        line = (
            f"{self.label} [{bar}] {done}/{total} {self.unit} "
            f"{rate:.2f} {self.unit}/s ETA {_fmt(eta)}"
        )
        end = "\n" if (done >= total or not self._tty) else ""
        sys.stderr.write(("\r" if self._tty else "") + line + end)
        sys.stderr.flush()


def _fmt(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "--:--"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
