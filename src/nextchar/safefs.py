"""Crash-safe file system steps: folders built beside their target and swapped in, stale leftovers, locks, disk full.

A folder that a command produces as a whole (a prepared data dir, a package) is built in a private sibling
`.<name>.<purpose>-<pid>-<host>-<random>` and swapped in at the end with one rename, so the target is at every
instant either its old complete self or the new complete one. A kill -9 leaves the sibling behind; the next command
of the same purpose removes it once its pid is gone (on this host), so leftovers never pile up.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from nextchar.errors import UserError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
HOST = socket.gethostname()


def is_no_space(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in NO_SPACE


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def free_bytes(path: str | Path) -> int | None:
    """Free space (bytes) for an unprivileged writer on the file system holding path (its nearest existing folder)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


class NoSpace(UserError):
    """A write found the disk (or quota) full; path and need (bytes, or None) for callers that know more."""

    def __init__(self, message: str, path: Path, need: int | None) -> None:
        super().__init__(message)
        self.path, self.need = path, need


def no_space_error(path: str | Path, need: int | None = None, note: str = "") -> NoSpace:
    """The one-line error for a write that found the disk (or quota) full: the path, the space needed and free."""
    free = free_bytes(Path(path).parent)
    have = f"{human_bytes(free)} free" if free is not None else "free space unknown"
    want = f"needs about {human_bytes(need)}, " if need is not None else ""
    return NoSpace(f"{path}: no space left on device ({want}{have} there){'; ' + note if note else ''}",
                   Path(path), need)


# -------------------------------------------------------------------------- staging folders and the swap


def _prefix(target: Path, purpose: str) -> str:
    return f".{target.name}.{purpose}-"


def _owner(name: str, prefix: str) -> tuple[int, str] | None:
    """(pid, host) from a staging name `<prefix><pid>-<host>-<8 random>[.old]`, or None when it is not one."""
    m = re.fullmatch(r"(\d+)-(.+)-[a-z0-9_]{8}(\.old)?", name[len(prefix):])
    return (int(m.group(1)), m.group(2)) if m else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (a zombie counts as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:  # a killed child its parent has not reaped yet still answers kill(0)
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def clean_stale(target: Path, purpose: str) -> list[Path]:
    """Remove the staging siblings of target (see staging_dir) whose process is gone; returns what was removed."""
    prefix = _prefix(target, purpose)
    removed = []
    try:
        siblings = [p for p in target.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for p in siblings:
        owner = _owner(p.name, prefix)
        if owner is None or owner[1] != HOST or pid_alive(owner[0]):
            continue  # not ours to judge: another host's, or a live process's
        if p.name.endswith(".old") and not target.exists() and not target.is_symlink():
            os.rename(p, target)  # killed between replace_dir's two renames: the old contents go back
            continue
        rmtree(p)
        removed.append(p)
    return removed


def staging_dir(target: Path, purpose: str) -> Path:
    """A new empty private folder beside target (same file system, so a rename can swap it in); stale ones of
    the same purpose are removed first."""
    clean_stale(target, purpose)
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{_prefix(target, purpose)}{os.getpid()}-{HOST}-"))


def rmtree(path: Path) -> None:
    """Remove a tree, making read-only folders writable on the way (a user may chmod what we wrote)."""
    def retry(func, p, _exc):
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), stat.S_IRWXU)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, stat.S_IRWXU)
            func(p)

    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, onerror=retry)


