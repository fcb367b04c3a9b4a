"""The container image and the compose file of the distributed mode, checked without a container engine:
Debian's docker-compose validates and resolves the compose file; every setting it (and the systemd and
Kubernetes files) hands Tallylight is a real Settings field, and each service's settings load; every file
they mount or copy exists and reaches the build context; the Dockerfile installs through the same scripts
as `make test` and serves what the pages load; one image name everywhere."""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_DIR = REPO_ROOT / "infra" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / "env.example"
DOCKERFILE = REPO_ROOT / "Dockerfile"
KUBERNETES = REPO_ROOT / "infra" / "kubernetes"
SYSTEM_DEPS = REPO_ROOT / "infra" / "scripts" / "install-system-deps.sh"
# Read by boto3 for s3:// storage, not by Settings.
NOT_SETTINGS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
# Bind mounts the operator provides (infra/README.md says how): the TLS certificate and key.
OPERATOR_PROVIDED = {COMPOSE_DIR / "certs"}

needs_compose = pytest.mark.skipif(shutil.which("docker-compose") is None, reason="needs docker-compose (Debian package)")


def setting_names() -> set[str]:
    from signaling.settings import Settings

    return {name.upper() for name in Settings.model_fields}


# --- the Dockerfile, read as Docker reads it ---

