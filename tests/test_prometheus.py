"""Operators' monitoring, checked by the real tools: promtool validates the shipped Prometheus config
and rules and runs the rules' unit tests (infra/prometheus/tests/); Debian's Prometheus scrapes a
running server with the shipped config and answers queries through its HTTP API; and every metric the
shipped rules and Grafana dashboards query is one the server really exports (or a shipped recording
rule), so a renamed metric cannot leave a panel or an alert silently empty."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_process import REPO_ROOT, serve
from support import free_port

PROMETHEUS = REPO_ROOT / "infra" / "prometheus"
GRAFANA = REPO_ROOT / "infra" / "grafana"

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="needs prometheus (Debian package)")


def promtool(*args: str) -> str:
    result = subprocess.run(["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_promtool_passes_the_shipped_config_and_rules_and_their_unit_tests() -> None:
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in promtool("check", "rules", "rules/tallylight.yml")
    assert "SUCCESS" in promtool("test", "rules", "tests/alerts_test.yml")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with RTMP on (so its RTMP metrics are exported too); its host:port."""
    with serve(tmp_path_factory.mktemp("server"), RTMP_PORT=str(free_port())) as server:
        yield server.url.removeprefix("http://")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_prometheus_scrapes_a_running_server_with_the_shipped_config(running: str, tmp_path: Path) -> None:
    config = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS, config)
    (config / "targets" / "doors" / "test.json").write_text(json.dumps([{"targets": [running]}]))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(["prometheus", f"--config.file={config / 'prometheus.yml'}",
                                f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            try:
                found = _get(f"{api}/query?" + urllib.parse.urlencode({"query": "tally_sfu_viewers"}))["data"]["result"]
            except OSError:
                found = []
            if found:
                break
            assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()[-3000:]
            time.sleep(0.5)
        (series,) = found
        assert series["metric"]["job"] == "tallylight-door" and series["metric"]["instance"] == running
        assert float(series["value"][1]) == 0  # nobody watches
        targets = _get(f"{api}/targets")["data"]["activeTargets"]
        assert [(t["labels"]["job"], t["health"]) for t in targets] == [("tallylight-door", "up")]
        groups = {g["name"] for g in _get(f"{api}/rules")["data"]["groups"]}
        assert groups == {"tallylight-recording", "tallylight-alerts"}
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _exported(host: str) -> set[str]:
    """Every series name the server's /metrics has (counters, histograms and their parts)."""
    text = urllib.request.urlopen(f"http://{host}/metrics", timeout=10).read().decode()
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            names |= {name, f"{name}_total", f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def _queried(expression: str) -> set[str]:
    """Metric names in a PromQL expression: recording rules (with colons) and tally_* series."""
    rules = set(re.findall(r"\b[a-z_]+:[a-z0-9_:]+", expression))
    for rule in rules:
        expression = expression.replace(rule, " ")
    return rules | set(re.findall(r"\btally_[a-z0-9_]+", expression))


def _recording_rules() -> dict[str, str]:
    import yaml

    groups = yaml.safe_load((PROMETHEUS / "rules" / "tallylight.yml").read_text())["groups"]
    return {r.get("record") or r["alert"]: r["expr"] for g in groups for r in g["rules"]}


def test_the_shipped_rules_and_dashboards_query_only_what_the_server_exports(running: str) -> None:
    exported = _exported(running)
    rules = _recording_rules()
    recorded = {name for name in rules if ":" in name}
    wrong = {f"rule {name}: {m}" for name, expr in rules.items() for m in _queried(expr) - exported - recorded}
    panels = 0
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        assert board["uid"].startswith("tallylight-") and board["panels"], path
        for panel in board["panels"]:
            assert panel["targets"], (path.name, panel["title"])
            for target in panel["targets"]:
                panels += 1
                wrong |= {f"{path.name} / {panel['title']}: {m}"
                          for m in _queried(target["expr"]) - exported - recorded}
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                wrong |= {f"{path.name} / ${variable['name']}: {m}"
                          for m in _queried(variable["query"]) - exported - recorded}
    assert panels >= 20
    assert not wrong, "\n".join(sorted(wrong))
