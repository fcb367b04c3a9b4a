"""Debian's nginx on a rendered configuration (infra/cdn, infra/gateway), for as long as a test needs it."""

from __future__ import annotations

import importlib.util
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[1]


def infra_module(path: str) -> ModuleType:
    """A script of infra/ (not a package), loaded by its path: `infra_module("gateway/render.py")`."""
    spec = importlib.util.spec_from_file_location(path.replace("/", "_").removesuffix(".py"), REPO_ROOT / "infra" / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def nginx_check(conf: Path) -> None:
    """`nginx -t` on the configuration: it must pass."""
    done = subprocess.run([nginx_binary(), "-t", "-p", str(conf.parent), "-c", str(conf)], capture_output=True, text=True)
    assert done.returncode == 0 and "test is successful" in done.stderr, done.stderr


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


@contextmanager
def nginx(conf: Path, ready_url: str, context: ssl.SSLContext | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run nginx on `conf` until the block ends; ready once `ready_url` answers (any HTTP status)."""
    process = subprocess.Popen([nginx_binary(), "-p", str(conf.parent), "-c", str(conf), "-g", "daemon off;"],
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, f"nginx exited: {process.stderr.read() if process.stderr else b''!r}"
            try:
                urllib.request.urlopen(ready_url, timeout=1, context=context).close()
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        process.wait(10)
