"""Users who may not, or should not (DESIGN §3 rule 7, §7, §13).

A user without write access gets one clean `Error:` line naming the path, and changes nothing.
A member of the spool's group who plants links, FIFOs and hard links under the names spool
will use cannot make a root worker write, truncate or read anything outside the spool: every
planted entry ends as an error naming it, the worker lives on and still runs good jobs, and
files spool creates in a group spool stay group-writable whatever the umask, so members'
journal lines are never lost.

Root only (useradd, setpriv); the tests skip cleanly elsewhere.
"""

# ruff: noqa: F811  (fixtures imported from faultkit are parameters here)
from __future__ import annotations

import grp
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import make_spool, spool_cli, state_files, wait_until
from faultkit import (  # noqa: F401
    FAULT_CONFIG,
    Daemons,
    User,
    daemons,
    describe,
    diff_snapshots,
    files_containing,
    last_line,
    lines_with,
    read_log,
    run_as,
    sh_as,
    snapshot,
    start_as,
    test_users,
    traceback_free,
)

EARLY = "5-20260101T000000.000000Z"  # a canonical pending prefix, due long ago


@dataclass
class Arena:
    """A world-traversable directory holding a group spool, an `outside/` directory with a
    root-owned 0600 secret and 0644 victim, and the daemons' logs."""

    root: Path
    users: dict
    daemons: Daemons
    token: str = field(default_factory=lambda: f"TOPSECRET-{secrets.token_hex(8)}")

    def __post_init__(self) -> None:
        self.spool = self.root / "spool"
        self.outside = self.root / "outside"
        self.secret = self.outside / "secret"
        self.victim = self.outside / "victim"
        self.logs = self.root / "daemon-logs"
        self.outside.mkdir(mode=0o755)
        (self.outside / "procdir").mkdir(mode=0o755)
        self.logs.mkdir(mode=0o700)
        # a secret that is also a valid job body and ledger: whatever reads it through a
        # link carries the token into the spool, where the search finds it
        self.secret.write_text(json.dumps({"job": "echo", "args": {"message": self.token},
                                           "meta": {"secret": self.token},
                                           "unfit": {self.token: 1}}))
        os.chmod(self.secret, 0o600)
        self.victim.write_text("victim: spool must never write here\n")
        os.chmod(self.victim, 0o644)

    @property
    def member(self) -> User:
        return self.users["member"]

    def init_group_spool(self) -> None:
        result = spool_cli(self.spool, "init", "--group", self.users["group"], host="setup")
        assert result.returncode == 0, describe(result)
        config = self.spool / "spool.toml"
        config.write_text(FAULT_CONFIG)
        os.chmod(config, 0o644)

    def plant(self, script: str, user: User | None = None) -> None:
        """Run `script` as the member, in the spool directory."""
        result = sh_as(user or self.member, script, self.spool)
        assert result.returncode == 0, f"planting failed: {describe(result)}"

    def submit(self, job: str, args: dict | None = None, host: str = "setup") -> str:
        result = spool_cli(self.spool, "submit", job, json.dumps(args or {}), host=host)
        assert result.returncode == 0, describe(result)
        return result.stdout.strip()

    def start_worker(self, host: str = "test") -> subprocess.Popen:
        return self.daemons.start(self.spool, "worker", "--capacity", "4", host=host,
                                  log=self.log_of(host))

    def log_of(self, host: str) -> Path:
        return self.logs / f"worker-{host}.log"

    def record(self, job_id: str) -> dict | None:
        for state in ("done", "dead"):
            path = self.spool / state / f"{job_id}.json"
            if path.exists():
                return json.loads(path.read_bytes())
        return None

    def wait(self, predicate, timeout: float, what: str, problems: list[str]) -> bool:
        try:
            wait_until(predicate, timeout, what)
            return True
        except AssertionError as exc:
            problems.append(f"{exc}; states {state_files(self.spool)}")
            return False

    def verdict(self, before: dict, worker: subprocess.Popen | None, problems: list[str],
                run_good: bool = True, skip_inodes: frozenset = frozenset()) -> None:
        """The common promises: nothing outside changed, the secret never entered the spool,
        the worker is alive and still runs a good job. Fails with every problem found."""
        changed = diff_snapshots(before, snapshot(self.outside))
        if changed:
            problems.append("outside the spool changed:\n  " + "\n  ".join(changed))
        leaked = files_containing(self.spool, self.token.encode(), set(skip_inodes))
        if leaked:
            problems.append(f"the secret's content is inside the spool: {leaked}")
        if worker is not None:
            if worker.poll() is not None:
                problems.append(f"the worker exited ({worker.returncode})")
            elif run_good:
                good = self.submit("echo", {"message": "good"})
                if self.wait(lambda: self.record(good), 30, "a good job to finish", problems):
                    outcome = self.record(good)["outcome"]
                    if outcome != "completed":
                        problems.append(f"the good job ended {outcome}: {self.record(good)}")
        if problems:
            logs = "\n".join(f"--- {p.name}\n{read_log(p)[-4000:]}" for p in
                             sorted(self.logs.iterdir()))
            raise AssertionError("\n".join(problems) + "\n" + logs)


