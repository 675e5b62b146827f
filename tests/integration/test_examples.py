"""The examples run as documented: the sample spool.toml, the shell job, the handlers, the
hand-drop script and the pipeline."""

from __future__ import annotations

import json
import shutil
import signal
import os
import subprocess
import sys
from pathlib import Path

from conftest import cli_env, make_spool, spool_cli

REPO = Path(__file__).parents[2]


def test_examples_run_end_to_end(tmp_path):
    config = (REPO / "examples" / "spool.toml").read_text()
    spool_dir = make_spool(tmp_path / "spool", config)
    # the scripts call `spool` as a user would: the one installed beside this interpreter
    # (test.sh installs it into .venv), not whatever a machine happens to have on PATH
    bin_dir = str(Path(sys.executable).parent)
    env = cli_env(SPOOL_DIR=str(spool_dir), PYTHONPATH=str(REPO),
                  PATH=os.pathsep.join([bin_dir, os.environ.get("PATH", "")]))
    assert shutil.which("spool", path=env["PATH"]) == os.path.join(bin_dir, "spool")
    src = tmp_path / "picture.jpg"
    src.write_bytes(b"x" * 1234)
    thumb = spool_cli(spool_dir, "submit", "thumbnail", "-a", f"src={src}", "-a", "width=64")
    dropped = subprocess.run([str(REPO / "examples" / "drop.sh")], env=env, capture_output=True,
                             text=True, check=True).stdout.strip()
    worker = subprocess.Popen([sys.executable, "-m", "spool.cli", "--spool", str(spool_dir),
                               "worker", "--capacity", "2"],
                              cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    try:
        piped = subprocess.run([str(REPO / "examples" / "pipeline.sh")], env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=120)
        assert piped.returncode == 0, piped.stderr
        assert "{'words': 2}" in piped.stdout
        for job_id in (thumb.stdout.strip(), dropped):
            assert spool_cli(spool_dir, "wait", job_id, "--timeout", "60").returncode == 0
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    shown = json.loads(spool_cli(spool_dir, "show", thumb.stdout.strip(), "--json").stdout)
    assert shown["result"] == {"source": str(src), "width": 64, "bytes": 1234}
    assert json.loads(spool_cli(spool_dir, "show", dropped, "--json").stdout)["priority"] == 3
