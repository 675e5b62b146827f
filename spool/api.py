"""The Python API of README, Python API: `Spool(path)` and its verbs, a thin layer over the
store."""

from __future__ import annotations

import builtins
import errno
import os
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from spool.config import Config, load_config
from spool.dependencies import dependencies, require_known
from spool.errors import ConfigError, Conflict, InvalidInput, JobNotFound, WaitTimeout
from spool.explain import explain
from spool.job import Job, normalize, renew
from spool.layout import (
    STATES,
    Layout,
    default_host,
    new_id,
    parse_pending_name,
    parse_processing_name,
    validate_host,
    validate_id,
)
from spool.store import Store
from spool.timeutil import UTC, format_time, parse_duration, parse_time

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The real clock; only outermost callers use it, everything else takes `now`."""
    return datetime.now(UTC)


def unreadable_body(state: str, path: Path, exc: Exception) -> dict[str, Any]:
    """What a listing shows of a job file it cannot read: its id (from its name) and why."""
    if state == "pending":
        parsed = parse_pending_name(path.name)
        job_id = parsed.id if parsed else path.stem
    elif state == "processing":
        job_id = (parse_processing_name(path.name) or (path.stem,))[0]
    else:
        job_id = path.stem
    problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return {"id": job_id, "unreadable": True, "error": f"cannot read {path}: {problem}"}


def _names(values: Iterable[str | Iterable[str]]) -> tuple[str, ...]:
    """Names given one by one or as lists, flattened: `pause("a", ["b", "c"])`."""
    flat: list[str] = []
    for value in values:
        flat.extend([value] if isinstance(value, str) else value)
    return tuple(flat)


# submit_many: a spec whose other keys are these, with equal values of equal types, is checked
# once per batch (`_build_many`); args, id and unique are each job's own
_RENEWED = frozenset({"args", "id", "unique"})
_SHARED = frozenset({"job", "priority", "at", "slots", "timeout", "max_attempts", "schedule"})


def _template_key(spec: dict[str, Any]) -> tuple[Any, ...] | None:
    """What a spec shares with others of its batch, or None when it is to be built alone."""
    if not spec.keys() <= _RENEWED | _SHARED:
        return None
    key = tuple(sorted((name, type(value), value) for name, value in spec.items()
                       if name not in _RENEWED))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _warn_stderr(message: str) -> None:
    print(f"Warning: {message}", file=sys.stderr)


class Spool:
    """A spool directory, seen from one host.

    With `read_only=True` (the commands that only read: ls, show, logs, status, explain,
    events, doctor, fsck) a broken spool.toml does not stop it: the problem is kept in
    `config_error`, said once through `warn` (default: one line on stderr), and the defaults
    are used. A Spool that writes (the default) raises the ConfigError instead.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, host: str | None = None,
                 config: Config | None = None, clock: Clock = utc_now,
                 read_only: bool = False, warn: Callable[[str], None] | None = None) -> None:
        root = Path(path if path is not None else os.environ.get("SPOOL_DIR") or "spool")
        if "\0" in str(root):
            raise InvalidInput(f"spool directory {str(root)!r} contains a NUL byte")
        self.layout = Layout(root.absolute())
        self.host = validate_host(host or default_host())
        self.clock = clock
        self._config = config
        self._store: Store | None = None
        self.read_only = read_only
        self.config_error: ConfigError | None = None
        self._warn = warn if warn is not None else _warn_stderr

    @property
    def path(self) -> Path:
        return self.layout.root

    @property
    def config(self) -> Config:
        if self._config is None:
            path = self._config_path()
            try:
                self._config = load_config(path)
            except ConfigError as exc:
                if not self.read_only:
                    raise
                self.config_error = exc
                self._config = Config(path=path)
                self._warn(f"spool.toml is broken, using the defaults: {exc}")
        return self._config

    def reload_config(self) -> Config:
        """Re-read spool.toml (ConfigError leaves the current config in force)."""
        config = load_config(self._config_path())
        self._config = config
        if self._store is not None:
            self._store.config = config
        return config

    def _config_path(self) -> Path:
        """spool.toml of an existing spool; a fault while looking (EACCES, ESTALE) is a
        ConfigError caused by the OSError, like a fault while reading the file."""
        try:
            return self.layout.require().config_path
        except OSError as exc:
            raise ConfigError(f"cannot check the spool at {self.layout.root}: "
                              f"{exc.filename}: {exc.strerror or exc}") from exc

    @property
    def store(self) -> Store:
        if self._store is None:
            self.layout.require()
            self._store = Store(self.layout.root, self.config, self.host)
        return self._store

    # -- enqueue -------------------------------------------------------------------------

    def build(self, job: str, args: Any = None, *, id: str | None = None,
              priority: int | None = None, delay: float | timedelta | str | None = None,
              at: datetime | str | None = None, unique: str | None = None,
              after: Iterable[str] = (), slots: int | None = None,
              timeout: float | timedelta | str | None = None, max_attempts: int | None = None,
              meta: dict[str, Any] | None = None, schedule: str | None = None,
              limits: Iterable[str] | None = None,
              after_any: Iterable[str] = (), after_failed: Iterable[str] = ()) -> dict[str, Any]:
        """A validated job body, not yet written."""
        now = self.clock()
        if delay is not None and at is not None:
            raise InvalidInput("give either delay or at, not both")
        run_at = now
        if delay is not None:
            seconds = parse_duration(delay, "delay")
            try:
                run_at = now + timedelta(seconds=seconds)
            except OverflowError:
                raise InvalidInput(f"delay {delay!r} from {format_time(now)} is past the year "
                                   "9999") from None
        elif at is not None:
            run_at = parse_time(at, "at", local_naive=True)
        raw: dict[str, Any] = {"job": job, "args": {} if args is None else args,
                               "run_at": run_at, "created_at": now,
                               "after": [validate_id(dep, "after") for dep in after],
                               "after_any": [validate_id(dep, "after_any") for dep in after_any],
                               "after_failed": [validate_id(dep, "after_failed")
                                                for dep in after_failed]}
        for key, value in (("priority", priority), ("unique", unique), ("slots", slots),
                           ("max_attempts", max_attempts), ("meta", meta),
                           ("schedule", schedule)):
            if value is not None:
                raw[key] = value
        if timeout is not None:
            raw["timeout"] = parse_duration(timeout, "timeout")
        if limits is not None:
            raw["limits"] = [limits] if isinstance(limits, str) else list(limits)
        job_id = validate_id(id) if id is not None else new_id(now)
        return normalize(raw, self.config, now, job_id)

    def submit(self, job: str, args: Any = None, **options: Any) -> str:
        """Enqueue one job; returns its id. Conflict when `id` or `unique` is taken."""
        body = self.build(job, args, **options)
        if dependencies(body):
            require_known(self.store, body)
        return self.store.submit(body, self.clock(), exclusive_id=options.get("id") is not None)

    def submit_many(self, jobs: Iterable[dict[str, Any]]) -> list[str]:
        """Enqueue many jobs (each a dict of `submit`'s arguments) with one directory fsync."""
        specs = list(jobs)
        bodies = self._build_many(specs)
        batch = {body["id"] for body in bodies}
        for body in bodies:
            if dependencies(body):
                require_known(self.store, body, also=batch)
        chosen = any(spec.get("id") is not None for spec in specs)
        return self.store.submit_many(bodies, self.clock(), exclusive_id=chosen)

    def _build_many(self, specs: builtins.list[dict[str, Any]]) -> builtins.list[dict[str, Any]]:
        """`build` of each spec; specs that differ only in args, id and unique key share the
        checks of their job type and options, made once (`job.renew` checks the rest)."""
        templates: dict[tuple[Any, ...], dict[str, Any]] = {}
        bodies = []
        for spec in specs:
            key = _template_key(spec)
            template = templates.get(key) if key is not None else None
            if template is None:
                bodies.append(self.build(**spec))
                if key is not None:
                    templates[key] = bodies[-1]
                continue
            now = self.clock()
            job_id = validate_id(spec["id"]) if spec.get("id") is not None else new_id(now)
            bodies.append(renew(template, self.config, now, job_id, spec.get("args"),
                                spec.get("unique"), spec.get("at") is not None))
        return bodies

    # -- inspect -------------------------------------------------------------------------

    def explain(self, job_id: str) -> dict[str, Any]:
        """Why the job is where it is: every gate of a waiting job, or how it runs or ended."""
        return explain(self, validate_id(job_id))

    def get(self, job_id: str) -> Job:
        """The job in whatever state it is; JobNotFound when there is none."""
        return self.store.get(validate_id(job_id))[0]

    def get_with_body(self, job_id: str) -> tuple[Job, dict[str, Any]]:
        """The job and its stored fields (for `show --json`)."""
        return self.store.get(validate_id(job_id))

    def list(self, state: str | None = None, *, job: str | None = None,
             limit: int | None = None) -> list[Job]:
        """Jobs of one state (all states when None), pending in claim order, others by id."""
        return [found for found, _ in self.list_with_bodies(state, job=job, limit=limit)]

    def list_with_bodies(self, state: str | None = None, *, job: str | None = None,
                         limit: int | None = None) -> builtins.list[tuple[Job, dict[str, Any]]]:
        """`list`, keeping each stored body; reads only as many files as it returns.

        A file that cannot be read (too big, not JSON, EACCES, EIO) is listed all the same, as
        `{"id", "unreadable": true, "error"}` (its id from its name), never hidden, whatever
        `job` asks for.
        """
        if state not in (None, "all", *STATES):
            raise InvalidInput(f"state {state!r} is not one of {', '.join(STATES)}, all")
        found: builtins.list[tuple[Job, dict[str, Any]]] = []
        for where_state, path in self._paths(state):
            if limit is not None and len(found) >= limit:
                break
            try:
                body = self.store.read(path)
            except (FileNotFoundError, NotADirectoryError):
                continue  # moved meanwhile: a listing is a hint
            except (OSError, InvalidInput) as exc:
                if getattr(exc, "errno", None) == errno.ESTALE:
                    continue
                body = unreadable_body(where_state, path, exc)
            if job is None or body.get("job") in (job, None):
                found.append((Job.from_body(body, where_state, path), body))
        return found

    def running(self, job: Job) -> dict[str, Any] | None:
        """The running attempt of a job in processing/: attempt, host, started_at (when the
        host's ledger records it), runtime and heartbeat_age in seconds; None otherwise."""
        if job.state != "processing":
            return None
        now = self.clock()
        info = self.store.running_attempt(job.path, now.timestamp())
        if info is None:
            return None
        info["runtime"] = None
        if info["started_at"] is not None:
            try:
                info["runtime"] = max(0.0, (now - parse_time(info["started_at"])).total_seconds())
            except InvalidInput:
                info["started_at"] = None
        return info

    def _paths(self, state: str | None) -> Iterable[tuple[str, Path]]:
        store = self.store
        states = STATES if state in (None, "all") else (state,)
        for each in states:
            if each == "pending":
                yield from ((each, store.layout.pending / n) for n in store.pending_names())
            elif each == "processing":
                paths = sorted(store.processing_paths(), key=lambda p: p.name)
                yield from ((each, p) for p in paths)
            else:
                directory = store.layout.state_dir(each)
                yield from ((each, directory / n) for n in store.terminal_names(each))

    # -- act -----------------------------------------------------------------------------

    def cancel(self, job_id: str) -> str:
        """Cancel a pending job (now) or a running one (its worker stops it).

        Returns "cancelled" or "requested"; Conflict for a finished job.
        """
        from spool.operations import cancel

        return cancel(self.store, validate_id(job_id), self.clock())

    def retry(self, job_id: str) -> None:
        """Move a dead job back to pending/ with its attempts reset; Conflict if not dead."""
        from spool.operations import retry

        retry(self.store, validate_id(job_id), self.clock())

    def retry_all(self, job: str | None = None) -> builtins.list[str]:
        """Retry every dead job (of one job type when given)."""
        from spool.operations import retry

        ids = [found.id for found in self.list("dead", job=job)]
        done = []
        for job_id in ids:
            try:
                retry(self.store, job_id, self.clock())
                done.append(job_id)
            except (JobNotFound, Conflict):
                continue
        return done

    def hold(self, job_id: str) -> None:
        """Move a pending job to held/ (workers never look there); Conflict if not pending."""
        from spool.flow import hold

        hold(self.store, validate_id(job_id), self.clock())

    def release(self, job_id: str) -> None:
        """Put a held job back into pending/ with its priority and due time; Conflict if not
        held."""
        from spool.flow import release

        release(self.store, validate_id(job_id), self.clock())

    def pause(self, *jobs: str | Iterable[str], host: str | Iterable[str] = (),
              schedule: str | Iterable[str] = (), all: bool = False) -> dict[str, bool]:
        """Stop claiming jobs of these types (anywhere), anything on `host`, or anything at
        all, and stop firing `schedule`; each takes one name or several. Returns marker ->
        whether this call paused it (False: it was paused already)."""
        from spool.pause import markers_for, pause

        markers = markers_for(self.config, _names(jobs), _names([host]), _names([schedule]),
                              all)
        return pause(self.store, markers, self.clock())

    def resume(self, *jobs: str | Iterable[str], host: str | Iterable[str] = (),
               schedule: str | Iterable[str] = (), all: bool = False) -> dict[str, bool]:
        """Undo `pause`; marker -> whether this call resumed it (False: it was not paused)."""
        from spool.pause import markers_for, resume

        markers = markers_for(self.config, _names(jobs), _names([host]), _names([schedule]),
                              all)
        return resume(self.store, markers, self.clock())

    def paused(self) -> builtins.list[str]:
        """The pause markers in force (`job.NAME`, `host.NAME`, `schedule.NAME`, `all`)."""
        from spool.pause import read_pauses

        return sorted(read_pauses(self.store).markers)

    def fire(self, schedule: str, force: bool = False) -> str:
        """Enqueue one fire of a schedule now (`SCHEDULE@manual.STAMP`); its id.
        ScheduleNotFound, or Conflict when paused or a fire is still active (unless force)."""
        from spool.flow import fire

        return fire(self, schedule, force)

    def purge(self, state: str, older_than: float | timedelta | str | None = None,
              *, dry_run: bool = False) -> builtins.list[str]:
        """Delete finished jobs of `state` (done, dead or all) older than `older_than`."""
        from spool.operations import purge

        age = None if older_than is None else parse_duration(older_than, "older-than")
        return purge(self.store, state, age, self.clock(), dry_run=dry_run)

    def wait(self, job_id: str, timeout: float | timedelta | str | None = None) -> Job:
        """Block until the job is in done/ or dead/; WaitTimeout when time runs out."""
        job_id = validate_id(job_id)
        limit = None if timeout is None else parse_duration(timeout, "timeout")
        deadline = None if limit is None else time.monotonic() + limit
        self.get(job_id)
        pause = 0.01
        while True:
            finished = self.finished_job(job_id)
            if finished is not None:
                return finished
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"job {job_id!r} did not finish within {limit:g}s")
            time.sleep(pause if deadline is None else
                       max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 1.5, 0.5)

    def finished_job(self, job_id: str) -> Job | None:
        for state in ("done", "dead"):
            path = self.layout.state_dir(state) / f"{job_id}.json"
            try:
                body = self.store.read(path)
            except (FileNotFoundError, InvalidInput):
                continue
            if body.get("outcome"):  # an unfilled terminal file is filled microseconds later
                return Job.from_body(body, state, path)
        return None

    def status(self) -> dict[str, Any]:
        """The `status --json` document."""
        from spool.status import status

        return status(self.store, self.clock())
