"""Routing and the HTTP side of the gateway: health check, upgrade checks, status codes."""

from __future__ import annotations

import pytest
from websockets.exceptions import InvalidStatus

from wsgate_support import (
    HOST, accept_for, build_request, connect, http_get, new_key, raw_exchange, recv, run,
)

ROUTES = {
    "echo.lua": """
if websocketInfo.type == "data" then websocketInfo.send(websocketInfo.message) end
""",
    "chat/{room}.lua": """
if websocketInfo.type == "open" then websocketInfo.send("room:" .. websocketInfo.parameters.room) end
""",
    "_private.lua": """
if websocketInfo.type == "open" then websocketInfo.send("private") end
""",
}

# Folders holding a parameter script and a static script side by side. Several
# pairs with different names, so that precedence cannot come from the order in
# which a file system happens to list them or from sorting them ("~" sorts
# after "{", "0" before). Each parameter script answers "<param>:<value>".
STATIC_PAIRS = [
    ("a", "x", "b"), ("m", "id", "mid"), ("s", "name", "~static"),
    ("z", "k", "zeta"), ("n", "slot", "0"), ("q", "item", "alpha"),
]
for _folder, _param, _static in STATIC_PAIRS:
    ROUTES[f"{_folder}/{{{_param}}}.lua"] = f"""
if websocketInfo.type == "open" then websocketInfo.send("{_param}:" .. websocketInfo.parameters["{_param}"]) end
"""
    ROUTES[f"{_folder}/{_static}.lua"] = f"""
if websocketInfo.type == "open" then websocketInfo.send("{_static}") end
"""


@pytest.fixture(scope="module")
def server(wsgate_module):
    return wsgate_module(ROUTES, {"rateLimit": {"messagesPerSecond": 0}})


async def first_message(url):
    async with connect(url) as ws:
        return await recv(ws)


async def rejected_status(url):
    with pytest.raises(InvalidStatus) as info:
        ws = await connect(url)
        await ws.close()
    return info.value.response.status_code


# --- routing -----------------------------------------------------------------


def test_file_route_echo(server):
    async def main():
        async with connect(server.url("/echo")) as ws:
            await ws.send("ping-route")
            assert await recv(ws) == "ping-route"

    run(main())


def test_path_parameter_route(server):
    assert run(first_message(server.url("/chat/lobby"))) == "room:lobby"


@pytest.mark.parametrize("folder, param, static", STATIC_PAIRS)
def test_static_segment_beats_parameter(server, folder, param, static):
    assert run(first_message(server.url(f"/{folder}/{static}"))) == static
    assert run(first_message(server.url(f"/{folder}/other"))) == f"{param}:other"


def test_underscore_file_is_not_a_route(server):
    assert run(rejected_status(server.url("/_private"))) == 404


@pytest.mark.parametrize("path", ["/nope", "/chat", "/chat/r1/extra", "/a", "/echo/more"])
def test_unmatched_path_is_404_before_upgrade(server, path):
    assert run(rejected_status(server.url(path))) == 404


# --- plain HTTP --------------------------------------------------------------


def test_health_check(server):
    status, _, body = http_get(server.port, "/api/v1/solution/health")
    assert status == 200
    assert body.strip() == b"OK"


def test_plain_get_on_websocket_route_is_426(server):
    status, _, _ = http_get(server.port, "/echo")
    assert status == 426


def test_plain_get_on_unknown_path_is_404(server):
    status, _, _ = http_get(server.port, "/definitely/not/here")
    assert status == 404


# --- upgrade request checks (raw sockets) ------------------------------------


def test_valid_handshake_returns_101_with_accept(server):
    key = new_key()
    resp = raw_exchange(server.port, build_request(server.port, "/echo", key=key))
    assert resp.status == 101, resp
    assert resp.headers.get("sec-websocket-accept") == accept_for(key)
    assert resp.headers.get("upgrade", "").lower() == "websocket"
    assert "upgrade" in resp.headers.get("connection", "").lower()


def test_missing_key_is_400(server):
    resp = raw_exchange(server.port, build_request(server.port, headers={"Sec-WebSocket-Key": None}))
    assert resp.status == 400, resp


@pytest.mark.parametrize("bad_key", [
    "c2hvcnQga2V5",                  # valid base64 of 9 bytes
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAA",  # valid base64 of 21 bytes
    "!!!!not-base64-at-all!!!",      # 24 characters, not base64
])
def test_invalid_key_is_400(server, bad_key):
    resp = raw_exchange(server.port, build_request(server.port, headers={"Sec-WebSocket-Key": bad_key}))
    assert resp.status == 400, resp


@pytest.mark.parametrize("upgrade", [None, "h2c"])
def test_missing_upgrade_websocket_is_400(server, upgrade):
    resp = raw_exchange(server.port, build_request(server.port, headers={"Upgrade": upgrade}))
    assert resp.status == 400, resp


@pytest.mark.parametrize("connection", [None, "keep-alive"])
def test_missing_connection_upgrade_is_400(server, connection):
    resp = raw_exchange(server.port, build_request(server.port, headers={"Connection": connection}))
    assert resp.status == 400, resp


def test_unsupported_version_is_426_with_version_header(server):
    resp = raw_exchange(server.port, build_request(server.port, headers={"Sec-WebSocket-Version": "8"}))
    assert resp.status == 426, resp
    assert resp.headers.get("sec-websocket-version") == "13"


def test_post_is_400(server):
    request = build_request(server.port, method="POST", headers={"Content-Length": "0"})
    resp = raw_exchange(server.port, request)
    assert resp.status == 400, resp


def test_request_head_over_16k_is_431(server):
    request = build_request(server.port, headers={"X-Padding": "p" * (20 * 1024)})
    resp = raw_exchange(server.port, request)
    assert resp.status == 431, resp


def test_header_tokens_are_case_insensitive(server):
    key = new_key()
    request = (
        f"GET /echo HTTP/1.1\r\n"
        f"host: {HOST}:{server.port}\r\n"
        f"upgrade: WebSocket\r\n"
        f"connection: keep-alive, Upgrade\r\n"
        f"sec-websocket-key: {key}\r\n"
        f"SEC-WEBSOCKET-VERSION: 13\r\n"
        f"\r\n"
    ).encode("ascii")
    resp = raw_exchange(server.port, request)
    assert resp.status == 101, resp
    assert resp.headers.get("sec-websocket-accept") == accept_for(key)
