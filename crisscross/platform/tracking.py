"""MLflow tracking: where the store is, whether it answers, and the loop's metric logger.

The embedded default is a sqlite store, `mlflow.db`, in the working directory. Paths are made
absolute on the driver, because Ray workers run in other directories.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from crisscross.config import ExperimentConfig
from crisscross.datasets.fs import atomic_write_text, join, resolve
from crisscross.platform.journal import BATCH, JOURNAL_FILE, MetricJournal
from crisscross.platform.redact import redact, scrub

log = logging.getLogger(__name__)
DEFAULT_STORE = "mlflow.db"
PENDING_CLOSE = "crisscross_pending_close.json"  # in the run folder: a status not yet set


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says which and why."""


def tracking_uri(config: ExperimentConfig) -> str:
    """The config's URI, else $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db; absolute."""
    uri = config.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_STORE
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///")
        return f"sqlite:///{Path(path).expanduser().resolve()}"
    if "://" not in uri:
        path = Path(uri).expanduser().resolve()
        return f"sqlite:///{path}" if path.suffix == ".db" else path.as_uri()
    return uri


@contextmanager
def _fail_fast(timeout: int = 10) -> Iterator[None]:
    """One HTTP attempt with a `timeout` instead of MLflow's minutes of retries (a server that
    is not there refuses at once; the timeout is for one that is there but slow)."""
    saved = {
        k: os.environ.get(k)
        for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    }
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _one_creator(uri: str) -> Iterator[None]:
    """For a sqlite store, one process at a time in the block: MLflow creates and migrates the
    schema on first use, and processes doing that at once all fail (`table ... already exists`)
    and leave the store broken. A file lock beside the database serialises them."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    fd = os.open(db.parent / f".{db.name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def check_tracking(uri: str) -> None:
    """Raise TrackingError, before any training starts, when the store at `uri` does not answer.
    A new sqlite store is created here, by the driver, before any worker opens it."""
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise TrackingError(f"tracking store {redact(uri)}: folder {folder} does not exist")
    try:
        # 30 s: a busy head answered its first signed-in request after more than 10 (a
        # password check and the store's first query, with every core taken)
        with _fail_fast(timeout=30), _one_creator(uri):
            MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # any failure here means the store is unusable
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = scrub(first, uri)  # the error may quote the URI with its credentials
        if any(code in first for code in ("error code 401", "error code 403")):
            raise TrackingError(
                f"tracking server {redact(uri)} refused this client ({first[:300]}); set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a user of the server "
                "that may use its experiments"
            ) from None
        raise TrackingError(
            f"tracking server {redact(uri)} is unreachable ({first[:300]}); start it, or set "
            "tracking.uri / MLFLOW_TRACKING_URI to one that answers (unset: a local sqlite store)"
        ) from None


def server_answers(client: MlflowClient, run_id: str) -> None:
    """Return when the tracking server answers for the run within seconds; else raise
    MlflowException or a requests error (one attempt, no retries)."""
    with _fail_fast():
        client.get_run(run_id)


def close_run(
    client: MlflowClient,
    run_id: str,
    status: str,
    tags: Mapping[str, str] | None = None,
    *,
    run_dir: str | None = None,
) -> str:
    """Set the run's `tags` and final `status` within seconds; "" when done, else a sentence
    to add to the message the command ends with (the server did not answer). With `run_dir`,
    an unanswered close is kept there (PENDING_CLOSE) for `crisscross sync` to set later."""
    tags = {key: redact(str(value)) for key, value in (tags or {}).items()}
    try:
        with _fail_fast():
            for key, value in tags.items():
                client.set_tag(run_id, key, value)
            client.set_terminated(run_id, status=status)
    except Exception as exc:  # any failure: the command still ends with its own message
        note = f"MLflow run {run_id} still shows RUNNING, not {status}: {unanswered(exc, client)}"
        if run_dir is not None:
            pending = join(run_dir, PENDING_CLOSE)
            try:
                close = {"run_id": run_id, "status": status, "tags": tags}
                atomic_write_text(pending, json.dumps(close))
                note += (
                    f"; kept in {redact(pending)}: `crisscross sync {redact(run_dir)}` sets it "
                    "once the server answers"
                )
            except OSError as error:  # the sentence alone, then
                log.warning("%s: not written (%s)", redact(pending), error)
        return f" ({note})"
    return ""


def sync_run(
    client: MlflowClient, run_id: str, run_dir: str, close: dict[str, Any] | None
) -> list[str]:
    """Send what the run folder holds for the tracking server: the metrics the workers
    journaled, and `close` (read_pending_close), a final status that could not be set; what
    was sent, a line each. MlflowException (or a requests error) when the server does not
    answer: nothing is removed then."""
    done = []
    journal = MetricJournal(join(run_dir, JOURNAL_FILE))
    server_answers(client, run_id)  # the server answers, and has the run
    with _fail_fast():
        sent = journal.replay(client, run_id)
        if sent:
            done.append(f"metrics: {sent} sent from {redact(journal.path)}")
        if close is not None:
            for key, value in close["tags"].items():
                client.set_tag(run_id, key, value)
            client.set_terminated(run_id, status=close["status"])
            drop_pending_close(run_dir)
            done.append(f"status: {close['status']} (from {redact(join(run_dir, PENDING_CLOSE))})")
    return done


def read_pending_close(run_dir: str) -> dict[str, Any] | None:
    """{"run_id", "status", "tags"}: the close that close_run kept in `run_dir`; None when
    there is none. ValueError naming the file when it is damaged."""
    path = join(run_dir, PENDING_CLOSE)
    fs, inner = resolve(path)
    try:
        with fs.open_input_stream(inner) as stream:
            close = json.loads(stream.read().decode("utf-8"))
        return {
            "run_id": str(close["run_id"]),
            "status": str(close["status"]),
            "tags": dict(close.get("tags") or {}),
        }
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"{redact(path)}: damaged ({type(exc).__name__}: {exc}); delete it, and the run "
            "keeps the status the tracking server shows"
        ) from None


def drop_pending_close(run_dir: str) -> None:
    """Remove the close kept in `run_dir` (sent, or outdated by a relaunch)."""
    fs, inner = resolve(join(run_dir, PENDING_CLOSE))
    with contextlib.suppress(FileNotFoundError):
        fs.delete_file(inner)


def unanswered(exc: BaseException, client: MlflowClient) -> str:
    """ "the tracking server <uri> did not answer (<first line>)", credentials masked."""
    text = str(exc).strip()
    first = scrub(text.splitlines()[0] if text else type(exc).__name__, client.tracking_uri)
    return f"the tracking server {redact(client.tracking_uri)} did not answer ({first[:300]})"


def experiment_id(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # created meanwhile by another process
        return client.get_experiment_by_name(name).experiment_id


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 1}} -> {"optim.lr": 1}."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def log_params_and_tags(
    client: MlflowClient, run_id: str, params: Mapping[str, Any], tags: Mapping[str, str]
) -> None:
    """Log `params` and `tags` on the run, every value with its credentials masked (`redact`)."""
    items = [Param(k, redact(str(v))) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start : start + 100])
    client.log_batch(run_id, tags=[RunTag(k, redact(str(v))) for k, v in tags.items()])


def set_tag(client: MlflowClient, run_id: str, key: str, value: str) -> None:
    """One tag, its value with credentials masked (a checkpoint or folder URI may carry them)."""
    client.set_tag(run_id, key, redact(str(value)))


# A worker's MLflow calls: one retry and a short timeout (MLflow's defaults, 7 retries with
# backoff and 120 s, keep every rank waiting in the all-reduce for minutes); set explicitly, the
# environment's values win.
WORKER_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
RETRY_SECONDS = 60.0  # after a failed flush, metrics go to the journal for this long


@dataclass
class MlflowTracker:
    """The training loop's Tracker for one MLflow run: buffered, deduplicated by (key, step).

    Picklable: Ray sends it to the workers, where `open` connects. On each open it reads the last
    step stored for every metric, and drops anything at or before it, so a worker group restarted
    from a checkpoint neither loses nor duplicates what was logged before the failure.
    Tracking never stops training: what the server does not take is appended to `journal` (a
    file in the run folder) and replayed, exactly once, by the next flush that succeeds or the
    next open. Before a checkpoint the loop calls `persist`, which copies the buffer to the
    journal (a local append, no server) so that the checkpoint never waits on the server and a
    crash between the two loses nothing; the flush after it then clears that copy.
    """

    uri: str
    run_id: str
    flush_seconds: float = 5.0
    journal: str = ""  # where unsent metrics go; "" keeps them in memory until the next flush
    _client: MlflowClient | None = field(default=None, init=False, repr=False)
    _floor: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _buffer: list[Metric] = field(default_factory=list, init=False, repr=False)
    _flushed: float = field(default=0.0, init=False, repr=False)
    _retry_at: float = field(default=0.0, init=False, repr=False)
    _floor_known: bool = field(default=False, init=False, repr=False)
    # the journal may hold metrics the buffer does not (an outage, or an open that could not
    # replay it): the next flush replays it; otherwise it holds at most `persist`'s copy
    _dirty: bool = field(default=False, init=False, repr=False)
    _persisted: bool = field(default=False, init=False, repr=False)

    def __repr__(self) -> str:  # Ray shows a job's parts in errors: never the credentials
        return f"MlflowTracker(uri={redact(self.uri)!r}, run_id={self.run_id!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "run_id": self.run_id,
            "flush_seconds": self.flush_seconds,
            "journal": self.journal,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def open(self) -> None:
        for key, value in WORKER_HTTP.items():
            os.environ.setdefault(key, value)
        self._client = MlflowClient(self.uri)
        self._buffer, self._flushed, self._floor = [], time.monotonic(), {}
        self._floor_known, self._dirty, self._persisted = False, bool(self.journal), False
        try:
            if self.journal:
                MetricJournal(self.journal).replay(self._client, self.run_id)
                self._dirty = False
            self._read_floor()
        except Exception as exc:  # the server is down: train on; the first flush dedupes
            self._down(exc)

    def _read_floor(self) -> None:
        """The last stored step of every metric: anything at or before it is not sent again."""
        keys = self._client.get_run(self.run_id).data.metrics
        self._floor = {
            key: max(m.step for m in self._client.get_metric_history(self.run_id, key))
            for key in keys
        }
        self._floor_known = True

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        stamp = int(time.time() * 1000)
        self._buffer.extend(
            Metric(key, float(value), stamp, step)
            for key, value in metrics.items()
            if step > self._floor.get(key, -1)
        )
        if time.monotonic() - self._flushed >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self._client is None:
            return
        self._flushed = time.monotonic()
        if self._flushed < self._retry_at:  # still down a moment ago: do not wait on it again
            self._keep()
            return
        try:
            if self._dirty:  # everything goes through the journal's replay, which dedupes
                self._keep()
                MetricJournal(self.journal).replay(self._client, self.run_id)
                self._dirty = self._persisted = False
            if not self._floor_known:  # the server was down at open: drop what it already has
                self._read_floor()
                self._buffer = [m for m in self._buffer if m.step > self._floor.get(m.key, -1)]
            while self._buffer:  # what was sent leaves the buffer: a failure keeps the rest
                self._client.log_batch(self.run_id, metrics=self._buffer[:BATCH])
                del self._buffer[:BATCH]
        except Exception as exc:  # any failure: the metrics wait in the journal
            self._down(exc)
            self._keep()
            return
        if self._persisted:  # its copy in the journal is sent now
            MetricJournal(self.journal).clear()
            self._persisted = False
        if self._retry_at:
            log.warning(
                "tracking server %s answers again: journaled metrics sent", redact(self.uri)
            )
        self._buffer, self._retry_at = [], 0.0

    def persist(self) -> None:
        """Copy the buffer to the journal, without the server: what a checkpoint is about to
        cover survives a crash before the next flush (whose replay or send clears the copy)."""
        if self._client is None or not self.journal or not self._buffer:
            return
        if self._persisted or self._dirty:  # the journal holds an older copy: keep it whole
            self._keep()
            self._dirty = True
            return
        MetricJournal(self.journal).append(self._buffer)
        self._persisted = True

    def _keep(self) -> None:
        if self.journal:
            MetricJournal(self.journal).append(self._buffer)
            self._buffer = []
            self._dirty = True

    def _down(self, exc: BaseException) -> None:
        if not self._retry_at:
            first = scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "", self.uri)
            log.warning(
                "tracking server %s did not answer (%s); training goes on, metrics are kept in "
                "%s and sent when it answers",
                redact(self.uri),
                first[:300] or type(exc).__name__,
                self.journal or "memory",
            )
        self._retry_at = time.monotonic() + RETRY_SECONDS
