"""Run directories: checkpoints, resumable training state and the CSV log (all writes atomic).

Layout of ``RUN``::

    RUN/config.json   resolved options and their fingerprint
    RUN/best/         checkpoint with the best validation mIoU
    RUN/last/         checkpoint after the latest epoch, plus train_state.pt
    RUN/log.csv       one row per epoch
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from geoseg.errors import CheckpointError, ConfigError, OutputError, OutputExistsError

STATE_FILE = "train_state.pt"


def _atomic_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class RunDir:
    """A training run's output directory."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @property
    def best(self) -> Path:
        """The best checkpoint."""
        return self.path / "best"

    @property
    def last(self) -> Path:
        """The latest checkpoint (with training state)."""
        return self.path / "last"

    def start(self, config: dict[str, Any], fingerprint: str, resume: bool, overwrite: bool):
        """Create (or check, when resuming) the run directory."""
        if resume:
            return self._check_resume(config, fingerprint)
        if self.path.exists() and any(self.path.iterdir()):
            if not overwrite:
                raise OutputExistsError(
                    f"run directory {self.path} exists; pass --overwrite to replace it or "
                    "--resume to continue it"
                )
            if not (self.path / "config.json").is_file():
                raise OutputExistsError(
                    f"{self.path} is not empty and not a geoseg run directory; choose another "
                    "--out (--overwrite only replaces earlier runs)"
                )
            shutil.rmtree(self.path)
        if not self.path.parent.is_dir():
            raise OutputError(f"directory {self.path.parent} does not exist; create it first")
        self.path.mkdir(exist_ok=True)
        doc = {"fingerprint": fingerprint, "config": config}
        _atomic_text(self.path / "config.json", json.dumps(doc, indent=2) + "\n")

    def _check_resume(self, config: dict[str, Any], fingerprint: str) -> None:
        from geoseg.train.config import config_changes

        cfg_file = self.path / "config.json"
        if not cfg_file.is_file() or not (self.last / STATE_FILE).is_file():
            raise CheckpointError(
                f"{self.path} holds no resumable run (config.json and last/{STATE_FILE}); "
                "drop --resume to start a new run"
            )
        doc = json.loads(cfg_file.read_text())
        changed = config_changes(doc.get("config", {}), config)
        if changed:
            old = doc["config"]
            what = ", ".join(f"{k} ({old[k]!r} -> {config[k]!r})" for k in changed)[:300]
            raise ConfigError(
                f"--resume of {self.path}: the config differs from the run's in {what}; resume "
                "with the run's config or start a new --out"
            )
        history = doc.get("resumed", []) + [{"epochs": config.get("epochs")}]
        doc.update(config=config, fingerprint=fingerprint, resumed=history)
        _atomic_text(cfg_file, json.dumps(doc, indent=2) + "\n")

    def save_last(self, model, meta, state: dict[str, Any]) -> None:
        """Write the latest checkpoint and the training state together, atomically."""
        import torch

        from geoseg.checkpoint import save_checkpoint

        new = self.path / ".last.new"
        shutil.rmtree(new, ignore_errors=True)
        save_checkpoint(model, meta, new, overwrite=True)
        torch.save(state, new / STATE_FILE)
        old = self.path / ".last.old"
        shutil.rmtree(old, ignore_errors=True)
        if self.last.exists():
            self.last.rename(old)
        new.rename(self.last)
        shutil.rmtree(old, ignore_errors=True)

    def save_best(self, model, meta) -> None:
        """Replace the best checkpoint (atomic rename)."""
        from geoseg.checkpoint import save_checkpoint

        save_checkpoint(model, meta, self.best, overwrite=True)

    def load_state(self) -> dict[str, Any]:
        """The training state of ``last/``, loaded without executing pickled code."""
        import torch

        try:
            return torch.load(self.last / STATE_FILE, weights_only=True, map_location="cpu")
        except (RuntimeError, OSError, EOFError) as exc:
            raise CheckpointError(
                f"{self.last / STATE_FILE} is corrupt ({exc}); restart without --resume"
            ) from None

    def write_log(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite ``log.csv`` with ``rows`` (atomic)."""
        if not rows:
            return
        fields = list(rows[0])
        for r in rows[1:]:
            fields += [k for k in r if k not in fields]
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        _atomic_text(self.path / "log.csv", buf.getvalue())