@pytest.fixture
def arena(test_users, daemons):
    root = Path(tempfile.mkdtemp(prefix="spool-hostile-", dir="/tmp"))
    os.chmod(root, 0o755)  # the test users must reach the spool (pytest's tmp is root-only)
    try:
        yield Arena(root, test_users, daemons)
    finally:
        daemons.stop_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def group_arena(arena):
    arena.init_group_spool()
    return arena


def errors_of(record: dict | None) -> list[str]:
    if not record:
        return []
    return [e for e in [record.get("error"), *(h.get("error") for h in
                                                record.get("history") or [])] if e]


# -- 2. no write access ------------------------------------------------------------------------

@pytest.fixture
def locked_spool(arena):
    """A spool owned by root without group or other write access, and one pending job."""
    make_spool(arena.spool, FAULT_CONFIG)
    job_id = arena.submit("noop")
    return arena, job_id


@pytest.mark.parametrize("args", [["submit", "noop"], ["cancel", "{id}"], ["worker", "--burst"]],
                         ids=["submit", "cancel", "worker-burst"])
def test_a_user_without_write_access_gets_one_clean_error_and_changes_nothing(locked_spool,
                                                                               args):
    arena, job_id = locked_spool
    before = snapshot(arena.spool)
    try:
        result = run_as(arena.users["stranger"], arena.spool,
                        *[a.format(id=job_id) for a in args], timeout=30)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{args[0]} kept running for {exc.timeout}s instead of failing:\n"
                             f"{(exc.stderr or b'').decode(errors='replace')}") from None
    assert result.returncode != 0 and traceback_free(result), describe(result)
    line = last_line(result.stderr)
    assert line.startswith("Error:") and str(arena.spool) in line, describe(result)
    assert "Permission denied" in line or "EACCES" in line, describe(result)
    assert diff_snapshots(before, snapshot(arena.spool)) == []


def test_a_worker_daemon_without_write_access_names_the_path_and_changes_nothing(locked_spool):
    """§7: a daemon retries a fault, at start-up too; the brief: a clean Error: line and a
    non-zero exit. Either is accepted; a traceback, silence or a change is not."""
    arena, _ = locked_spool
    before = snapshot(arena.spool)
    log = arena.log_of("stranger")
    proc = arena.daemons.track(start_as(arena.users["stranger"], arena.spool, "worker",
                                        host="test", log=log))
    wait_until(lambda: proc.poll() is not None or "Permission denied" in read_log(log), 30,
               "the worker to meet EACCES")
    text = read_log(log)
    assert "Traceback" not in text, text
    if proc.poll() is None:  # retrying, as a daemon should
        assert lines_with(text, "Permission denied", str(arena.spool)), text
    else:
        line = last_line(text)
        assert proc.returncode != 0 and line.startswith("Error:") and str(arena.spool) in line, \
            text
    assert diff_snapshots(before, snapshot(arena.spool)) == []


# -- 3. a group member with bad intent -------------------------------------------------------

