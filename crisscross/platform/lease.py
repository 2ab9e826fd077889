"""One writer per run folder (and per sweep folder): a lease file that names its holder.

The lease, `crisscross_lease.json`, holds the writer's host, pid, start time and a heartbeat that
a thread renews. A second live writer is refused with a message naming the holder; a lease whose
process is gone (same host) or whose heartbeat is older than STALE_SECONDS is taken over. Local
folders are created with an exclusive hard link under a file lock; on object storage (s3://) the
check and the write are not one step, so two launches in the same second may both pass.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow.fs as pafs

from crisscross.datasets.fs import atomic_write_text, join, resolve

log = logging.getLogger(__name__)
LEASE_FILE = "crisscross_lease.json"
HEARTBEAT_SECONDS = 30.0  # how often the holder renews its lease
STALE_SECONDS = 300.0  # a lease not renewed for this long belongs to a writer that is gone


class LeaseError(RuntimeError):
    """The folder has another live writer; the message names it and says what to do."""


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    started: float  # time.time() of the launch
    heartbeat: float  # time.time() of the last renewal
    token: str  # tells this launch's lease from a later one by the same pid

    def describe(self, now: float) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return (
            f"pid {self.pid} on host {self.host}, started {started}, "
            f"last heartbeat {max(0, round(now - self.heartbeat))} s ago"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def stale_reason(holder: Holder, now: float) -> str | None:
    """Why `holder` is no longer writing (its process is gone, its heartbeat stopped), or None."""
    if holder.host == socket.gethostname() and not _alive(holder.pid):
        return f"its process {holder.pid} on this host is gone"
    if now - holder.heartbeat > STALE_SECONDS:
        return f"its heartbeat stopped {round(now - holder.heartbeat)} s ago"
    return None


def _read(path: str) -> Holder | None:
    """The lease at `path`; None when there is none. A damaged one reads as a holder long dead."""
    fs, inner = resolve(path)
    try:
        with fs.open_input_stream(inner) as stream:
            raw = stream.read()
    except FileNotFoundError:
        return None
    try:
        return Holder(**json.loads(raw))
    except (ValueError, TypeError):  # cut short by a crash: no one can be renewing it
        return Holder(host="?", pid=0, started=0.0, heartbeat=0.0, token="")


@contextlib.contextmanager
def _locked(folder: str) -> Iterator[None]:
    """Serialise lease checks of one local folder between processes (no-op on object storage)."""
    fs, inner = resolve(folder)
    if not isinstance(fs, pafs.LocalFileSystem):
        yield
        return
    os.makedirs(inner, exist_ok=True)
    fd = os.open(os.path.join(inner, f".{LEASE_FILE}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _create_exclusive(path: str, text: str) -> bool:
    """Write `text` to a new file `path`; False when `path` already exists."""
    fs, inner = resolve(path)
    if not isinstance(fs, pafs.LocalFileSystem):
        if fs.get_file_info(inner).type != pafs.FileType.NotFound:
            return False
        atomic_write_text(path, text)
        return True
    temporary = f"{inner}.{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(temporary, "w") as handle:  # a full disk fails here: nothing is left behind
            handle.write(text)
        os.link(temporary, inner)  # fails when the lease exists: exclusive, and never half-written
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            return False
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return True


class Lease:
    """Hold `folder` for this process while the `with` block runs; LeaseError when another
    live writer holds it. `what` names the kind of writer ("pretraining"), `other` the way to
    start a separate one ("another run.name"), in messages."""

    def __init__(
        self,
        folder: str,
        *,
        what: str,
        other: str = "another run.name",
        say: Callable[[str], None] = log.warning,
    ) -> None:
        self.folder, self.what, self.other, self.say = folder, what, other, say
        self.path = join(folder, LEASE_FILE)
        now = time.time()
        self.holder = Holder(socket.gethostname(), os.getpid(), now, now, secrets.token_hex(8))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _text(self, **changes: Any) -> str:
        return json.dumps(asdict(self.holder) | changes)

    def acquire(self) -> None:
        with _locked(self.folder):
            if not _create_exclusive(self.path, self._text()):
                self._take_over()
        self._thread = threading.Thread(target=self._beat, name="crisscross-lease", daemon=True)
        self._thread.start()

    def _take_over(self) -> None:
        """Replace a stale lease with this one; LeaseError when its holder is alive."""
        now = time.time()
        other = _read(self.path)
        if other is not None:
            reason = stale_reason(other, now)
            if reason is None:
                raise LeaseError(
                    f"{self.folder} is in use by another {self.what}: {other.describe(now)} "
                    f"(see {self.path}). Wait for it to end or stop it, or use {self.other}; "
                    f"a lease not renewed for {STALE_SECONDS / 60:.0f} minutes is "
                    "taken over by the next launch."
                )
            self.say(f"taking over {self.path} from {other.describe(now)}: {reason}")
        atomic_write_text(self.path, self._text())

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                current = _read(self.path)
                if current is None or current.token != self.holder.token:
                    log.error("%s: this process's lease was taken over by another", self.path)
                    return
                atomic_write_text(self.path, self._text(heartbeat=time.time()))
            except OSError as exc:  # storage briefly unavailable: try again at the next beat
                log.warning("%s: heartbeat not written (%s)", self.path, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with _locked(self.folder):
            current = _read(self.path)
            if current is not None and current.token == self.holder.token:
                fs, inner = resolve(self.path)
                fs.delete_file(inner)

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
