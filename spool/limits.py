"""Concurrency tokens (docs/protocol.md, Limit tokens): the one module that creates and removes
`limits/` files.

A pool `limits/<name>/<key>/` (see `spool.limitspec`) holds tokens named `0` … `max-1`. A token
is one running attempt's right to run: it is created by `link(2)` of a private file in `tmp/`,
fully written beforehand, that names the attempt as JSON `{id, attempt, host, pid, pools,
claimed_at}` — the exclusive creation that holds on NFS: after EEXIST the link count of our
file tells whether the link was in fact ours. One staged file serves all pools of one attempt.
Releases read a token before unlinking it: one re-created by another claimer under the same
name (maybe with the same, reused, inode number) is never removed by mistake.

Who does what:
- the claimer takes every token its job needs before the claim rename (`take`), and gives them
  back if a pool is full or the rename loses (`give_back`);
- the process that moves the attempt out of `processing/` (worker, reaper, recovery) releases
  its tokens after the move (`give_back` with the tokens it holds, else `release_attempt`);
- the reaper removes a token whose attempt is not in `processing/` once it is older than the
  lease by the file server's clock (`sweep`): its claimer died between token and rename, or
  before releasing. Nothing else frees a token whose attempt is still in `processing/`.
A claim never takes a pool past its current `max` (lowering it lets the higher tokens drain).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TYPE_CHECKING

from spool.errors import InvalidInput
from spool.files import discard, list_names, make_dir, read_with_stat
from spool.layout import is_valid_id, processing_name
from spool.limitspec import UNPARTITIONED, PoolRef, pool_key, pools_of
from spool.timeutil import format_time

if TYPE_CHECKING:
    from spool.catalog import Catalog
    from spool.store import Store

TOKEN_BYTES = 65536
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
log = logging.getLogger("spool.limits")


@dataclass(frozen=True)
class Token:
    """A token this process created: its path, the inode shared by its attempt's tokens and
    the attempt it names."""

    path: Path
    inode: int
    job_id: str = ""
    attempt: int = 0


@dataclass(frozen=True)
class Holder:
    """A token as read from its pool: the attempt it names (None fields: unreadable)."""

    path: Path
    inode: int
    mtime: float
    job_id: str | None
    attempt: int | None
    host: str | None
    labels: tuple[str, ...] = ()

    def processing_path(self, catalog: Catalog) -> Path | None:
        if self.job_id is None or self.attempt is None or self.host is None:
            return None
        return catalog.layout.host_processing(self.host) / processing_name(self.job_id,
                                                                           self.attempt)


def limits_root(catalog: Catalog) -> Path:
    return catalog.layout.root / "limits"


def pool_dir(catalog: Catalog, ref: PoolRef) -> Path:
    return limits_root(catalog) / ref.name / ref.key


def token_indexes(names: Iterable[str]) -> set[int]:
    """The token numbers among a pool's entry names (ASCII digits only; others are ignored)."""
    return {int(name) for name in names if name.isascii() and name.isdigit() and len(name) < 10}


