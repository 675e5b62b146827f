"""The first minutes: `spool run` creates the demo spool only where the quick start asks for
it, and spool imports and runs in a directory that holds a spool named `spool`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import cli_env, spool_cli, wait_until

SPOOL_BIN = Path(sys.executable).parent / "spool"


def spool_here(cwd: Path, *args: str, timeout: float = 60,
               **env: str) -> subprocess.CompletedProcess:
    """The installed `spool` script of this interpreter, run in `cwd`."""
    return subprocess.run([str(SPOOL_BIN), "--host", "test", *args], cwd=cwd,
                          capture_output=True, text=True, env=cli_env(**env), timeout=timeout)


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return out, err


def test_run_on_a_missing_explicit_spool_says_how_to_create_it(tmp_path):
    typo = tmp_path / "typo"
    result = spool_here(tmp_path, "--spool", str(typo), "run")
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: no spool at {typo}: create it with 'spool --spool {typo} init'")
    assert "run --demo" in last
    assert not typo.exists()


def test_run_on_a_missing_spool_from_spool_dir_says_how_to_create_it(tmp_path):
    typo = tmp_path / "typo"
    result = spool_here(tmp_path, "run", SPOOL_DIR=str(typo))
    assert result.returncode == 2, result.stderr
    assert f"Error: no spool at {typo}" in result.stderr
    assert not typo.exists()


def test_run_on_an_explicit_default_name_does_not_create_the_demo(tmp_path):
    """`--spool spool` names a spool: only the default (no flag, no SPOOL_DIR) is the demo."""
    result = spool_here(tmp_path, "--spool", "spool", "run")
    assert result.returncode == 2, result.stderr
    assert "Error: no spool at" in result.stderr
    assert not (tmp_path / "spool").exists()


def _demo_run(cwd: Path, *args: str) -> tuple[Path, str]:
    proc = subprocess.Popen([str(SPOOL_BIN), "--host", "test", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env())
    try:
        spool = cwd / "spool" if "--spool" not in args else Path(args[args.index("--spool") + 1])
        wait_until(lambda: any((spool / "done").glob("*.json")), timeout=60)
    finally:
        _, err = stop(proc)
    return spool, err


def test_run_on_the_default_spool_creates_the_demo(tmp_path):
    spool, err = _demo_run(tmp_path, "run")
    assert f"created the demo spool at {spool}" in err
    assert "submitted hello:" in err and "submitted doomed:" in err
    assert "[jobs.flaky]" in (spool / "spool.toml").read_text()
    # a second start on the existing demo spool submits nothing more
    _, err = _demo_run(tmp_path, "run")
    assert "submitted" not in err and "created the demo spool" not in err


def test_run_demo_creates_the_demo_spool_where_asked(tmp_path):
    target = tmp_path / "elsewhere"
    proc = subprocess.Popen([str(SPOOL_BIN), "--host", "test", "--spool", str(target), "run",
                             "--demo"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        wait_until(lambda: any((target / "done").glob("*.json")), timeout=60)
    finally:
        _, err = stop(proc)
    assert f"created the demo spool at {target}" in err
    assert "submitted checksum:" in err


def test_spool_imports_and_runs_beside_a_spool_named_spool(tmp_path):
    """A directory `spool/` (a spool, not a package) in the current directory must not shadow
    the installed package: neither for `python -c` nor with PYTHONPATH=. (how handlers in the
    current directory become importable)."""
    assert spool_cli(tmp_path / "spool", "init").returncode == 0
    (tmp_path / "spool" / "spool.toml").write_text(
        '[jobs.greet]\nhandler = "myhandlers:greet"\n')
    (tmp_path / "myhandlers.py").write_text(
        "def greet(name):\n    return f'hello {name}'\n")
    env = cli_env(PYTHONPATH=".")
    env.pop("PYTHONSAFEPATH", None)  # the natural case: the current directory on sys.path
    code = ("from spool import Spool; "
            "print(Spool('spool', host='test').submit('greet', {'name': 'you'}))")
    made = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, env=env, timeout=60)
    assert made.returncode == 0, made.stderr
    job_id = made.stdout.strip()
    ran = subprocess.run([str(SPOOL_BIN), "--host", "test", "worker", "--burst"], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=120)
    assert ran.returncode == 0, ran.stderr
    shown = subprocess.run([str(SPOOL_BIN), "show", job_id, "--json"], cwd=tmp_path,
                           capture_output=True, text=True, env=env, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert '"hello you"' in shown.stdout and '"state": "done"' in shown.stdout
    assert os.path.isdir(tmp_path / "spool" / "done")
