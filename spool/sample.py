"""The commented spool.toml that `spool init` writes, and the richer one `spool run` embeds."""

from __future__ import annotations

SAMPLE_CONFIG = '''\
# spool.toml: every key is optional; unknown keys are errors. Durations: 90, 90s, 15m, 2h, 1d.

[defaults]
# priority = 5          # 0 runs first, 9 last
# max_attempts = 3      # an attempt is counted when a worker claims the job
# timeout = "1h"        # per attempt; then SIGTERM, SIGKILL after kill_grace
# slots = 1             # resource units a job holds; a host offers `capacity` (its CPUs)
# backoff = { base = "5s", factor = 2.0, max = "1h", jitter = 0.2 }
# kill_grace = "10s"
# grace = "30s"         # drain time when a worker is asked to stop
# heartbeat = "10s"
# lease = "60s"         # a heartbeat unchanged this long means the worker is gone
# poll = "1s"           # where inotify is unavailable (NFS)
# durable = true        # fsync files and directories on every transition
# max_job_bytes = 1048576        # a dropped or submitted job file
# max_result_bytes = 1048576     # a job's result; larger fails the attempt
# max_log_bytes = 104857600      # a job's log; past it output is cut with a marker line
# isolation = "pool"    # handlers: warm pre-forked children ("fork": a fresh fork per attempt)
# max_jobs_per_child = 1000      # attempts a pool child runs before it is replaced
# max_child_rss_bytes = 536870912   # a pool child past this resident size is replaced
# retention = "30d"     # done/, dead/ and logs/ are purged after this

# A job type that runs a program directly (never through a shell). Args arrive as JSON on
# stdin and in $SPOOL_ARGS; "{name}" items are replaced by that argument.
[jobs.echo]
command = ["echo", "{message}"]

# A job type that calls a Python function: keyword args from a JSON object, its return
# value stored as the job's result.
# [jobs.resize]
# handler = "mypackage.images:resize"
# timeout = "5m"
# env = { MAGICK_THREAD_LIMIT = "1" }

# [schedules.nightly]
# cron = "0 2 * * *"       # or: every = "10m"; or: after = "other-schedule"
# timezone = "UTC"
# job = "echo"
# args = { message = "good night" }
'''

DEMO_CONFIG = '''\
# The embedded demo spool of `spool run`: a few job types and a schedule to watch.

[defaults]
heartbeat = "2s"
lease = "10s"
backoff = { base = "1s", factor = 2.0, max = "10s", jitter = 0.1 }
max_attempts = 3
durable = true

[jobs.hello]                       # a command, args mapped into argv
command = ["echo", "hello,", "{name}"]

[jobs.checksum]                    # a Python handler, its return value stored as result
handler = "spool.demo:checksum"

[jobs.flaky]                       # fails on its first attempt, then succeeds
handler = "spool.demo:flaky"

[jobs.doomed]                      # always fails: lands in dead/ after 2 attempts
command = ["sh", "-c", 'echo "cannot reach $0" >&2; exit 1', "backend"]
max_attempts = 2

[schedules.heartbeat]              # fires every 5 seconds, exactly once per fire
every = "5s"
job = "hello"
args = { name = "from the scheduler" }
'''
