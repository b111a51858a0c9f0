"""Atomic file output: write to a temporary file in the same folder, then rename over the target.

A crash or interrupt mid-write leaves the old file (or nothing), never half a file. A writer killed
outright (SIGKILL, out of memory) cannot delete its temporary file; temporary names carry the host, the
pid namespace and the process id, so :func:`remove_stale_temporaries` (run when ``generate`` starts
writing into its folder) removes those whose process is gone, and never one that a live writer, a writer
on another host or in another container sharing the folder still owns. Off Linux/POSIX nothing is swept.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import socket
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from circuits.errors import OutputError


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(file)`` on a temporary file next to ``path`` and move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_owner()}.", suffix=TEMP_SUFFIX)
    try:
        # mkstemp makes the file private (0600); an output should get the mode a plain open() gives it.
        os.chmod(tmp, _default_file_mode())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


TEMP_SUFFIX = ".tmp"
#: ``.<name>.<host>~<pid>.<random>.tmp``: the owner part is what a sweep checks
_TEMP_NAME = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9_]+)~(?P<pid>[0-9]+)\.[^.]+\.tmp$")


#: ``os.kill(pid, 0)`` probes a process only on POSIX (on Windows signal 0 is a console Ctrl+C): elsewhere
#: every temporary counts as live, and nothing is swept
_PROBES_PIDS = os.name == "posix"


@functools.cache
def _host() -> str:
    """The host name, plus the pid namespace where there is one: containers that share a host name
    (``--network host``) number their processes independently, so a pid alone names no process."""
    host = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"
    with contextlib.suppress(OSError):
        host += f"_ns{os.stat('/proc/self/ns/pid').st_ino}"
    return host


def _owner() -> str:
    return f"{_host()}~{os.getpid()}"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` (of this host and pid namespace) still runs; True when that cannot be told."""
    if not _PROBES_PIDS:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else (PermissionError), or the probe failed
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str], *, recursive: bool = True) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` calls on this host left behind when their
    process was killed (its id no longer runs). Files of live processes, of other hosts and files
    not named by :func:`atomic_write` are kept. Returns the paths removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host, removed = _host(), []
    for path in folder.rglob(f"*{TEMP_SUFFIX}") if recursive else folder.glob(f"*{TEMP_SUFFIX}"):
        match = _TEMP_NAME.match(path.name)
        if match is None or match["host"] != host or _alive(int(match["pid"])):
            continue
        try:
            path.unlink()
        except FileNotFoundError:  # another sweep got there first
            continue
        except OSError as error:
            raise OutputError(f"{str(path)!r} (a temporary file a killed run left) cannot be removed: "
                              f"{error.strerror or type(error).__name__}; remove it by hand") from None  # fmt: skip
        removed.append(path)
    return removed


def check_writable(folder: str | os.PathLike[str], argument: str = "out") -> Path:
    """Make sure files can be written in ``folder`` (creating it and its parents), before the work that
    fills it: an :class:`~circuits.errors.OutputError` naming ``argument`` and the folder otherwise.

    It writes and removes one empty temporary file: permissions, read-only file systems, a file
    standing where a folder should be and a missing drive all show up the same way. Folders it had
    to create for that are removed again (the work that follows creates them when it writes).
    """
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".circuits-write-check-")
        os.close(fd)
        os.unlink(probe)
        for path in created:  # deepest first
            path.rmdir()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        where = f" ({error.filename})" if error.filename and str(error.filename) != str(folder) else ""
        raise OutputError(f"{argument}={str(folder)!r} cannot be written: {reason}{where}; "
                          "give a folder you can write to") from None  # fmt: skip
    return folder


@functools.cache
def _default_file_mode() -> int:
    # os.umask can only be read by setting it; do that once, not on every write (another thread could
    # create a file in between)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_json(path: str | os.PathLike[str], data: Any, *, sort_keys: bool = True) -> Path:
    """``data`` as indented JSON, written atomically; ``sort_keys=False`` keeps insertion order (tables, rows)."""
    text = json.dumps(data, indent=2, sort_keys=sort_keys, default=str).encode()
    return atomic_write(path, lambda f: f.write(text))


def image_grid(rows: Sequence[Sequence[Any]], *, scale: int = 1, pad: int = 2) -> Any:
    """Paste PIL images into a grid (rows of equal-sized images), upscaled by ``scale``."""
    from PIL import Image

    w, h = rows[0][0].size
    w, h = w * scale, h * scale
    n_cols = max(len(r) for r in rows)
    grid = Image.new("RGB", (n_cols * (w + pad) + pad, len(rows) * (h + pad) + pad), "white")
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            grid.paste(image.resize((w, h), Image.NEAREST), (pad + j * (w + pad), pad + i * (h + pad)))
    return grid


def save_image(path: str | os.PathLike[str], image: Any) -> Path:
    suffix = Path(path).suffix.lstrip(".").upper() or "PNG"
    fmt = "JPEG" if suffix == "JPG" else suffix
    return atomic_write(path, lambda f: image.save(f, format=fmt))