def test_a_planted_job_log_link_is_refused_and_named(group_arena):
    arena = group_arena
    linked = arena.submit("echo", {"message": "into the victim?"})
    dangling = arena.submit("echo", {"message": "a new file outside?"})
    arena.plant(f"ln -s {arena.victim} logs/{linked}.log && "
                f"ln -s {arena.outside}/new-log logs/{dangling}.log")
    before = snapshot(arena.outside)
    worker = arena.start_worker()
    problems: list[str] = []
    if arena.wait(lambda: arena.record(linked) and arena.record(dangling), 60,
                  "both jobs to end", problems):
        for job_id in (linked, dangling):
            if not any(f"logs/{job_id}.log" in e for e in errors_of(arena.record(job_id))):
                problems.append(f"{job_id}: no error names logs/{job_id}.log: "
                                f"{arena.record(job_id)}")
    arena.verdict(before, worker, problems)


def test_planted_result_and_old_staging_names_are_never_followed(group_arena):
    arena = group_arena
    command = arena.submit("noop")
    handler = arena.submit("add", {"a": 1, "b": 2})
    arena.plant(" && ".join([
        f"ln -s {arena.secret} tmp/{command}.1.result",  # read back as the result?
        f"ln -s {arena.victim} tmp/{handler}.1.result",  # written by the handler child?
        f"ln -s {arena.victim} tmp/{command}.1.finish-done",  # names of older releases
        f"ln -s {arena.secret} tmp/{handler}.1.finish-done",
        f"ln -s {arena.victim} tmp/{command}.1.requeue",
        # today's scheme has random parts; a guess with a wrong one must not matter either
        f"ln -s {arena.victim} tmp/finish-done,test,1,00000000,{command}.1",
        f"ln -s {arena.victim} tmp/result,test,1,00000000,{handler}.1",
    ]))
    before = snapshot(arena.outside)
    worker = arena.start_worker()
    problems: list[str] = []
    if arena.wait(lambda: arena.record(command) and arena.record(handler), 60,
                  "both jobs to end", problems):
        got = arena.record(command)
        if got["outcome"] != "completed" or got.get("result") is not None:
            problems.append(f"noop job: {got}")
        got = arena.record(handler)
        if got["outcome"] != "completed" or got.get("result") != 3:
            problems.append(f"add job: {got}")
    arena.verdict(before, worker, problems)


@pytest.mark.parametrize("what", ["day-files", "host-directory"])
def test_a_planted_journal_link_is_refused_and_named(group_arena, what):
    arena = group_arena
    today = datetime.now(UTC)
    if what == "day-files":
        days = [today - timedelta(days=1), today, today + timedelta(days=1)]
        arena.plant("mkdir events/test && " + " && ".join(
            f"ln -s {arena.victim} events/test/{day:%Y-%m-%d}.jsonl" for day in days))
    else:
        arena.plant(f"ln -s {arena.outside}/procdir events/test")
    before = snapshot(arena.outside)
    worker = arena.start_worker()
    problems: list[str] = []
    job_id = arena.submit("echo", {"message": "journalled?"})
    if arena.wait(lambda: arena.record(job_id), 30, "the job to end", problems) \
            and arena.record(job_id)["outcome"] != "completed":
        problems.append(f"{arena.record(job_id)}")
    if not lines_with(read_log(arena.log_of("test")), "events/test"):
        problems.append("the worker's log never names events/test")
    arena.verdict(before, worker, problems)


def test_a_planted_cancel_link_is_an_error_naming_it(group_arena):
    arena = group_arena
    marker = arena.root / "release-the-jobs"
    linked = arena.submit("wait", {"marker": str(marker)})
    dangling = arena.submit("wait", {"marker": str(marker)})
    before = snapshot(arena.outside)
    worker = arena.start_worker()
    problems: list[str] = []
    try:
        wait_until(lambda: {linked, dangling} <= set(state_files(arena.spool)["processing"]),
                   30, "both jobs running")
        # the worker is stopped while the links are planted and `spool cancel` runs, so that
        # the command meets them first (a running worker looks at cancel/ twice a second)
        worker.send_signal(signal.SIGSTOP)
        arena.plant(f"ln -s {arena.victim} cancel/{linked} && "
                    f"ln -s {arena.outside}/new-cancel cancel/{dangling}")
        for job_id in (dangling, linked):
            result = spool_cli(arena.spool, "cancel", job_id, host="setup")
            line = last_line(result.stderr)
            if result.returncode == 0 or not traceback_free(result) \
                    or not line.startswith("Error:") or f"cancel/{job_id}" not in line:
                problems.append(f"spool cancel {job_id} over a planted link: {describe(result)}")
    finally:
        worker.send_signal(signal.SIGCONT)
        marker.touch()
    arena.wait(lambda: arena.record(linked) and arena.record(dangling), 30, "both jobs to end",
               problems)
    arena.verdict(before, worker, problems)


