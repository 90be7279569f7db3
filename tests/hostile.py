"""Drive the real CLI with hostile inputs and check that nothing was lost or left behind.

``run_cli`` calls ``cli.main`` in this process (the same error handling as the ``geoseg``
script, without a process start per case); ``snapshot`` records every file and folder under a
root (type, mode, content hash, link target), so a refused command can be checked to have left
the file system exactly as it was. Use a subprocess (``run_subprocess``) where signals or the
real exit path matter.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class CliResult:
    """Exit code and captured output of one CLI invocation."""

    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        """Lines of stderr that report an error (click's usage lines are context, not errors)."""
        return [ln for ln in self.err.splitlines() if "error" in ln.lower()]


def run_cli(*args: object) -> CliResult:
    """Run ``geoseg ARGS`` in this process; return its exit code and output."""
    import cli

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return CliResult(code, out.getvalue(), err.getvalue())


def run_subprocess(*args: object, timeout: float = 120, **kw) -> CliResult:
    """Run ``geoseg ARGS`` as a real process (for signals and the true exit path)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import cli; cli.main()", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=kw.pop("cwd", REPO),
        **kw,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: type, permission bits, and content hash or link target."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            elif stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                out[rel] = ("file", stat.S_IMODE(st.st_mode), digest)
            else:
                out[rel] = ("other", stat.S_IFMT(st.st_mode))
    return out


def assert_refused(result: CliResult, before: dict, after: dict, *words: str) -> None:
    """One error line naming ``words``, a non-zero exit, no traceback, nothing changed."""
    assert result.code != 0, f"exit 0 for a bad input:\n{result.out}\n{result.err}"
    assert "Traceback" not in result.err, result.err
    assert len(result.error_lines) == 1, f"expected one error line, got:\n{result.err}"
    line = result.error_lines[0]
    for w in words:
        assert w.lower() in line.lower(), f"{w!r} not in {line!r}"
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the file system changed: {changed}"