class Limits:
    """Taking and giving back tokens, as one host's claimer or mover."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- the claimer ---------------------------------------------------------------------

    def take(self, refs: Iterable[PoolRef], job_id: str, attempt: int, now: datetime,
             full: set[PoolRef]) -> tuple[list[Token], PoolRef | None]:
        """A token of every pool in `refs` for attempt `attempt` of `job_id`, or none at all
        and the pool that is full (or undeclared now, or unusable: logged). Pools found full
        are added to `full`, and a pool already in it costs nothing: one pass never lists or
        links into a full pool twice."""
        refs = tuple(refs)
        taken: list[Token] = []
        staged: list[tuple[str, int]] = []  # one private file (path, inode) for all the
        # attempt's tokens, made when the first pool has room
        try:
            for ref in refs:
                limit = self.store.config.limits.get(ref.name)
                token = None
                if limit is not None and ref not in full:
                    token = self._take_one(ref, limit.max, staged, len(taken), job_id,
                                           attempt, now, refs)
                if token is None:
                    full.add(ref)
                    self.give_back(taken)
                    return [], ref
                taken.append(token)
            return taken, None
        except BaseException:
            self.give_back(taken)
            raise
        finally:
            for path, _ in staged:
                discard(path)

    def _take_one(self, ref: PoolRef, cap: int, staged: list[tuple[str, int]], links: int,
                  job_id: str,
                  attempt: int, now: datetime, refs: tuple[PoolRef, ...]) -> Token | None:
        """A token of one pool, or None when it is full (or cannot be used: logged)."""
        for _ in range(2):  # twice: the reaper may remove an empty pool under us
            try:
                fd = self._open_pool(ref)
            except OSError as exc:  # a link planted where a pool belongs, EACCES, ...
                log.error("limit pool %s cannot be used: %s", pool_dir(self.store, ref), exc)
                return None
            try:
                held = token_indexes(os.listdir(fd))
                if len(held) >= cap:
                    return None
                if not staged:
                    staged.append(self._stage(job_id, attempt, refs, now))
                return self._link_free(ref, fd, held, cap, staged[0], links, job_id, attempt)
            except FileNotFoundError:
                continue
            finally:
                os.close(fd)
        return None

    def _open_pool(self, ref: PoolRef) -> int:
        """A descriptor of the pool's directory, made if missing; no component of it may be
        a symbolic link (each is opened with O_NOFOLLOW relative to the one before)."""
        for _ in range(2):
            try:
                fd = os.open(limits_root(self.store), _DIR)
                for part in (ref.name, ref.key):
                    inner = os.open(part, _DIR, dir_fd=fd)
                    os.close(fd)
                    fd = inner
                return fd
            except FileNotFoundError:
                self._make_pool(ref)
        raise FileNotFoundError(errno.ENOENT, "cannot be made", str(pool_dir(self.store, ref)))

    def _stage(self, job_id: str, attempt: int, refs: tuple[PoolRef, ...],
               now: datetime) -> tuple[str, int]:
        token = {"id": job_id, "attempt": attempt, "host": self.store.host,
                 "pid": os.getpid(), "pools": [ref.label for ref in refs],
                 "claimed_at": format_time(now)}
        data = json.dumps(token).encode()
        if len(data) > TOKEN_BYTES:  # many long keys: the labels go, the token stays readable
            data = json.dumps({**token, "pools": []}).encode()
        staged = self.store.stage_data(data, "token", f"{job_id}.{attempt}")
        return staged, os.lstat(staged).st_ino

    def _link_free(self, ref: PoolRef, fd: int, held: set[int], cap: int,
                   staged: tuple[str, int], links: int, job_id: str,
                   attempt: int) -> Token | None:
        """Link `staged` as the lowest free token below `cap` in the pool open as `fd`; None
        when the pool is full. `links`: how many tokens `staged` already is (its link count,
        less one). FileNotFoundError when the pool was removed meanwhile."""
        index = 0
        while index < cap:
            if index in held:
                index += 1
                continue
            try:
                os.link(staged[0], str(index), dst_dir_fd=fd, follow_symlinks=False)
            except FileExistsError:
                if os.lstat(staged[0]).st_nlink <= 1 + links:  # else NFS lost the reply of ours
                    held = token_indexes(os.listdir(fd))  # someone else's: look again
                    if len(held) >= cap:
                        return None
                    continue
            token = Token(pool_dir(self.store, ref) / str(index), staged[1], job_id, attempt)
            if any(each >= cap for each in held) and len(token_indexes(os.listdir(fd))) > cap:
                # draining after `max` was lowered: a racing claimer may have filled the last
                # free place under the old count; the rule is never to end above `max`
                self.give_back([token])
                return None
            return token
        return None

    def _make_pool(self, ref: PoolRef) -> None:
        mode = self.store.mode
        root = limits_root(self.store)
        for directory in (root, root / ref.name, root / ref.name / ref.key):
            make_dir(directory, mode)

    # -- movers --------------------------------------------------------------------------

    def lost(self, tokens: Iterable[Token]) -> bool:
        """Whether any of `tokens` is no longer ours: a claim that stalled past the lease
        between its tokens and its rename finds the reaper freed one (a dead claimer's, as
        far as the reaper could tell), maybe for another attempt to take."""
        for token in tokens:
            try:
                if not _is_ours(token.path, token.job_id, token.attempt):
                    return True
            except FileNotFoundError:
                return True
        return False

    def give_back(self, tokens: Iterable[Token]) -> None:
        """Remove tokens this process made, each only while it is still ours."""
        for token in tokens:
            _unlink_if(token.path, token.job_id, token.attempt)

    def release_attempt(self, job_id: str, attempt: int, body: dict[str, Any] | None = None) -> int:
        """Remove the tokens that name attempt `attempt` of `job_id` (a mover that did not take
        them: the reaper, recovery); looks in the pools `body` needs, else in every pool."""
        released = 0
        for holder in self.holders(self._pools_for(body)):
            if holder.job_id == job_id and holder.attempt == attempt:
                released += _unlink_if(holder.path, job_id, attempt)
        return released

    def _pools_for(self, body: dict[str, Any] | None) -> list[Path]:
        try:
            return [pool_dir(self.store, ref) for ref in pools_of(self.store.config, body)] \
                if isinstance(body, dict) else all_pools(self.store)
        except InvalidInput:  # the config changed since: look everywhere
            return all_pools(self.store)

    def holders(self, pools: Iterable[Path]) -> Iterator[Holder]:
        return holders(pools)

    # -- the reaper ----------------------------------------------------------------------

    def sweep(self, server_clock: Callable[[], float | None], lease: float) -> list[Path]:
        """Remove tokens whose attempt is not in processing/ and that are older than `lease`
        by the file server's clock (`server_clock()`: the mtime of a probe written just then,
        asked for only when some token's attempt is not in processing/).
        It reads every token of every pool: affordable because a pool holds at most `max`
        tokens (a few per running job), whatever the number of pending jobs."""
        removed: list[Path] = []
        server_now: float | None = None
        for pool in all_pools(self.store):
            found = False
            try:
                for holder in holders([pool]):
                    found = True
                    where = holder.processing_path(self.store)
                    if where is None or os.path.lexists(where):
                        continue  # running (or not a token spool can read: fsck reports it)
                    if server_now is None:
                        server_now = server_clock()
                        if server_now is None:
                            return removed  # no probe, no verdict: never by our own clock
                    if server_now - holder.mtime <= lease or os.path.lexists(where):
                        continue  # a claim between its token and its rename (or just past)
                    if _unlink_if(holder.path, holder.job_id, holder.attempt):
                        removed.append(holder.path)
            except OSError as exc:  # one unreadable pool (EACCES, EIO) must not stop the rest
                log.error("limit pool %s cannot be swept: %s", pool, exc)
                continue
            if not found and pool.name != UNPARTITIONED:
                _remove_empty(pool)  # one per key ever seen would pile up otherwise
        return removed


def all_pools(catalog: Catalog) -> list[Path]:
    """Every pool directory under `limits/` (names are hints, like every listing); a link
    planted where `limits/`, a limit or a pool belongs is skipped, never followed."""
    root = limits_root(catalog)
    if not _is_real_dir(root):
        return []
    names = [root / name for name in sorted(list_names(root)) if _is_real_dir(root / name)]
    return [limit / key for limit in names for key in sorted(list_names(limit))
            if not key.startswith(".") and _is_real_dir(limit / key)]


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def holders(pools: Iterable[Path]) -> Iterator[Holder]:
    """The tokens of `pools`, each read (a token that vanished meanwhile is skipped)."""
    for pool in pools:
        for index in sorted(token_indexes(list_names(pool))):
            try:
                holder = read_token(pool / str(index))
            except FileNotFoundError:
                continue
            if holder is not None:
                yield holder


def read_token(path: Path) -> Holder | None:
    """The attempt a token names; its job fields None when it does not parse as one (or cannot
    be read), and None for what is no regular file (never followed, never removed by spool)."""
    try:
        data, info = read_with_stat(path, TOKEN_BYTES)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EINVAL):
            return None
        # too large, unreadable (EACCES, EIO): a held token no attempt can be told of; one
        # such file must not stop the sweep, status or a release from reading the others
        data, info = b"", os.lstat(path)
    try:
        token = json.loads(data)
    except (ValueError, RecursionError):
        token = None
    if not isinstance(token, dict):
        token = {}
    job_id, attempt, host = token.get("id"), token.get("attempt"), token.get("host")
    labels = token.get("pools")
    if not (is_valid_id(job_id) and isinstance(attempt, int) and not isinstance(attempt, bool)
            and isinstance(host, str) and host and "/" not in host and host[0] != "."):
        job_id, attempt, host = None, None, None
    return Holder(path, info.st_ino, info.st_mtime, job_id, attempt, host,
                  tuple(each for each in labels if isinstance(each, str))
                  if isinstance(labels, list) else ())


def _unlink_if(path: Path, job_id: str | None, attempt: int | None) -> int:
    """Unlink `path` if it is still the token of attempt `attempt` of `job_id` (1), else
    leave it (0): a token another claimer made since under the same name stays. The token's
    content decides, not its inode: a freed inode number is reused, and a FUSE client numbers
    the nodes of each name apart."""
    try:
        if not _is_ours(path, job_id, attempt):
            return 0
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return 1


def _is_ours(path: Path, job_id: str | None, attempt: int | None) -> bool:
    """Whether `path` is still the token of attempt `attempt` of `job_id` (see `_unlink_if`);
    FileNotFoundError when it is gone."""
    if not stat.S_ISREG(os.lstat(path).st_mode):
        return False
    # never the inode alone: a freed token's number is reused at once by the next one made
    holder = read_token(path)
    return holder is not None and (holder.job_id, holder.attempt) == (job_id, attempt)


def _remove_empty(pool: Path) -> None:
    try:
        os.rmdir(pool)
    except OSError:
        pass  # a claimer linked into it meanwhile (ENOTEMPTY), or it is gone already


def usage(catalog: Catalog) -> list[dict[str, Any]]:
    """Each pool's use, for `status`: `{name, key, max, used, holders, attempts, path}`, where
    `key` is `_` for an unpartitioned pool and the key's value (as its tokens name it) for a
    partitioned one; every declared limit's plain pool is listed, empty partitioned ones not."""
    config = catalog.config
    pools = dict.fromkeys(all_pools(catalog))
    for name in config.limits:  # a limit no job took yet shows as its plain pool
        if not any(pool.parent.name == name for pool in pools):
            pools.setdefault(limits_root(catalog) / name / UNPARTITIONED, None)
    result = []
    for pool in sorted(pools):
        name, key = pool.parent.name, pool.name
        found = list(holders([pool]))
        if not found and key != UNPARTITIONED:
            continue
        limit = config.limits.get(name)
        result.append({
            "name": name, "key": key if key == UNPARTITIONED else _key_value(name, key, found),
            "max": limit.max if limit else None, "used": len(found),
            "holders": sorted({h.job_id for h in found if h.job_id}),
            "attempts": [{"id": h.job_id, "attempt": h.attempt, "host": h.host,
                          "token": h.path.name} for h in found],
            "path": str(pool.absolute())})
    return result


def _key_value(name: str, key: str, found: list[Holder]) -> str:
    """The value a partitioned pool's digest stands for, as its tokens' labels tell it."""
    for holder in found:
        for label in holder.labels:
            limit, _, value = label.partition(":")
            if limit == name and value and pool_key(value) == key:
                return value
    return key