def test_a_planted_processing_host_link_is_refused_and_named(group_arena):
    arena = group_arena
    arena.plant(f"ln -s {arena.outside}/procdir processing/test2")
    before = snapshot(arena.outside)
    job_id = arena.submit("echo", {"message": "claimed outside the spool?"})
    linked_worker = arena.start_worker("test2")
    problems: list[str] = []

    def noticed() -> bool:
        return bool(lines_with(read_log(arena.log_of("test2")), "processing/test2")) \
            or linked_worker.poll() is not None or arena.record(job_id) is not None

    arena.wait(noticed, 30, "the worker of test2 to notice its linked directory", problems)
    if not lines_with(read_log(arena.log_of("test2")), "processing/test2"):
        problems.append("the worker of test2 never names processing/test2")
    if linked_worker.poll() is not None:
        problems.append(f"the worker of test2 exited ({linked_worker.returncode})")
    worker = arena.start_worker("test")  # a sound host runs the job
    if arena.wait(lambda: arena.record(job_id), 30, "the job to end", problems) \
            and arena.record(job_id)["outcome"] != "completed":
        problems.append(f"{arena.record(job_id)}")
    arena.verdict(before, worker, problems)


def test_special_files_under_pending_names_end_invalid_in_dead(group_arena):
    arena = group_arena
    arena.plant(" && ".join([
        f"mkfifo pending/{EARLY}-fifo.json",
        f"ln -s {arena.secret} pending/{EARLY}-link.json",
        f"ln -s {arena.outside}/new-pending pending/{EARLY}-dangle.json",
        f"ln -s {arena.secret} pending/evil-link.json",  # dropped (not canonical) names
        "mkfifo pending/evil-fifo.json",
    ]))
    before = snapshot(arena.outside)
    worker = arena.start_worker()
    problems: list[str] = []
    canonical = ["fifo", "link", "dangle"]
    if arena.wait(lambda: all(arena.record(i) for i in canonical), 30,
                  "the planted canonical entries to reach dead/", problems):
        for job_id in canonical:
            record = arena.record(job_id)
            named = any(re.search(rf"{job_id}(\.\d+)?\.json", e) for e in errors_of(record))
            if not (os.path.exists(arena.spool / "dead" / f"{job_id}.json")
                    and record["outcome"] == "invalid" and named):
                problems.append(f"{job_id}: not an invalid record naming it: {record}")

    def rejected_drops() -> list[str]:
        found = []
        for name in os.listdir(arena.spool / "dead"):
            if name.endswith(".json"):
                body = json.loads((arena.spool / "dead" / name).read_bytes())
                if body.get("outcome") == "invalid" and str(body.get("error")).count("evil-"):
                    found.append(name)
        return found

    arena.wait(lambda: len(rejected_drops()) == 2, 30, "both dropped entries rejected", problems)
    arena.verdict(before, worker, problems)


def test_a_hard_link_to_a_secret_in_pending_is_never_run_or_read_out(group_arena):
    arena = group_arena
    planted = sh_as(arena.member, f"ln {arena.secret} pending/{EARLY}-hard.json", arena.spool)
    if planted.returncode != 0:
        pytest.skip(f"the kernel refuses the member's hard link (fs.protected_hardlinks): "
                    f"{planted.stderr.strip()}")
    before = snapshot(arena.outside)
    worker = arena.start_worker()
    problems: list[str] = []
    if arena.wait(lambda: arena.record("hard"), 30, "the hard link to reach dead/", problems) \
            and arena.record("hard")["outcome"] != "invalid":
        problems.append(f"{arena.record('hard')}")
    arena.verdict(before, worker, problems, skip_inodes=frozenset({arena.secret.stat().st_ino}))


