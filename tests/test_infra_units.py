"""The systemd units of infra/systemd are valid units (checked by systemd-analyze itself)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
UNITS = REPO_ROOT / "infra" / "systemd"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_door_and_node_units_verify(tmp_path: Path) -> None:
    tally = Path(sys.executable).parent / "tally"
    assert tally.exists()
    for unit in UNITS.glob("*.service"):  # installed where the units expect it: here, this checkout's venv
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/tallylight/.venv/bin/tally", str(tally)))
    (tmp_path / "tally-node@3.service").write_text((tmp_path / "tally-node@.service").read_text())
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", "./tally-door.service", "./tally-node@3.service"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    assert "tally node" in (UNITS / "tally-node@.service").read_text()
    assert "--media off" in (UNITS / "tally-door.service").read_text()