def fsync_dir(path: Path) -> None:
    """Make a rename in this folder durable (no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
try:
    _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
except (OSError, AttributeError):  # not Linux/glibc >= 2.28
    _renameat2 = None


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where the system or file system
    cannot, OSError for anything else."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(new: Path, target: Path) -> None:
    """Put folder new at target in one step and delete what target held: a kill at any instant leaves target
    either old and whole or new and whole. new must be a staging_dir of target (the old contents go there to
    be deleted, and a kill while deleting leaves a stale sibling that the next clean_stale removes)."""
    try:
        os.rename(new, target)  # target missing or an empty folder: rename replaces it atomically
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        if not exchange(new, target):
            # No atomic exchange here (another OS, or a file system without it): two renames. Killed between
            # them, target is missing for a moment and clean_stale puts the .old sibling back.
            old = new.with_name(new.name + ".old")
            os.rename(target, old)
            os.rename(new, target)
            new = old
        fsync_dir(target.parent)
        rmtree(new)
        return
    fsync_dir(target.parent)


# -------------------------------------------------------------------------- locks


class RunLock:
    """An exclusive lock file holding {"pid", "host", "started", "command"}; a second writer gets a one-line
    UserError naming the holder. A lock whose pid is gone on this host is stale (a crash, kill -9) and is taken
    over; a lock from another host is trusted until its owner removes it (we cannot see that host's processes).
    """

    def __init__(self, path: str | Path, command: str = "") -> None:
        self.path = Path(path)
        self.command = command
        self.held = False
        self.took_over: dict | None = None  # the holder of a stale lock this one replaced

    def _holder(self) -> dict | None:
        try:
            d = json.loads(self.path.read_text(encoding="utf-8"))
            return d if isinstance(d, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable or half-written: judged by age below

    def acquire(self) -> RunLock:
        me = {"pid": os.getpid(), "host": HOST, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "command": self.command}
        data = (json.dumps(me) + "\n").encode("utf-8")
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released meanwhile: try again
                if self._stale(holder):
                    self._break(holder)
                    self.took_over = holder
                    continue
                raise UserError(self._busy_message(holder)) from None
            except OSError as e:
                if is_no_space(e):
                    raise no_space_error(self.path, len(data)) from None
                raise UserError(f"{self.path}: cannot create lock file ({e.strerror})") from None
            try:
                os.write(fd, data)
                os.fsync(fd)
            except OSError as e:
                os.close(fd)
                self.path.unlink(missing_ok=True)
                if is_no_space(e):
                    raise no_space_error(self.path, len(data)) from None
                raise UserError(f"{self.path}: cannot write lock file ({e.strerror})") from None
            os.close(fd)
            self.held = True
            return self
        raise UserError(f"{self.path}: lock keeps changing hands; is another process starting on this run?")

    def _stale(self, holder: dict) -> bool:
        pid, host = holder.get("pid"), holder.get("host")
        if not isinstance(pid, int) or not isinstance(host, str):
            # written by a process killed between create and write: stale once it is clearly not in progress
            try:
                return time.time() - self.path.stat().st_mtime > 10
            except OSError:
                return False
        return host == HOST and not pid_alive(pid)

    def _break(self, holder: dict) -> None:
        # Rename, then remove: of two processes breaking the same stale lock, only one rename succeeds, and
        # neither can delete a fresh lock the other just created.
        grave = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return
        if self._holder_at(grave) != holder:  # someone replaced it between our read and rename: put it back
            with contextlib.suppress(OSError):
                os.link(grave, self.path)
        grave.unlink(missing_ok=True)

    @staticmethod
    def _holder_at(p: Path) -> dict:
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            return d if isinstance(d, dict) else {}
        except (OSError, ValueError):
            return {}

    def _busy_message(self, holder: dict) -> str:
        who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
        since = f" since {holder['started']}" if holder.get("started") else ""
        what = f" ({holder['command']})" if holder.get("command") else ""
        return (f"{self.path}: in use by {who}{since}{what}; wait for it to finish or stop it (if that process "
                f"is gone, delete this file)")

    def release(self) -> None:
        if self.held:
            if self._holder_at(self.path).get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def locked(path: str | Path, command: str = "") -> Iterator[RunLock]:
    lock = RunLock(path, command).acquire()
    try:
        yield lock
    finally:
        lock.release()