def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions (keyword, arguments) per stage, continuation lines joined, comments dropped."""
    stages: list[list[tuple[str, str]]] = []
    current = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        keyword, _, args = (current + line).partition(" ")
        current = ""
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), args.strip()))
    return stages


def copies(stage: list[tuple[str, str]]) -> Iterator[tuple[str | None, list[str], str]]:
    """(--from stage or None for the build context, sources, destination) of each COPY."""
    for keyword, args in stage:
        if keyword == "COPY":
            words = shlex.split(args)
            source_stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
            paths = [w for w in words if not w.startswith("--")]
            yield source_stage, paths[:-1], paths[-1]


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative to the repository) out of the build context: the last
    pattern matching it or one of its parent folders decides, `!` letting it back in."""
    ignored = False
    for line in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.compile("".join(
            "(.*/)?" if token == "**/" else ".*" if token == "**" else "[^/]*" if token == "*" else
            "[^/]" if token == "?" else token if token.startswith("[") else re.escape(token)
            for token in re.findall(r"\*\*/|\*\*|\*|\?|\[[^\]]*\]|[^*?\[]+", pattern)))
        parts = path.split("/")
        if any(regex.fullmatch("/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


# --- the compose file ---

@functools.cache
def resolved_compose() -> dict[str, Any]:
    """The compose file as docker-compose resolves it with env.example (and nothing from this process)."""
    result = compose_config(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([shutil.which("docker-compose") or "docker-compose", "-f", str(COMPOSE), "--env-file", str(env_file),
                           "config"], capture_output=True, text=True, timeout=60, env={"PATH": os.defpath})


def raw_compose() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # YAML merge keys resolved, ${...} not
    return config


def tally_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run Tallylight's image, but not a shell in it (coturn-config writes a file)."""
    return {name: service for name, service in config["services"].items()
            if "tallylight" in service["image"] and service.get("command", ["tally"])[0] != "sh"}


def image_name() -> str:
    documented = re.findall(r"docker build -t (\S+) \.", DOCKERFILE.read_text())
    assert len(set(documented)) == 1, documented
    return str(documented[0])


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


@needs_compose
def test_docker_compose_accepts_the_compose_file_and_refuses_to_run_without_its_secrets(tmp_path: Path) -> None:
    services = resolved_compose()["services"]
    assert {"postgres", "redis", "migrate", "signaling-1", "signaling-2", "node-1", "node-2", "worker", "coturn",
            "prometheus", "gateway-config", "gateway", "coturn-config"} <= set(services)
    example = env_example()
    secrets = ("POSTGRES_PASSWORD", "JWT_SECRET", "TURN_SECRET", "SECRETS_KEYS")
    for secret in secrets:
        assert example[secret].startswith("change-me"), f"env.example holds a real {secret}?"
    for required in (*secrets, "PUBLIC_URL", "PUBLIC_IP", "TURN_EXTERNAL_IP", "TURN_LISTEN_IP"):
        without = tmp_path / f"without-{required}"
        without.write_text("".join(f"{k}={v}\n" for k, v in example.items() if k != required))
        result = compose_config(without)
        assert result.returncode != 0 and required in result.stderr, (required, result.stderr)
    for name, service in services.items():
        one_shot = name in ("migrate", "gateway-config", "coturn-config")
        assert service.get("restart") == ("no" if one_shot else "unless-stopped"), name
    assert services["gateway"]["depends_on"]["gateway-config"] == {"condition": "service_completed_successfully"}
    assert services["coturn"]["depends_on"]["coturn-config"] == {"condition": "service_completed_successfully"}
    for name in ("signaling-1", "signaling-2", "node-1", "node-2", "worker"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    for name in ("postgres", "redis", "gateway", "coturn", "prometheus"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    for name in ("migrate", "worker", "gateway-config", "coturn-config"):  # they serve nothing: the image's check would fail
        assert services[name]["healthcheck"]["test"] == ["NONE"], name


def test_every_variable_compose_systemd_and_kubernetes_give_tallylight_is_a_setting() -> None:
    known = setting_names()
    given: dict[str, set[str]] = {}
    for name, service in tally_services(raw_compose()).items():
        given[f"compose {name}"] = set(service.get("environment", {}))
    given["systemd env.example"] = {line.split("=", 1)[0] for line in (REPO_ROOT / "infra" / "systemd" / "env.example")
                                    .read_text().splitlines() if line and not line.startswith("#")}
    for unit in (REPO_ROOT / "infra" / "systemd").glob("*.service"):
        exec_start = " ".join(line.removeprefix("ExecStart=") for line in unit.read_text().replace("\\\n", " ").splitlines()
                              if line.startswith("ExecStart="))
        given[f"systemd {unit.name}"] = set(re.findall(r"\b([A-Z][A-Z0-9_]*)=", exec_start))
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc["kind"] in ("ConfigMap", "Secret"):
                given[f"kubernetes {path.name}"] = set(doc.get("data", {})) | set(doc.get("stringData", {}))
            for container in _containers(doc):
                names = {env["name"] for env in container.get("env", [])}
                script = " ".join(container.get("command", []))
                helpers = {name for name in names - known if f"${{{name}" in script}  # only the start script reads them
                given[f"kubernetes {path.name} {container['name']}"] = (names - helpers) | set(re.findall(r"\b([A-Z][A-Z0-9_]*)=", script))
    unknown = {where: sorted(names - known - NOT_SETTINGS) for where, names in given.items() if names - known - NOT_SETTINGS}
    assert not unknown, f"not settings of signaling/settings.py: {unknown}"
    assert {"NODE_ID", "WEBRTC_UDP_PORTS", "WEBRTC_ANNOUNCED_ADDRESSES"} <= given["compose node-1"]
    assert {"NODE_ID", "AUTO_MIGRATE"} <= given["systemd tally-node@.service"]


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    return list(pod.get("containers", []))


@needs_compose
def test_each_compose_service_starts_on_settings_that_load_and_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.fernet import Fernet

    from signaling.settings import Settings

    services = tally_services(resolved_compose())
    node_ids, port_ranges = [], []
    for name, service in services.items():
        command = service["command"]
        if command[0] != "tally":
            continue
        for setting in setting_names():
            monkeypatch.delenv(setting, raising=False)
        for key, value in service["environment"].items():
            monkeypatch.setenv(key, "" if value is None else str(value))
        # The example's key is a placeholder Settings refuses (so that nobody runs on a published key).
        monkeypatch.setenv("SECRETS_KEYS", Fernet.generate_key().decode())
        media = {"node": {"media": True}, "serve": {"media": command[1:] != ["serve", "--media", "off"]}}
        settings = Settings(_env_file=None, **media.get(command[1], {}))  # type: ignore[call-arg]
        assert settings.resolved_database_url.startswith("postgresql+asyncpg://tally:change-me@postgres:5432/"), name
        assert settings.bus_url == "redis://redis:6379/0" and not settings.auto_migrate, name
        assert settings.turn_secret == env_example()["TURN_SECRET"] and settings.turn_urls, name
        if command[1] in ("serve", "node", "worker"):
            node_ids.append(settings.resolved_node_id)
        if command[1] == "node":
            assert settings.resolved_internal_url == f"http://{name}:{settings.port}"
            assert settings.webrtc_announced_addresses == [env_example()["PUBLIC_IP"]]
            low, high = settings.udp_port_range or (0, -1)
            port_ranges.append(range(low, high + 1))
            published = _published(service)
            assert all((port, port, "udp") in published for port in range(low, high + 1)), \
                f"{name}'s ICE ports are not published as themselves"
            assert settings.max_viewers_per_node < high - low + 1, f"{name} admits more sessions than it has ports"
        if command[1] == "serve":
            assert settings.trust_forwarded_for and not settings.media, name
        if command[1] in ("serve", "node") and settings.resolved_storage_url.startswith("file://"):
            storage = settings.resolved_storage_url.removeprefix("file://")
            assert storage in _volume_targets(service), f"{name} keeps recordings in {storage}, not on a shared volume"
    assert len(node_ids) == len(set(node_ids)) == 5, node_ids
    assert len(port_ranges) == 2 and not set(port_ranges[0]) & set(port_ranges[1])
    coturn = resolved_compose()["services"]["coturn"]
    assert not any(env_example()["TURN_SECRET"] in word for word in coturn["command"])  # on no command line
    assert coturn["network_mode"] == "host"


def _published(service: dict[str, Any]) -> set[tuple[int, int, str]]:
    """(host port, container port, protocol) of each published port (docker-compose lists ranges port by port)."""
    out = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.add((int(port["published"]), int(port["target"]), port.get("protocol", "tcp")))
        else:
            mapping, _, protocol = str(port).partition("/")
            published, _, target = mapping.rpartition(":")
            out.add((int(published.rsplit(":", 1)[-1]), int(target), protocol or "tcp"))
    return out


@needs_compose
def test_every_file_compose_mounts_exists_and_the_gateway_and_prometheus_get_what_they_need(tmp_path: Path) -> None:
    services = resolved_compose()["services"]
    mounts: dict[str, dict[str, Path]] = {}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source, target = (volume["source"], volume["target"]) if isinstance(volume, dict) else volume.split(":")[:2]
            if source.startswith("/"):
                mounts.setdefault(name, {})[target] = Path(source)
    for name, binds in mounts.items():
        for target, source in binds.items():
            assert source.exists() or source in OPERATOR_PROVIDED, f"{name} mounts {source}, which is missing"
    assert mounts["coturn-config"]["/shipped/turnserver.conf"] == REPO_ROOT / "turn" / "turnserver.conf"

    # coturn-config, run here as compose runs it ($$ is compose's escape for $), writes the shipped configuration with this
    # deployment's secret and the nodes' address as the one peer allowed, for coturn to start from.
    made = services["coturn-config"]
    script = made["command"][-1].replace("$$", "$").replace("/shipped/", str(REPO_ROOT / "turn") + "/").replace("/coturn/", f"{tmp_path}/")
    subprocess.run(["sh", "-c", script], env={**os.environ, **made["environment"]}, check=True, timeout=30)
    written = (tmp_path / "turnserver.conf").read_text()
    assert written.startswith((REPO_ROOT / "turn" / "turnserver.conf").read_text())
    assert written.endswith(f"static-auth-secret={env_example()['TURN_SECRET']}\nallowed-peer-ip={env_example()['PUBLIC_IP']}\n")
    assert services["coturn"]["command"][:3] == ["turnserver", "-c", "/coturn/turnserver.conf"]
    assert mounts["gateway"]["/certs"] == mounts["coturn"]["/certs"] == COMPOSE_DIR / "certs"
    assert subprocess.run(["git", "check-ignore", "-q", str(COMPOSE_DIR / "certs" / "tls.key")], cwd=REPO_ROOT).returncode == 0

    # The gateway-config command, run here as compose runs it in the image, writes what the gateway loads.
    config = services["gateway-config"]
    command = [sys.executable if word == "python" else word for word in config["command"]]
    command[command.index("--prefix") + 1] = str(tmp_path / "gateway")
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, timeout=30)
    upstreams = [command[i + 1] for i, word in enumerate(command) if word == "--upstream"]
    signaling = sorted(name for name, s in services.items() if s.get("command", [])[:2] == ["tally", "serve"])
    assert upstreams == [f"{name}:8080" for name in signaling] and len(signaling) == 2
    assert f"server {upstreams[0]}" in (tmp_path / "gateway" / "nginx.conf").read_text()
    assert config["working_dir"] == "/opt/tallylight" and "/gateway" in _volume_targets(config)
    assert services["gateway"]["command"][:5] == ["nginx", "-p", "/gateway", "-c", "/gateway/nginx.conf"]

    # Prometheus scrapes exactly the compose file's doors and nodes, with the shipped configuration.
    nodes = sorted(name for name, s in services.items() if s.get("command") == ["tally", "node"])
    targets = mounts["prometheus"]["/etc/prometheus/targets"]
    scraped = {kind: sorted(t for group in json.loads(file.read_text()) for t in group["targets"])
               for kind in ("doors", "nodes") for file in (targets / kind).glob("*.json")}
    assert scraped == {"doors": [f"{n}:8080" for n in signaling], "nodes": [f"{n}:8080" for n in nodes]}
    assert mounts["prometheus"]["/etc/prometheus/prometheus.yml"] == REPO_ROOT / "infra" / "prometheus" / "prometheus.yml"
    if shutil.which("promtool"):  # the container's /etc/prometheus, laid out from the mounts
        etc = tmp_path / "etc-prometheus"
        etc.mkdir()
        for target, source in mounts["prometheus"].items():
            (etc / Path(target).relative_to("/etc/prometheus")).symlink_to(source)
        result = subprocess.run(["promtool", "check", "config", "prometheus.yml"], cwd=etc, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def _volume_targets(service: dict[str, Any]) -> list[str]:
    return [v["target"] if isinstance(v, dict) else v.split(":")[1] for v in service.get("volumes", [])]


def test_the_dockerfile_builds_in_two_stages_with_the_test_suites_scripts_and_runs_unprivileged() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    build, final = stages[0], stages[-1]
    assert final[0] == ("FROM", "python:3.11-slim-bookworm AS runtime")
    runs = {stage: " ".join(args for keyword, args in instructions if keyword == "RUN")
            for stage, instructions in (("build", build), ("final", final))}
    assert "install-system-deps.sh build" in runs["build"] and "install-web-deps.sh runtime" in runs["build"]
    assert "install-system-deps.sh runtime" in runs["final"]
    assert "apt-get" not in runs["final"].replace("/var/lib/apt/lists", "")  # packages come from the script alone
    for stage in (build, final):  # each script is copied in before it runs
        for index, (keyword, args) in enumerate(stage):
            for script in re.findall(r"(install-[a-z-]+\.sh)", args if keyword == "RUN" else ""):
                assert any(script in " ".join(sources) for _, sources, _ in copies(stage[:index])), script

    users = [args for keyword, args in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    healthcheck = " ".join(args for keyword, args in final if keyword == "HEALTHCHECK")
    assert "/healthz" in healthcheck and _probe_passes(healthcheck, 200) and not _probe_passes(healthcheck, 503)
    assert ("CMD", '["tally", "serve"]') in final
    assert "8080/tcp" in " ".join(args for keyword, args in final if keyword == "EXPOSE")

    # Every package pyproject.toml installs is copied into the build.
    import tomllib

    packages = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = {source.strip("/") for stage_from, sources, _ in copies(build) if stage_from is None for source in sources}
    assert {package.rstrip("*") for package in packages} <= copied


def _probe_passes(healthcheck: str, status: int) -> bool:
    """Runs the HEALTHCHECK's command (exec form: JSON, or Docker would hand it to a shell) against a server
    that answers /healthz with `status` on the PORT the command reads."""
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[0] == "/opt/tallylight/venv/bin/python"

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            self.send_response(status if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        return subprocess.run([sys.executable, *command[1:]], env={"PORT": str(server.server_address[1])},
                              capture_output=True, timeout=30).returncode == 0
    finally:
        server.shutdown()
        server.server_close()


def test_every_file_the_dockerfile_copies_exists_and_is_in_the_build_context() -> None:
    for stage in dockerfile_stages():
        for source_stage, sources, _ in copies(stage):
            if source_stage is not None:
                continue
            for source in sources:
                path = REPO_ROOT / source
                assert path.exists(), f"the Dockerfile copies {source}, which is missing"
                files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file() and not
                                                       {"__pycache__", "node_modules"} & set(f.relative_to(REPO_ROOT).parts)]
                assert files, source
                kept_out = [str(f.relative_to(REPO_ROOT)) for f in files if dockerignored(str(f.relative_to(REPO_ROOT)))]
                assert not kept_out, f".dockerignore keeps these out of the build context: {kept_out[:5]}"
    for heavy in (".venv/bin/python", "web/node_modules/hls.js/package.json", "tests/test_containers.py", "var/tallylight.db",
                  "signaling/__pycache__/app.cpython-311.pyc", "infra/compose/.env"):
        assert dockerignored(heavy), heavy


def test_the_test_profile_installs_everything_the_image_does() -> None:
    def packages(*args: str) -> list[str]:
        result = subprocess.run(["bash", str(SYSTEM_DEPS), *args, "--list"], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    runtime, build, test = packages("runtime"), packages("build"), packages("test")
    assert runtime and set(runtime) <= set(build) <= set(test)
    assert packages() == test  # `make test` runs it without a profile
    assert {"chromium", "ffmpeg", "postgresql", "redis-server", "nginx-light", "npm", "prometheus", "docker-compose"} <= set(test)
    tools = {"npm", "gcc", "build-essential", "ffmpeg", "chromium", "postgresql", "redis-server", "nginx-light", "prometheus",
             "docker-compose"}
    assert "npm" in build and not tools & set(runtime)  # a small image: nothing the server does not run
    assert subprocess.run(["bash", str(SYSTEM_DEPS), "everything"], capture_output=True, timeout=30).returncode == 2
    assert "bash infra/scripts/install-system-deps.sh\n" in (REPO_ROOT / "Makefile").read_text()
    assert "bash infra/scripts/install-web-deps.sh;" in (REPO_ROOT / "Makefile").read_text()


def test_the_image_serves_everything_the_pages_load(tmp_path: Path) -> None:
    """The web root as the image lays it out (web/ and only the copied parts of node_modules) gets the same
    routes from the server as the full checkout does."""
    from signaling.web_pages import add_web_routes

    node_modules = REPO_ROOT / "web" / "node_modules"
    if not (node_modules / ".installed").exists():
        pytest.skip("needs the web libraries (make web-deps)")
    final = dockerfile_stages()[-1]
    env = " ".join(args for keyword, args in final if keyword == "ENV")
    web_root = re.search(r"WEB_ROOT=(\S+)", env)
    assert web_root, "the image sets WEB_ROOT (the package is installed, not run from a checkout)"
    root = web_root.group(1).rstrip("/")
    assert (None, ["web/"], root + "/") in list(copies(final))
    image = tmp_path / "web"
    image.mkdir()
    for entry in (REPO_ROOT / "web").iterdir():
        if entry.name != "node_modules":
            (image / entry.name).symlink_to(entry)
    dependencies = json.loads((REPO_ROOT / "web" / "package.json").read_text())["dependencies"]
    build_workdir = next(args for keyword, args in dockerfile_stages()[0] if keyword == "WORKDIR")
    for source_stage, sources, destination in copies(final):
        if source_stage is None or "node_modules" not in destination:
            continue
        for source in sources:  # from where install-web-deps.sh put it, to the same place under WEB_ROOT
            inside = source.removeprefix(f"{build_workdir}/web/")
            assert inside.startswith("node_modules/"), source
            assert inside.split("/")[1] in dependencies, f"{inside} is not installed by npm ci --omit=dev"
            if source.endswith("/"):
                assert destination == f"{root}/{inside}"
                (image / inside).parent.mkdir(parents=True, exist_ok=True)
                (image / inside).symlink_to(REPO_ROOT / "web" / inside)
            else:
                assert destination == f"{root}/{inside.rsplit('/', 1)[0]}/"

    def routes(web_root: Path) -> set[tuple[str, str, str | None]]:
        app = web.Application()
        add_web_routes(app, web_root)
        return {(route.method, route.resource.canonical, route.name) for route in app.router.routes() if route.resource}

    full = routes(REPO_ROOT / "web")
    assert {name for _, _, name in full} >= {"vendor-hls", "vendor-dashjs", "vendor-uplot"}
    assert routes(image) == full


def test_compose_kubernetes_and_the_docs_name_the_image_the_dockerfile_documents() -> None:
    name = image_name()
    for service in tally_services(raw_compose()).values():
        assert service["image"] == f"${{TALLYLIGHT_IMAGE:-{name}}}"
    if shutil.which("docker-compose"):
        assert {s["image"] for s in tally_services(resolved_compose()).values()} == {name}
        assert "TALLYLIGHT_IMAGE" not in env_example()  # so the default above is what the example runs
    images = {container["image"] for path in KUBERNETES.glob("*.yaml") for doc in yaml.safe_load_all(path.read_text())
              for container in _containers(doc)}
    assert images == {name}
    assert f"docker build -t {name} ." in (REPO_ROOT / "infra" / "README.md").read_text()
