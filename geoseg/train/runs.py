"""Run directories: checkpoints, resumable training state and the CSV log (all writes atomic).

Layout of ``RUN``::

    RUN/.geoseg-run   marker: this folder is a geoseg run (``--overwrite`` replaces only these)
    RUN/config.json   resolved options and their fingerprint
    RUN/best/         checkpoint with the best validation mIoU
    RUN/last/         checkpoint after the latest epoch, plus train_state.pt
    RUN/log.csv       one row per epoch

A new run is assembled in an exclusive temporary folder beside ``RUN`` and installed at
``RUN`` once its first epoch is saved (:meth:`RunDir.commit`): a run that fails before that
leaves the file system as it was, and ``--overwrite`` keeps the earlier run until then. A
resumed run rewrites ``config.json`` only after its first resumed epoch is saved.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geoseg.errors import CheckpointError, ConfigError, OutputError, OutputExistsError
from geoseg.io import files
from geoseg.model.checkpoint import (
    CHECKPOINT_FILES,
    STATE_FILE,
    give_umask_modes,
    is_checkpoint,
    write_checkpoint_files,
)

MARKER = ".geoseg-run"
RUN_FILES = frozenset({MARKER, "config.json", "log.csv", "best", "last"})
# temporaries of files.exclusive_temp / files.temp_dir for the entries above
_TEMP = re.compile(r"^\.(\.geoseg-run|config\.json|log\.csv|best|last)\..+\.tmp(\.old)?$")

__all__ = ["MARKER", "STATE_FILE", "RunDir", "is_run"]


def _plain_file(p: Path) -> bool:
    return not p.is_symlink() and p.is_file()


def _checkpoint_like(p: Path) -> bool:
    """A checkpoint folder, or one being assembled (only regular checkpoint files, or empty)."""
    if p.is_symlink() or not p.is_dir():
        return False
    return all(e.name in CHECKPOINT_FILES and _plain_file(e) for e in p.iterdir())


def _is_run_temp(entry: Path) -> bool:
    """A temporary geoseg leaves in a run: a file, a checkpoint folder or an ``.old`` wrapper."""
    if entry.is_symlink():
        return False
    if entry.is_file():
        return True
    if is_checkpoint(entry) or _checkpoint_like(entry):
        return True
    if entry.name.endswith(".old") and entry.is_dir():
        return all(_plain_file(e) or _checkpoint_like(e) for e in entry.iterdir())
    return False


def _only_run_entries(p: Path) -> bool:
    for entry in p.iterdir():
        if _TEMP.match(entry.name):
            if not _is_run_temp(entry):
                return False
            continue
        if entry.name not in RUN_FILES or entry.is_symlink():
            return False
        if entry.name in ("best", "last"):
            if not is_checkpoint(entry):
                return False
        elif not entry.is_file():  # the marker, config.json and log.csv are regular files
            return False
    return True


def is_run(path: str | os.PathLike, require_marker: bool = True) -> bool:
    """True for a folder geoseg wrote as a run: the marker, and only a run's own entries.

    Entries are checked by kind as well as name: ``config.json``, ``log.csv`` and the marker
    must be regular files, ``best``/``last`` checkpoints, and a temporary-looking name only
    passes when it holds what geoseg's temporaries hold (a file, checkpoint files, or an
    ``.old`` wrapper of those), so ``--overwrite`` never deletes user content inside a run.
    ``require_marker=False`` accepts runs written before the marker existed (used by
    ``--resume`` only; ``--overwrite`` always needs the marker).
    """
    p = Path(path)
    if p.is_symlink() or not p.is_dir():
        return False
    marker = p / MARKER
    if require_marker or marker.exists() or marker.is_symlink():
        if not _plain_file(marker):
            return False
        try:
            doc = json.loads(marker.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return False
        if not isinstance(doc, dict) or doc.get("kind") != "geoseg-run":
            return False
    return _only_run_entries(p)


def _read_config(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(
            f"{path} is corrupt ({' '.join(str(exc).split())[:200]}); restart without --resume"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise CheckpointError(
            f"{path} is not a run's config (a mapping with 'config'); restart without --resume"
        )
    if not isinstance(doc.get("resumed", []), list):
        raise CheckpointError(f"{path}: 'resumed' is not a list; restart without --resume")
    return doc


class RunDir:
    """A training run's output directory."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.target = Path(path)
        self.path = self.target
        self._pending: dict[str, Any] | None = None
        self._tmp: Path | None = None
        self._created: list[Path] = []

    @property
    def best(self) -> Path:
        """The best checkpoint."""
        return self.path / "best"

    @property
    def last(self) -> Path:
        """The latest checkpoint (with training state)."""
        return self.path / "last"

    # ------------------------------------------------------------------ checks (no writes)
    def check(
        self,
        config: dict[str, Any],
        fingerprint: str,
        resume: bool,
        overwrite: bool,
        inputs: Sequence[str] = (),
    ) -> None:
        """Refuse an unusable ``--out`` before any work; writes nothing.

        Raises
        ------
        OutputExistsError, OutputError, InputError, CheckpointError, ConfigError
        """
        files.check_target(
            self.target, overwrite=True, inputs=inputs, what="--out", folder=True, make_parents=True
        )
        if resume:
            self._check_resume(config, fingerprint)
            return
        t = self.target
        if not t.exists() or not any(t.iterdir()):
            return
        if not overwrite:
            raise OutputExistsError(
                f"run directory {t} exists; pass --overwrite to replace it or --resume to "
                "continue it"
            )
        if not is_run(t):
            raise OutputError(
                f"{t} is not a geoseg run directory (no {MARKER} marker, or files geoseg did "
                "not write); --overwrite only replaces earlier runs: choose another --out"
            )
        for item in inputs:
            if item and files.is_same_or_inside(item, t):
                raise OutputError(
                    f"--out {t} holds the input {item}; replacing the run would delete it: "
                    "choose another --out"
                )

    def _check_resume(self, config: dict[str, Any], fingerprint: str) -> None:
        from geoseg.train.config import config_changes

        cfg_file = self.path / "config.json"
        if not cfg_file.is_file() or not (self.last / STATE_FILE).is_file():
            raise CheckpointError(
                f"{self.path} holds no resumable run (config.json and last/{STATE_FILE}); "
                "drop --resume to start a new run"
            )
        # everything a resumed run rewrites (best/, last/, log.csv, config.json) must be
        # geoseg's own, so a refused entry is found before any epoch replaces the others;
        # runs written before the marker existed are resumable (their entries are checked)
        if not is_run(self.path, require_marker=False):
            raise CheckpointError(
                f"--resume of {self.path}: it is not a geoseg run directory (symbolic links, "
                "or files and folders geoseg did not write, e.g. a last/ or best/ that is not "
                "a checkpoint); restore the run or start a new --out"
            )
        doc = _read_config(cfg_file)
        old = doc["config"]
        changed = config_changes(old, config)
        lacking = [k for k in changed if k not in old]
        if lacking:
            raise ConfigError(
                f"--resume of {self.path}: its config.json lacks the option(s) "
                f"{', '.join(lacking)[:300]} (it was edited or truncated), so changes to them "
                "cannot be ruled out; restore config.json or start a new --out"
            )
        if changed:
            missing = "<missing>"
            what = ", ".join(
                f"{k} ({old.get(k, missing)!r} -> {config.get(k, missing)!r})" for k in changed
            )
            raise ConfigError(
                f"--resume of {self.path}: the config differs from the run's in {what[:300]}; "
                "resume with the run's config or start a new --out"
            )
        if doc.get("fingerprint") != fingerprint:
            raise ConfigError(
                f"--resume of {self.path}: the run's config fingerprint "
                f"{str(doc.get('fingerprint'))[:40]!r} is not this config's {fingerprint!r} "
                "(config.json was edited); resume with the run's config or start a new --out"
            )
        history = doc.get("resumed", []) + [{"epochs": config.get("epochs")}]
        self._pending = dict(doc, config=config, fingerprint=fingerprint, resumed=history)

    # ------------------------------------------------------------------ writes
    def start(self, config: dict[str, Any], fingerprint: str, resume: bool) -> None:
        """Begin writing (call after :meth:`check` and after data and model are validated).

        A new run goes into a temporary folder beside ``--out`` until :meth:`commit`.
        """
        if resume:
            return
        self._created = files.make_dirs(self.target.parent)  # a run folder's parents are ours
        try:
            self._tmp = files.temp_dir(self.target)
            self.path = self._tmp
            marker = {"kind": "geoseg-run", "format": 1}
            files.atomic_write(self.path / MARKER, json.dumps(marker) + "\n")
            doc = {"fingerprint": fingerprint, "config": config}
            files.atomic_write(self.path / "config.json", json.dumps(doc, indent=2) + "\n")
        except BaseException:
            self.abort()
            raise

    def commit(self) -> None:
        """Install the new run at ``--out`` (or record the resumption); later calls do nothing."""
        if self._pending is not None:
            doc, self._pending = self._pending, None
            files.atomic_write(self.path / "config.json", json.dumps(doc, indent=2) + "\n")
            if not (self.path / MARKER).exists():  # a run from before the marker existed
                marker = {"kind": "geoseg-run", "format": 1}
                files.atomic_write(self.path / MARKER, json.dumps(marker) + "\n")
        if self._tmp is not None:
            tmp, self._tmp = self._tmp, None
            files.install(tmp, self.target, lambda d: is_run(d) or not any(d.iterdir()))
            self.path = self.target
            self._created = []

    def abort(self) -> None:
        """Remove what this run created if it was never committed (nothing else)."""
        if self._tmp is not None:
            files.remove_ours(self._tmp)
            self._tmp = None
            self.path = self.target
        files.remove_created(self._created)  # the parents this run made, when still empty
        self._created = []
        self._pending = None

    def save_last(self, model, meta, state: dict[str, Any]) -> None:
        """Write the latest checkpoint and the training state together, atomically."""
        import torch

        tmp = files.temp_dir(self.last)
        try:
            write_checkpoint_files(model, meta, tmp)
            torch.save(state, tmp / STATE_FILE)
            give_umask_modes(tmp)
            files.install(tmp, self.last, is_checkpoint)
        finally:
            if tmp.exists():
                files.remove_ours(tmp)

    def save_best(self, model, meta) -> None:
        """Replace the best checkpoint (atomic rename)."""
        from geoseg.model.checkpoint import save_checkpoint

        save_checkpoint(model, meta, self.best, overwrite=True)

    def load_state(self) -> dict[str, Any]:
        """The training state of ``last/``, loaded without executing pickled code, checked."""
        import pickle

        import torch

        path = self.last / STATE_FILE
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
        except (
            pickle.UnpicklingError,
            RuntimeError,
            OSError,
            EOFError,
            ValueError,
            TypeError,
            KeyError,
            AttributeError,
            IndexError,
            UnicodeDecodeError,
        ) as exc:
            msg = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise CheckpointError(f"{path} is corrupt ({msg}); restart without --resume") from None
        check_state(state, path)
        return state

    def write_log(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite ``log.csv`` with ``rows`` (atomic)."""
        if not rows:
            return
        fields = list(rows[0])
        for r in rows[1:]:
            fields += [k for k in r if k not in fields]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        files.atomic_write(self.path / "log.csv", buf.getvalue())


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    """A number that is not infinite (NaN allowed: an IoU or mIoU without pixels is NaN)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and not math.isinf(v)


_ROW_NUMBERS = ("lr", "train_loss", "seconds", "val_miou")


def _row_problem(row: Any, epoch: int, last_step: int) -> str | None:
    """What is wrong with one log row of a training state (None: nothing)."""
    if not isinstance(row, dict):
        return f"a {type(row).__name__}, not a mapping"
    bad_keys = [
        k
        for k in row
        if not isinstance(k, str)
        or (k not in ("epoch", "step", *_ROW_NUMBERS) and not k.startswith("iou_"))
    ]
    if bad_keys:
        return f"unknown field {str(bad_keys[0])[:40]!r}"
    for key in ("epoch", "train_loss", "seconds"):
        if key not in row:
            return f"no {key}"
    if row["epoch"] != epoch or not _is_int(row["epoch"]):
        return f"epoch {str(row['epoch'])[:40]!r}, expected {epoch}"
    if "step" in row and not (_is_int(row["step"]) and row["step"] > last_step):
        return f"step {str(row['step'])[:40]!r} after step {last_step}"
    for key, value in row.items():
        if (key in _ROW_NUMBERS or key.startswith("iou_")) and not _is_real(value):
            return f"{key} {str(value)[:40]!r} is not a finite number"
    return None


def check_state(state: Any, path: Path) -> None:
    """Refuse a ``train_state.pt`` whose fields have the wrong types or impossible values."""
    import torch

    def bad(what: str) -> CheckpointError:
        return CheckpointError(
            f"{path} is not a valid training state ({what}); restart without --resume"
        )

    if not isinstance(state, dict):
        raise bad(f"a {type(state).__name__}, not a mapping")
    need = ("epoch", "step", "best_miou", "best_epoch", "rows", "optimizer", "torch_rng")
    missing = [k for k in need if k not in state]
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    epoch, step, best_epoch = state["epoch"], state["step"], state["best_epoch"]
    if not all(_is_int(v) and v >= 0 for v in (epoch, step, best_epoch)) or best_epoch > epoch:
        raise bad(f"epoch {epoch!r}, step {step!r}, best_epoch {best_epoch!r}")
    best = state["best_miou"]
    if not isinstance(best, int | float) or isinstance(best, bool) or math.isinf(best):
        raise bad(f"best_miou {best!r}")
    if epoch < 1:
        raise bad(f"epoch {epoch}: a saved state has at least one epoch")
    if step < epoch:
        raise bad(f"step {step} for {epoch} epochs (every epoch takes at least one step)")
    rows = state["rows"]
    if not isinstance(rows, list) or len(rows) != epoch:
        raise bad(f"log rows do not match epoch {epoch}")
    last_step = 0
    for i, row in enumerate(rows):
        problem = _row_problem(row, i + 1, last_step)
        if problem:
            raise bad(f"log row {i + 1}: {problem}")
        last_step = row.get("step", last_step)
    if "step" in rows[-1] and rows[-1]["step"] != step:
        raise bad(f"step {step} is not the last log row's step {rows[-1]['step']}")
    opt = state["optimizer"]
    if not isinstance(opt, dict) or not isinstance(opt.get("param_groups"), list):
        raise bad("optimizer state is not an optimizer's state_dict")
    rng = state["torch_rng"]
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8 or rng.dim() != 1:
        raise bad("torch_rng is not a byte tensor")
