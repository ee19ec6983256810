"""Fixtures that start real wsgate processes for the integration tests.

* ``wsgate``: function-scoped factory ``wsgate(scripts=None, config=None)``;
  ``scripts`` maps paths relative to a fresh endpoints folder to Lua source.
  ``extra_args=[...]`` adds command-line flags (e.g. ``--tls-cert``); a server
  whose config has ``tls`` or whose flags have ``--tls-cert`` is probed over
  https (force with ``tls=True/False``), and ``server.wss_url(path)`` gives
  its wss:// URLs.
* ``wsgate_module``: the same factory, but its servers live for the module,
  so one process can serve every test of a file.
* ``shipped_server``: module-scoped server on the repository's ``Endpoints/``
  with ``{"rateLimit": {"messagesPerSecond": 0}}``.
* ``upstream``: function-scoped factory of Python ``websockets`` servers on a
  background thread (``Upstream``: what wsgate's outbound connections and
  ``wsgate probe`` talk to); all are stopped after the test.
* ``redis``: function-scoped factory ``redis(password=None)`` of throw-away
  ``redis-server`` processes (``RedisServer``), stopped after the test.
* ``throwaway_ca``: session-scoped ``TestPKI`` with a ``good`` leaf (localhost,
  127.0.0.1) and an ``other`` leaf (other.example only), for wss:// upstreams.

The binary is ``.build/release/wsgate`` (override with ``WSGATE_BIN``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wsgate_support import LIVE_SERVERS, REPO_ROOT, RedisServer, TestPKI, Upstream, start_server  # noqa: E402


class _Factory:
    def __init__(self, base: Path):
        self.base = base
        self.servers = []

    def __call__(self, scripts=None, config=None, *, endpoints=None, workers=2,
                 extra_args=None, tls=None, env=None, nofile=None):
        workdir = self.base / f"server{len(self.servers)}"
        server = start_server(workdir, scripts=scripts, config=config,
                              endpoints=endpoints, workers=workers,
                              extra_args=extra_args, tls=tls, env=env, nofile=nofile)
        self.servers.append(server)
        return server

    def stop_all(self):
        for server in self.servers:
            server.stop()


@pytest.fixture
def wsgate(tmp_path):
    factory = _Factory(tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def wsgate_module(tmp_path_factory):
    factory = _Factory(tmp_path_factory.mktemp("wsgate"))
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def shipped_server(wsgate_module):
    return wsgate_module(endpoints=REPO_ROOT / "Endpoints",
                         config={"rateLimit": {"messagesPerSecond": 0}})


@pytest.fixture
def upstream():
    started = []

    def factory(**kwargs) -> Upstream:
        server = Upstream(**kwargs).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def throwaway_ca(tmp_path_factory):
    pki = TestPKI(tmp_path_factory.mktemp("throwaway-ca"))
    pki.good = pki.leaf("good")
    pki.other = pki.leaf("other", cn="other.example", sans=("DNS:other.example",))
    return pki


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and report.when in ("setup", "call"):
        for server in list(LIVE_SERVERS):
            exit_note = "" if server.proc.poll() is None else f" (exited {server.proc.returncode})"
            report.sections.append(
                (f"wsgate log, port {server.port}{exit_note}", server.log_tail(80))
            )
    return report


@pytest.fixture
def redis(tmp_path):
    started = []

    def factory(password: str | None = None) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(started)}", password=password).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
