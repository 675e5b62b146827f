"""spool.toml validation: every error names the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from spool.config import parse_config
from spool.errors import ConfigError
from spool.sample import DEMO_CONFIG, SAMPLE_CONFIG

P = Path("spool.toml")


def test_samples_are_valid():
    assert "echo" in parse_config(SAMPLE_CONFIG, P).jobs
    demo = parse_config(DEMO_CONFIG, P)
    assert demo.schedules["heartbeat"].every == 5


def test_job_type_inherits_and_overrides_defaults():
    config = parse_config("""
[defaults]
timeout = "10m"
max_attempts = 7
backoff = { base = "2s" }
[jobs.a]
command = ["x"]
[jobs.b]
handler = "m:f"
timeout = 30
backoff = { factor = 3.0 }
""", P)
    a, b = config.jobs["a"], config.jobs["b"]
    assert (a.timeout, a.max_attempts, a.backoff.base) == (600, 7, 2)
    assert (b.timeout, b.backoff.base, b.backoff.factor) == (30, 2, 3.0)


@pytest.mark.parametrize("text,key", [
    ("[defaults]\ncolour = 1", "defaults.colour"),
    ("[defaults]\ntimeout = \"soon\"", "defaults.timeout"),
    ("[defaults]\npriority = 10", "defaults.priority"),
    ("[defaults]\nheartbeat = \"30s\"\nlease = \"60s\"", "defaults.lease"),
    ("[jobs.a]\ncommand = \"echo hi\"", "jobs.a.command"),
    ("[jobs.a]\ncommand = [\"x\"]\nhandler = \"m:f\"", "jobs.a"),
    ("[jobs.a]\nhandler = \"nofunction\"", "jobs.a.handler"),
    ("[jobs.a]\ncommand = [\"x\"]\nslots = 0", "jobs.a.slots"),
    ("[jobs.a]\ncommand = [\"x\"]\n[schedules.s]\ncron = \"61 * * * *\"\njob = \"a\"",
     "schedules.s.cron"),
    ("[jobs.a]\ncommand = [\"x\"]\n[schedules.s]\nevery = \"1m\"\njob = \"zz\"", "schedules.s.job"),
    ("[jobs.a]\ncommand = [\"x\"]\n[schedules.s]\nevery = \"1m\"\njob = \"a\"\ntimezone = \"Mars/Base\"",
     "schedules.s.timezone"),
    ("[jobs.a]\ncommand = [\"x\"]\n[schedules.s]\nafter = \"t\"\njob = \"a\"", "schedules.s.after"),
])
def test_errors_name_file_and_key(text, key):
    with pytest.raises(ConfigError) as info:
        parse_config(text, P)
    assert str(info.value).startswith("spool.toml: key ")
    assert f"'{key}'" in str(info.value)


def test_not_toml_names_the_file():
    with pytest.raises(ConfigError, match="spool.toml: not valid TOML"):
        parse_config("[jobs", P)
