"""Atomic writes: a result or checkpoint is either complete on disk or absent.

Everything is written to a temporary sibling and renamed into place; ``os.replace`` is atomic on
POSIX within one filesystem, so a reader (or a resumed job) never sees a half-written file.
When the disk fills up mid-write the temporary is removed, the previous version stays as it was,
and the error (:class:`DiskFullError`) says so, whichever library (json, torch, safetensors) hit it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from mixlab.errors import MixlabError


class DiskFullError(MixlabError, OSError):
    """A write ran out of disk space; nothing was replaced. Also an ``OSError`` (ENOSPC), so
    code that handles OSError keeps working."""

    def __init__(self, path: Path, cause: BaseException):
        free = _free_bytes(path.parent)
        super().__init__(
            errno.ENOSPC,
            f"the disk is full: writing {path} failed ({type(cause).__name__}: {cause}); "
            f"{free} bytes free there. The previous {path.name}, if any, is intact; "
            "free some space and run again (finished work is resumed)",
        )


def _free_bytes(folder: Path) -> int:
    try:
        st = os.statvfs(folder)
    except OSError:
        return -1
    return st.f_bavail * st.f_frsize


def _disk_full(e: BaseException, folder: Path) -> bool:
    """Whether ``e`` means the disk filled up: ENOSPC/EDQUOT, or (torch and safetensors report a
    failed write in their own words) any write error while the folder's filesystem has no room left."""
    if isinstance(e, DiskFullError):
        return False  # already explained
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if "No space left on device" in str(e):
        return True
    return isinstance(e, OSError | RuntimeError) and 0 <= _free_bytes(folder) < (1 << 20)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared like any file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        full = _disk_full(e, path.parent)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if full:
            raise DiskFullError(path, e) from e
        raise
    _fsync_dir(path.parent)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """Write JSON with sorted keys so identical content gives identical bytes."""
    return write_text(path, json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows: Any) -> Path:
    """Write an iterable of dicts as JSON lines (sorted keys), atomically."""
    opts = orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
    return write_bytes(path, b"".join(orjson.dumps(r, option=opts) for r in rows))


@contextlib.contextmanager
def directory(final: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Build a directory in a temporary sibling and rename it to ``final`` only on success.

    On an exception the temporary directory is removed and ``final`` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        _fsync_dir(tmp)
        if final.exists():
            if not overwrite:
                raise FileExistsError(final)
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException as e:
        full = _disk_full(e, final.parent)  # before the cleanup frees the space again
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise DiskFullError(final, e) from e
        raise
