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
    with pytest.raises(ConfigError, match=r"spool.toml: not valid TOML"):
        parse_config("[jobs", P)


# -- hostile values: every id a schedule can fire fits a job id; sizes and depths bounded ----

JOB = '[jobs.a]\ncommand = ["x"]\n'


def schedule(name: str, spec: str) -> str:
    return f'[schedules."{name}"]\njob = "a"\n{spec}\n'


def test_schedule_names_whose_fire_ids_fit_are_fine():
    name = "n" * (128 - len("@manual.YYYYMMDDTHHMMSSZ"))  # the longest fire id: 128 chars
    assert name in parse_config(JOB + schedule(name, 'every = "1m"'), P).schedules


@pytest.mark.parametrize("spec", ['every = "1m"', 'cron = "0 2 * * *"'])
def test_schedule_names_too_long_for_their_fire_ids_are_refused(spec):
    name = "n" * 105  # 105 + len("@manual.YYYYMMDDTHHMMSSZ") = 129
    with pytest.raises(ConfigError) as info:
        parse_config(JOB + schedule(name, spec), P)
    message = str(info.value)
    assert f"key 'schedules.{name}'" in message and "129 characters" in message
    assert "@manual.YYYYMMDDTHHMMSSZ" in message and "shorten" in message


def test_after_schedules_count_their_upstream_ids():
    up, down = "u" * 60, "d" * 38  # d@after.u@manual.STAMP = 38 + 7 + 60 + 24 = 129
    text = JOB + schedule(up, 'every = "1m"') + schedule(down, f'after = "{up}"')
    with pytest.raises(ConfigError, match=f"schedules.{down}'.*129 characters"):
        parse_config(text, P)
    fits = text.replace(down, down[:-1])
    assert down[:-1] in parse_config(fits, P).schedules


def test_after_cycles_are_refused():
    text = JOB + schedule("x", 'after = "y"') + schedule("y", 'after = "x"')
    with pytest.raises(ConfigError, match=r"cycle.*x -> y -> x"):
        parse_config(text, P)
    with pytest.raises(ConfigError, match="cycle"):
        parse_config(JOB + schedule("self", 'after = "self"'), P)


def test_result_and_log_limits_have_defaults_and_bounds():
    defaults = parse_config("", P).defaults
    assert (defaults.max_result_bytes, defaults.max_log_bytes) == (1048576, 104857600)
    set_ = parse_config("[defaults]\nmax_result_bytes = 8388608\nmax_log_bytes = 2048", P)
    assert (set_.defaults.max_result_bytes, set_.defaults.max_log_bytes) == (8388608, 2048)
    for key, value in (("max_result_bytes", -1), ("max_log_bytes", 10), ("max_job_bytes", 2**40),
                       ("max_result_bytes", "1M")):
        with pytest.raises(ConfigError, match=f"defaults.{key}"):
            parse_config(f"[defaults]\n{key} = {value!r}".replace("'", '"'), P)


def test_sample_lists_the_new_limits():
    assert "max_result_bytes = 1048576" in SAMPLE_CONFIG
    assert "max_log_bytes = 104857600" in SAMPLE_CONFIG


@pytest.mark.parametrize("text", ["a = " + "[" * 5000 + "]" * 5000,
                                  "[jobs.a]\ncommand = [\"x\"]\ntimeout = \"99999999d\"",
                                  "[jobs.a]\ncommand = [\"x\"]\nmax_attempts = 99999999999",
                                  "[jobs.\"a\\n\"]\ncommand = [\"x\"]"])
def test_hostile_config_values_are_config_errors(text):
    with pytest.raises(ConfigError, match=r"spool.toml"):
        parse_config(text, P)


@pytest.mark.parametrize("args", ["{x = nan}", "{x = inf}", "{when = 2026-01-01}",
                                  "[1979-05-27T07:32:00Z]"])
def test_schedule_args_must_be_json(args):
    text = JOB + schedule("s", f'every = "1m"\nargs = {args}')
    with pytest.raises(ConfigError, match=r"schedules.s.args'.*not a JSON value"):
        parse_config(text, P)


def test_isolation_and_pool_limits():
    config = parse_config('[jobs.h]\nhandler = "m:f"\n[jobs.f]\nhandler = "m:f"\n'
                          'isolation = "fork"\n', P)
    assert (config.defaults.isolation, config.jobs["h"].isolation) == ("pool", "pool")
    assert config.jobs["f"].isolation == "fork"
    assert (config.defaults.max_jobs_per_child, config.defaults.max_child_rss_bytes) == \
        (1000, 512 << 20)
    forked = parse_config('[defaults]\nisolation = "fork"\nmax_jobs_per_child = 5\n'
                          '[jobs.h]\nhandler = "m:f"\n', P)
    assert forked.jobs["h"].isolation == "fork" and forked.defaults.max_jobs_per_child == 5
    for text, key in (('[defaults]\nisolation = "thread"', "defaults.isolation"),
                      ("[defaults]\nmax_jobs_per_child = 0", "defaults.max_jobs_per_child"),
                      ("[defaults]\nmax_child_rss_bytes = 10", "defaults.max_child_rss_bytes"),
                      ('[jobs.c]\ncommand = ["true"]\nisolation = "fork"', "jobs.c.isolation")):
        with pytest.raises(ConfigError, match=f"key '{key}'"):
            parse_config(text, P)
    assert "isolation" in SAMPLE_CONFIG and "max_jobs_per_child" in SAMPLE_CONFIG
