"""The one writer of files and folders (atomic), and small readers of the environment:
package versions, the source tree's git state.

Every file goes to a temporary name in the same folder and is renamed into place
(os.replace is atomic on POSIX); every folder (an adapter, an export, an evaluation, a model
directory) is written into a temporary sibling and renamed into place when complete. A
crash never leaves half a file or half a folder under the final name. Files and folders get
the permissions of the user's umask (as open() and mkdir() give), not the 0600 / 0700 of
the temporary names they are written under.

>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> atomic_write_json(root / "a.json", {"x": 1})
>>> with atomic_dir(root / "folder") as tmp:
...     atomic_write_text(tmp / "f.txt", "hello")
>>> sorted(p.name for p in root.iterdir()), (root / "folder" / "f.txt").read_text()
(['a.json', 'folder'], 'hello')
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

REPO_ROOT = Path(__file__).resolve().parents[1]


def umask() -> int:
    """The process's umask, read without changing it where Linux tells it (/proc), else by
    setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~umask())   # mkstemp's 0600 -> what open() would give
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any, *, sort_keys: bool = False) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys, default=str) + "\n")


@contextmanager
def atomic_dir(out_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `out_dir`; on success it replaces `out_dir`, on error
    it is deleted, so no half-written folder is ever left at `out_dir`.

    An existing non-empty `out_dir` is refused unless `overwrite`; when replaced, the old
    folder is renamed aside first and deleted only after the new one is in place.
    """
    out = Path(out_dir)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{str(out)!r} exists and is not empty (pass overwrite=True)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp.chmod(0o777 & ~umask())       # mkdtemp's 0700 -> what mkdir() would give
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed version of each distribution name (None when it is not installed)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_info(root: Path = REPO_ROOT) -> dict:
    """{"commit": sha or None, "dirty": bool or None} of the source tree."""
    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
