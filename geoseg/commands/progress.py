"""The one progress bar of every command: tqdm behind a ``bar(done, total)`` callback.

Compute code never prints: it calls ``bar(done, total)`` (and training ``bar.note(...)``).
"""

from __future__ import annotations

import sys
from typing import Any


class ProgressBar:
    """Show ``done/total`` with rate and ETA on stderr; silent when disabled.

    The tqdm bar is made on the first call, when the total is known, and closed when
    ``done`` reaches it. Off a terminal it redraws every few seconds only, so logs stay short.
    """

    def __init__(
        self, label: str, unit: str = "windows", enabled: bool = True, leave: bool = True
    ) -> None:
        self.label, self.unit, self.enabled, self.leave = label, unit, enabled, leave
        self._bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        """Move the bar to ``done`` of ``total``."""
        if not self.enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                desc=self.label,
                unit=f" {self.unit}",
                file=sys.stderr,
                leave=self.leave,
                dynamic_ncols=True,
                mininterval=0.2 if sys.stderr.isatty() else 5.0,
            )
        self._bar.total = total
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()

    def note(self, **values: Any) -> None:
        """Show ``key=value`` figures after the bar (the loss and learning rate in training)."""
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def close(self) -> None:
        """End the bar's line (also when the work stops early)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
