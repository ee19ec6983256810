"""The wsgate process: where the binary is, its config and endpoints on disk, starting it until
its health check answers, running it until it refuses to start, and stopping it."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .constants import HOST, READY_TIMEOUT, REPO_ROOT, STEP_TIMEOUT
from .http import http_get, https_get
from .waiting import wait_until

# Servers that are currently running; the failure hook in conftest.py attaches
# their logs to the report of a failing test.
LIVE_SERVERS: list["Server"] = []


def wsgate_bin() -> Path:
    env = os.environ.get("WSGATE_BIN")
    if env:
        return Path(env)
    return REPO_ROOT / ".build" / "release" / "wsgate"


def require_binary() -> Path:
    path = wsgate_bin()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"wsgate binary not found at {path}: build it with "
            "`swift build -c release` or point WSGATE_BIN at it",
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def write_endpoints(directory: Path, scripts: dict[str, str]) -> Path:
    """Write ``{relative path: Lua source}`` below ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for rel, source in scripts.items():
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source, encoding="utf-8")
    return directory


def write_config(path: Path, config: dict | str | None) -> Path:
    if isinstance(config, str):
        path.write_text(config, encoding="utf-8")
    else:
        path.write_text(json.dumps(config or {}, indent=2), encoding="utf-8")
    return path


def command(config_path: Path, endpoints_dir: Path, port: int, workers: int = 2,
            extra_args: list[str] | None = None) -> list[str]:
    return [
        str(wsgate_bin()),
        "--config", str(config_path),
        "--host", HOST,
        "--port", str(port),
        "--endpoints", str(endpoints_dir),
        "--workers", str(workers),
    ] + [str(arg) for arg in (extra_args or [])]


def _prepare(workdir: Path, scripts: dict[str, str] | None, config: dict | str | None,
             endpoints: Path | None = None) -> tuple[Path, Path]:
    """Check the binary, then write the endpoints (unless given) and the config into ``workdir``;
    returns ``(endpoints folder, config path)``."""
    require_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    if endpoints is None:
        endpoints = write_endpoints(workdir / "endpoints", scripts or {})
    return endpoints, write_config(workdir / "config.json", config)


def _speaks_tls(config, extra_args) -> bool:
    """Whether a server started with this config and these flags listens for TLS only."""
    if extra_args and "--tls-cert" in [str(arg) for arg in extra_args]:
        return True
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError:
            return False
    return isinstance(config, dict) and bool(config.get("tls"))


class Server:
    """A running wsgate process."""

    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path,
                 endpoints_dir: Path, config_path: Path):
        self.proc = proc
        self.port = port
        self.log_path = log_path
        self.endpoints_dir = endpoints_dir
        self.config_path = config_path
        self.tls = False  # set by start_server for a port that speaks TLS only

    def url(self, path: str) -> str:
        return f"ws://{HOST}:{self.port}{path}"

    def wss_url(self, path: str, host: str = "localhost") -> str:
        """A wss:// URL; ``host`` is the name the certificate is checked against."""
        return f"wss://{host}:{self.port}{path}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_for_log(self, needle: str, timeout: float = STEP_TIMEOUT) -> str:
        """Poll the log until ``needle`` shows up; return the whole log."""
        def found():
            text = self.log()
            return (text,) if needle in text else None

        try:
            return wait_until(found, timeout, interval=0.05)[0]
        except AssertionError:
            raise AssertionError(
                f"{needle!r} did not appear in the wsgate log within {timeout}s; "
                f"log tail:\n{self.log_tail()}"
            ) from None

    def log_lines_with(self, needle: str) -> list[str]:
        return [line for line in self.log().splitlines() if needle in line]

    def stop(self) -> None:
        if self in LIVE_SERVERS:
            LIVE_SERVERS.remove(self)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_server(workdir: Path, scripts: dict[str, str] | None = None,
                 config: dict | str | None = None, endpoints: Path | None = None,
                 workers: int = 2, extra_args: list[str] | None = None,
                 tls: bool | None = None, env: dict[str, str] | None = None,
                 nofile: int | None = None) -> Server:
    """Start wsgate in ``workdir`` and wait until the health check answers.

    ``scripts`` are written to ``workdir/endpoints`` unless an existing
    ``endpoints`` folder is given. ``extra_args`` go on the command line after
    the usual flags. ``tls`` says the port speaks TLS, so the readiness probe
    uses https (without checking the certificate); by default it is guessed
    from ``--tls-cert`` in ``extra_args`` or a ``tls`` key in ``config``. ``env`` adds
    environment variables; ``nofile`` sets the process's open-files limit (soft and hard).
    """
    if tls is None:
        tls = _speaks_tls(config, extra_args)
    endpoints, config_path = _prepare(workdir, scripts, config, endpoints)
    log_path = workdir / "wsgate.log"
    port = free_port()
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            command(config_path, endpoints, port, workers, extra_args),
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
            cwd=workdir, env={**os.environ, **(env or {})},
            preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))) if nofile else None,
        )
    server = Server(proc, port, log_path, endpoints, config_path)
    server.tls = tls
    LIVE_SERVERS.append(server)

    get = https_get if tls else http_get
    deadline = time.monotonic() + READY_TIMEOUT
    last_error: object = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            server.stop()
            raise AssertionError(
                f"wsgate exited with code {proc.returncode} during start-up; log:\n{server.log()}"
            )
        try:
            status, _, body = get(port, "/api/v1/solution/health", timeout=1)
            if status == 200 and body.strip() == b"OK":
                return server
            last_error = (status, body)
        except OSError as exc:  # refused while the listener is not up yet
            last_error = exc
        time.sleep(0.05)
    server.stop()
    raise AssertionError(
        f"wsgate did not become healthy within {READY_TIMEOUT}s "
        f"(last: {last_error!r}); log:\n{server.log()}"
    )


def run_until_exit(workdir: Path, scripts: dict[str, str] | None = None,
                   config: dict | str | None = None, timeout: float = 10.0,
                   extra_args: list[str] | None = None):
    """Run wsgate expecting it to refuse to start.

    Returns ``(exit code, stderr text)``; a process still running after
    ``timeout`` seconds is killed and reported as exit code ``None``.
    """
    endpoints, config_path = _prepare(workdir, scripts, config)
    proc = subprocess.Popen(
        command(config_path, endpoints, free_port(), extra_args=extra_args),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=workdir,
    )
    try:
        _, err = proc.communicate(timeout=timeout)
        return proc.returncode, err.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=5)
        return None, err.decode("utf-8", "replace")


def wait_exit(proc: subprocess.Popen, timeout: float):
    """Wait for a process to exit; returns (exit code or None, seconds waited)."""
    started = time.monotonic()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - started
