"""GET /metrics: the Prometheus text exposition on the management listener (and on the main one
with metrics.public), parsed by prometheus_client's parser; the values move as traffic flows."""

from __future__ import annotations

import http.client
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus

from wsgate_support import HOST, close_code, connect, free_port, recv, run

TOKEN = "metrics-token"

ECHO = """
if websocketInfo.type == "data" then
  if websocketInfo.message == "boom" then error("deliberate") end
  websocketInfo.send(websocketInfo.message)
end
"""


@pytest.fixture(scope="module")
def admin_port():
    return free_port()


@pytest.fixture(scope="module")
def server(wsgate_module, admin_port):
    return wsgate_module({"echo.lua": ECHO, "rooms/{room}.lua": ECHO},
                         {"rateLimit": {"messagesPerSecond": 0}, "admin": {"port": admin_port, "token": TOKEN},
                          "websocket": {"approvedSocketDomains": [r"^https://ok\.example$"]},
                          "metrics": {"public": True}}, workers=2)


def scrape(port, token=TOKEN):
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {token}"} if token else {})
        response = conn.getresponse()
        body = response.read().decode()
        assert response.status == 200, body
        assert response.getheader("Content-Type").startswith("text/plain; version=0.0.4")
        samples = {}
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples
    finally:
        conn.close()


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def test_values_move_with_traffic(server, admin_port):
    before = scrape(admin_port)

    async def main():
        async with connect(server.url("/rooms/a"), origin="https://ok.example") as ws:
            for i in range(10):
                await ws.send(f"m{i}")
                assert await recv(ws) == f"m{i}"
            during = scrape(admin_port)
            await ws.send("boom")
            await ws.close()
        try:
            await connect(server.url("/echo"), origin="https://evil.example")
        except InvalidStatus:
            pass
        return during

    during = run(main())
    # While open, the socket counted under its route pattern, not its path.
    assert value(during, "wsgate_connections", route="/rooms/{room}") == 1
    time.sleep(0.2)
    after = scrape(admin_port)
    assert value(after, "wsgate_connections_accepted_total") - value(before, "wsgate_connections_accepted_total") == 1
    assert value(after, "wsgate_messages_received_total") - value(before, "wsgate_messages_received_total") == 11
    assert value(after, "wsgate_messages_sent_total") - value(before, "wsgate_messages_sent_total") == 10
    assert value(after, "wsgate_received_bytes_total") - value(before, "wsgate_received_bytes_total") == 10 * 2 + 4
    assert value(after, "wsgate_disconnections_total", code="1000") - value(before, "wsgate_disconnections_total", code="1000") == 1
    assert value(after, "wsgate_connections_rejected_total", reason="origin") - value(before, "wsgate_connections_rejected_total", reason="origin") == 1
    assert value(after, "wsgate_script_errors_total", route="/rooms/{room}") - value(before, "wsgate_script_errors_total", route="/rooms/{room}") == 1
    runs = value(after, "wsgate_script_runs_total", route="/rooms/{room}") - value(before, "wsgate_script_runs_total", route="/rooms/{room}")
    assert runs == 13  # open, 11 data, close
    assert value(after, "wsgate_script_duration_seconds_count") - value(before, "wsgate_script_duration_seconds_count") >= 13
    assert value(after, "wsgate_script_duration_seconds_bucket", le="+Inf") == value(after, "wsgate_script_duration_seconds_count")
    assert value(after, "wsgate_build_info", version="0.11.0") == 1


def test_gauges(server, admin_port):
    async def main():
        async with connect(server.url("/rooms/b"), origin="https://ok.example") as a, \
                connect(server.url("/rooms/c"), origin="https://ok.example") as b:
            return scrape(admin_port)

    samples = run(main())
    assert value(samples, "wsgate_connections", route="/rooms/{room}") == 2
    for name in ("wsgate_topics", "wsgate_keystore_keys", "wsgate_keystore_bytes"):
        assert (name, ()) in samples
    assert value(samples, "wsgate_outbound_connections", state="open") == 0


def test_metrics_need_the_token_on_the_admin_listener_and_none_when_public(server, admin_port):
    conn = http.client.HTTPConnection(HOST, admin_port, timeout=5)
    conn.request("GET", "/metrics")
    assert conn.getresponse().status == 401
    conn.close()
    assert value(scrape(server.port, token=None), "wsgate_build_info", version="0.11.0") == 1


def test_metrics_are_not_public_by_default(wsgate):
    server = wsgate({"echo.lua": ECHO}, {}, workers=1)
    conn = http.client.HTTPConnection(HOST, server.port, timeout=5)
    conn.request("GET", "/metrics")
    assert conn.getresponse().status == 404
    conn.close()