def test_a_planted_host_lock_or_ledger_link_is_never_followed(group_arena):
    """Beyond the brief's list: hosts/ is group-writable too, and the ledger's lock file is
    opened by filelock, the ledger read with read_bytes()."""
    arena = group_arena
    arena.plant(f"ln -s {arena.victim} hosts/test.lock && ln -s {arena.secret} hosts/test.json")
    before = snapshot(arena.outside)
    worker = arena.start_worker()
    problems: list[str] = []
    arena.wait(lambda: lines_with(read_log(arena.log_of("test")), "hosts/test.")
               or worker.poll() is not None or "claim" in read_log(arena.log_of("test")), 30,
               "the worker to start or complain", problems)
    job_id = arena.submit("echo", {"message": "runs?"})
    arena.wait(lambda: arena.record(job_id)
               or lines_with(read_log(arena.log_of("test")), "hosts/test."), 30,
               "the job to end or the links to be named", problems)
    arena.verdict(before, worker, problems, run_good=False)


# -- 4. several users, one group ------------------------------------------------------------

def journal_events(spool: Path, host: str) -> list[dict]:
    events = []
    directory = spool / "events" / host
    for name in sorted(os.listdir(directory)):
        for line in (directory / name).read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
    return events


def mode_problems(spool: Path, gid: int) -> list[str]:
    """Every file and directory spool created: group-readable and group-writable, in the
    spool's group; directories setgid and searchable."""
    problems = []
    for dirpath, dirnames, filenames in os.walk(spool):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path == spool / "spool.toml":
                continue  # the operator's file (doctor wants it not group-writable)
            info = os.lstat(path)
            mode = stat.S_IMODE(info.st_mode)
            want = 0o2070 if stat.S_ISDIR(info.st_mode) else 0o060
            if mode & want != want or info.st_gid != gid:
                problems.append(f"{path.relative_to(spool)}: mode {oct(mode)} uid {info.st_uid} "
                                f"gid {info.st_gid}")
    return problems


@pytest.mark.parametrize("first,root_umask", [("root", 0o077), ("member", 0o022)],
                         ids=["root-first-umask-077", "member-first-umask-022"])
def test_members_under_umask_077_keep_the_group_spool_writable_and_their_events(
        group_arena, first, root_umask):
    arena = group_arena
    member, member2 = arena.users["member"], arena.users["member2"]
    problems: list[str] = []
    worker = None
    ids: dict[str, str] = {}

    def as_members() -> None:
        for who, user, later in (("m1", member, []), ("m2", member2, []),
                                 ("m3", member, ["--delay", "1h"])):  # m3 waits to be cancelled
            result = run_as(user, arena.spool, "submit", "echo", '{"message": "from a member"}',
                            *later, host="test", umask=0o077)
            ids[who] = result.stdout.strip()
            if result.returncode != 0 or result.stderr.strip():
                problems.append(f"{user.name} submit: {describe(result)}")
        result = run_as(member2, arena.spool, "cancel", ids["m3"], host="test", umask=0o077)
        if result.returncode != 0 or "journal" in result.stderr:
            problems.append(f"{member2.name} cancel: {describe(result)}")

    def as_root() -> subprocess.Popen:
        ids["root"] = arena.submit("echo", {"message": "from root"}, host="test")
        old = os.umask(root_umask)
        try:
            return arena.start_worker()
        finally:
            os.umask(old)

    if first == "root":
        worker = as_root()
        arena.wait(lambda: arena.record(ids["root"]), 30, "root's job", problems)
        as_members()
    else:
        as_members()
        worker = as_root()
    ran = [ids["root"], ids["m1"], ids["m2"]]
    if arena.wait(lambda: all(arena.record(i) for i in ran), 30, "every job to end", problems):
        for job_id in ran:
            if arena.record(job_id)["outcome"] != "completed":
                problems.append(f"{arena.record(job_id)}")
    if (arena.record(ids["m3"]) or {}).get("outcome") != "cancelled":
        problems.append(f"the cancelled job: {arena.record(ids['m3'])}")
    events = journal_events(arena.spool, "test")
    seen = {(e.get("event"), e.get("id")) for e in events}
    for job_id in ids.values():
        if ("submit", job_id) not in seen:
            problems.append(f"no submit event for {job_id}")
    if ("cancel", ids["m3"]) not in seen:
        problems.append(f"no cancel event for {ids['m3']}")
    for job_id in ran:
        if ("finish", job_id) not in seen:
            problems.append(f"no finish event for {job_id}")
    problems += mode_problems(arena.spool, grp.getgrnam(arena.users["group"])
                              .gr_gid)
    before = snapshot(arena.outside)
    arena.verdict(before, worker, problems)
