"""The `tally` command as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def tally(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATA_DIR": str(data_dir), "DATABASE_URL": "", "JWT_SECRET": "x" * 40}
    return subprocess.run([sys.executable, "-m", "signaling.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_migrate_creates_the_database_and_set_role_explains_failures(tmp_path: Path) -> None:
    result = tally("migrate", data_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout and (tmp_path / "tallylight.db").exists()
    result = tally("set-role", "ghost", "admin", data_dir=tmp_path)
    assert result.returncode == 1 and "no such user" in result.stderr
    result = tally("set-role", "ghost", "emperor", data_dir=tmp_path)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_serving_leaves_start_up_objects_out_of_collections_and_collects_young_ones_less_often() -> None:
    import gc

    from signaling import cli

    before = gc.get_threshold()
    try:
        cli._tune_gc()
        assert gc.get_freeze_count() > 10_000  # modules, classes and the like, never scanned again
        assert gc.get_threshold() == (cli.GC_YOUNG_THRESHOLD, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_settings_problem_is_told_without_the_values_given(tmp_path: Path) -> None:
    """pydantic quotes the input; for a check across settings that is every setting, secrets too."""
    env = {**os.environ, "DATA_DIR": str(tmp_path), "DATABASE_URL": "", "JWT_SECRET": "jwt-" + "s" * 40,
           "TURN_SECRET": "turn-secret-in-clear", "TLS_CERT": str(tmp_path / "cert.pem")}
    result = subprocess.run([sys.executable, "-m", "signaling.cli", "serve"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "TLS_CERT and TLS_KEY go together" in result.stderr, result.stderr
    assert "turn-secret-in-clear" not in result.stderr and "jwt-sss" not in result.stderr, result.stderr
    env |= {"TLS_CERT": "", "SECRETS_KEYS": "p7xfBrknZapo9BLoapln_ggKequCK_n2Sv5sg-NlNI8=,not-a-key"}
    result = subprocess.run([sys.executable, "-m", "signaling.cli", "serve"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "SECRETS_KEYS" in result.stderr and "p7xfBrkn" not in result.stderr, result.stderr


def test_rtmps_without_a_usable_certificate_stops_the_start_with_why(tmp_path: Path) -> None:
    env = {**os.environ, "DATA_DIR": str(tmp_path), "DATABASE_URL": "", "JWT_SECRET": "x" * 40, "RTMPS_PORT": "1936"}
    run = [sys.executable, "-m", "signaling.cli", "serve"]
    result = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "RTMPS_PORT needs RTMPS_CERT and RTMPS_KEY" in result.stderr, result.stderr
    (tmp_path / "cert.pem").write_text("not a certificate")
    env |= {"RTMPS_CERT": str(tmp_path / "cert.pem"), "RTMPS_KEY": str(tmp_path / "missing.pem")}
    result = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "RTMPS_CERT/RTMPS_KEY cannot be loaded" in result.stderr, result.stderr


def test_rtmp_is_on_by_default_and_a_taken_default_port_only_turns_it_off(tmp_path: Path) -> None:
    import signal
    import socket

    from server_process import server_env, tally as tally_command
    from support import free_port, wait_ready

    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            taken.bind(("127.0.0.1", 1935))
        except OSError:
            pass  # another program has it: the same case
        taken.listen()
        port = free_port()
        env = server_env(tmp_path, port)
        del env["RTMP_PORT"]  # the default, 1935
        log = tmp_path / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(tally_command("serve"), env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_ready(f"http://127.0.0.1:{port}", process, log)
            # Encoders are not told a port another program holds.
            import json
            import urllib.request

            def call(path: str, body: dict[str, str] | None = None, token: str = "") -> dict[str, object]:
                request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST" if body else "GET",
                                                 data=json.dumps(body).encode() if body else None,
                                                 headers={"Content-Type": "application/json",
                                                          **({"Authorization": f"Bearer {token}"} if token else {})})
                with urllib.request.urlopen(request, timeout=10) as response:
                    return dict(json.loads(response.read()))

            call("/api/auth/register", {"username": "caster", "email": "c@example.com", "password": "correct horse"})
            token = str(call("/api/auth/login", {"username": "caster", "password": "correct horse"})["access_token"])
            assert call("/api/me/stream-key", token=token)["rtmp_url"] is None
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0, log.read_text()
        assert "RTMP ingest is off: port 1935 cannot be had" in log.read_text()
        # Asked for by name, the port must be had.
        env["RTMP_PORT"] = "1935"
        result = subprocess.run(tally_command("serve"), env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "tally: RTMP_PORT 1935 cannot be listened on" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_a_front_door_cannot_be_made_internal_only(tmp_path: Path) -> None:
    env = {**os.environ, "DATA_DIR": str(tmp_path), "DATABASE_URL": "", "JWT_SECRET": "x" * 40,
           "BUS_URL": "redis://127.0.0.1:6379/0", "PUBLIC_HTTP": "false"}
    result = subprocess.run([sys.executable, "-m", "signaling.cli", "serve", "--media", "off"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "PUBLIC_HTTP=false is for media nodes" in result.stderr, result.stderr
