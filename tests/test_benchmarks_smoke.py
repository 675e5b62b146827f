"""benchmarks/compare.py runs end to end: a `--quick --no-peers` run (spool and the floors only,
so it needs none of the peers installed) measures every local workload and writes its JSON;
a peer that is not installed is skipped with a line saying why. No speed is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_quick_run_measures_spool_and_the_floors(tmp_path: Path) -> None:
    out = tmp_path / "compare.json"
    result = subprocess.run([sys.executable, str(BENCHMARKS / "compare.py"), "--quick",
                             "--no-peers", "--pending", "2000", "--dir", str(tmp_path),
                             "--json", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(out.read_text())
    assert doc["failed"] == []
    rows = doc["rows"]
    by_workload: dict[str, list[dict]] = {}
    for row in rows:
        by_workload.setdefault(row["workload"], []).append(row)
        assert row["figure"] > 0, row
    assert set(by_workload) == {"true command jobs, drain", "python no-op jobs, drain",
                                "enqueue -> start, idle worker", "burst drain at scale",
                                "enqueue"}
    for workload, found in by_workload.items():
        names = {row["name"] for row in found}
        assert any(name.startswith("spool") for name in names), (workload, names)
        assert not any(name.startswith(("tsp", "nq", "huey", "rq")) for name in names), names
    references = [row for row in rows if row["name"] == row["reference"]]
    assert len(references) == 4 and all(row["ratio"] == pytest.approx(1.0) for row in references)
    floors = [row for row in rows if not row["name"].startswith("spool")]
    assert floors and all(row["spool_over_this"] > 0 for row in floors)
    assert "skip tsp: --no-peers" in result.stdout
    assert "| enqueue | spool submit_many, durable=false |" in result.stdout


def test_a_missing_peer_is_skipped_with_the_reason(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import peers

    monkeypatch.setattr(peers.shutil, "which", lambda name: None)
    monkeypatch.setattr(peers, "PEER_PYTHON", tmp_path / "missing" / "python")
    assert "Debian package task-spooler" in peers.why_not("tsp")
    assert "--install" in peers.why_not("huey")
