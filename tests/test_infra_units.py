"""The systemd units of infra/systemd are valid units (checked by systemd-analyze itself)."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
UNITS = REPO_ROOT / "infra" / "systemd"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_door_node_and_worker_units_verify(tmp_path: Path) -> None:
    tally = Path(sys.executable).parent / "tally"
    assert tally.exists()
    for unit in UNITS.glob("*.service"):  # installed where the units expect it: here, this checkout's venv
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/tallylight/.venv/bin/tally", str(tally)))
    (tmp_path / "tally-node@3.service").write_text((tmp_path / "tally-node@.service").read_text())
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", "./tally-door.service", "./tally-node@3.service",
                             "./tally-worker.service"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    assert "tally node" in (UNITS / "tally-node@.service").read_text()
    assert "--media off" in (UNITS / "tally-door.service").read_text()


def test_the_kubernetes_manifests_are_valid_objects_of_the_api() -> None:
    import kubernetes_validate
    import yaml
    from kubernetes_validate import utils

    kinds = []
    for path in sorted((REPO_ROOT / "infra" / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(doc, utils.latest_version(), strict=True)  # unknown fields fail too
            kinds.append(doc["kind"])
    assert sorted(kinds) == ["ConfigMap", "Deployment", "Deployment", "HorizontalPodAutoscaler", "Job", "PodDisruptionBudget",
                             "Secret", "Service", "StatefulSet"]


def test_each_node_pod_gets_its_own_port_id_and_spool(tmp_path: Path) -> None:
    """The node pods' start command and readiness probe, run as the kubelet would (after it turns $$ into $)."""
    import yaml

    node = next(yaml.safe_load_all((REPO_ROOT / "infra" / "kubernetes" / "node.yaml").read_text()))
    container = node["spec"]["template"]["spec"]["containers"][0]
    script = container["command"][2].replace("$$", "$").replace("tally node", "env")
    out = subprocess.run(["sh", "-c", script], env={"POD_NAME": "tally-node-3", "HOST_IP": "10.0.0.5", "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=10, check=True).stdout.splitlines()
    assert {"PORT=8103", "INTERNAL_URL=http://10.0.0.5:8103",
            "RECORDING_SPOOL_DIR=/var/lib/tallylight/spool/tally-node-3"} <= set(out)
    probe = container["readinessProbe"]["exec"]["command"]
    server = http.server.HTTPServer(("127.0.0.1", 0), _Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ordinal = server.server_address[1] - 8100  # the pod whose port this server has

        def ready(pod: str) -> bool:
            return subprocess.run([sys.executable, *probe[1:]], env={"POD_NAME": pod}, capture_output=True,
                                  timeout=10).returncode == 0

        assert ready(f"tally-node-{ordinal}") and not ready(f"tally-node-{ordinal + 1}")
    finally:
        server.shutdown()


class _Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        self.send_response(200 if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass
