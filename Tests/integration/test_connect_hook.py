"""_connect.lua, the gate before the upgrade: it may reject (any 4xx or 503, with a body), accept
with claims that stay with the socket, set an expiry (close 4001 "expired"), wait on an identity
service (Python's http.server) or check a JWT. A failing or slow hook fails closed (503)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from websockets.exceptions import InvalidStatus

from wsgate_support import HOST, close_code, connect, free_port, recv, recv_json, run

SECRET = "connect-hook-secret"

# ?mode= chooses what the hook does; ?token= is checked by the identity service or as a JWT.
HOOK = """
local w = websocketInfo
local mode = w.parameters.mode
if mode == "reject" then
  w.reject{status = tonumber(w.parameters.status) or 401, message = "no entry for " .. (w.parameters.who or "?")}
elseif mode == "claims" then
  w.accept{claims = {sub = w.parameters.who, roles = {"reader"}, seen = {type = w.type, route = w.route,
           uri = w.uri, subprotocol = w.subprotocol, remote_addr = w.remote_addr, agent = w.headers["user-agent"]}}}
elseif mode == "expire" then
  w.accept{claims = {sub = "brief"}, expires_at = os.time() + 1}
elseif mode == "error" then
  error("deliberate-hook-error")
elseif mode == "badstatus" then
  w.reject{status = 200}
elseif mode == "slow" then
  sleep(5000)
elseif mode == "identity" then
  local r = Http.request{url = w.parameters.idp .. "/check?token=" .. (w.parameters.token or ""), timeout_ms = 2000}
  if r.status ~= 200 then
    w.reject{status = 403, message = "identity service said " .. tostring(r.status)}
    return
  end
  w.accept{claims = from_json(r.body)}
elseif mode == "jwt" then
  local claims, reason = jwt.verify(w.parameters.token or "", {secret = "%s", algorithms = {"HS256"}})
  if not claims then
    w.reject{status = 401, message = reason}
    return
  end
  w.accept{claims = claims, expires_at = claims.exp}
end
-- anything else: ending without a decision upgrades
""" % SECRET

ROOM = """
local w = websocketInfo
if w.type == "open" then
  w.send(to_json{event = "open", claims = w.claims, info_claims = Websocket.info{socket_id = w.socket_id}.claims,
                 socket_id = w.socket_id})
elseif w.type == "data" then
  w.send(to_json{event = "data", sub = w.claims.sub, message = w.message})
end
"""


@pytest.fixture(scope="module")
def admin_port():
    return free_port()


@pytest.fixture(scope="module")
def server(wsgate_module, admin_port):
    return wsgate_module({"_connect.lua": HOOK, "room.lua": ROOM},
                         {"rateLimit": {"messagesPerSecond": 0}, "scripts": {"waitTimeoutMs": 1000},
                          "admin": {"port": admin_port, "token": "t"}}, workers=1)


def refused(server, path):
    async def main():
        try:
            ws = await connect(server.url(path))
        except InvalidStatus as error:
            return error.response.status_code, error.response.body
        await ws.close()
        return 101, b""
    return run(main())


def test_a_rejection_answers_its_status_and_message(server):
    assert refused(server, "/room?mode=reject&who=eve") == (401, b"no entry for eve")
    for status in (400, 403, 429, 499, 503):
        assert refused(server, f"/room?mode=reject&who=bob&status={status}") == (status, b"no entry for bob")


@pytest.mark.parametrize("status", [200, 399, 500, 502, 504])
def test_a_rejection_outside_4xx_and_503_fails_closed(server, status):
    assert refused(server, f"/room?mode=reject&status={status}")[0] == 503
    server.wait_for_log("reject's status must be")


def test_accepted_claims_stay_with_the_socket(server, admin_port):
    async def main():
        async with connect(server.url("/room?mode=claims&who=ann"), user_agent_header="hook-test") as ws:
            opened = await recv_json(ws)
            await ws.send("hello")
            data = await recv_json(ws)
            conn = http.client.HTTPConnection(HOST, admin_port, timeout=5)
            conn.request("GET", f"/@connections/{opened['socket_id']}", headers={"Authorization": "Bearer t"})
            admin = json.loads(conn.getresponse().read())
            conn.close()
            return opened, data, admin

    opened, data, admin = run(main())
    claims = opened["claims"]
    assert claims["sub"] == "ann" and claims["roles"] == ["reader"]
    assert claims["seen"] == {"type": "connect", "route": "/room", "uri": f"ws://{HOST}:{server.port}/room?mode=claims&who=ann",
                              "subprotocol": "", "remote_addr": "127.0.0.1", "agent": "hook-test"}
    assert opened["info_claims"] == claims
    assert data == {"event": "data", "sub": "ann", "message": "hello"}
    assert admin["claims"] == claims


def test_ending_without_a_decision_upgrades_with_no_claims(server):
    async def main():
        async with connect(server.url("/room")) as ws:
            return await recv_json(ws)

    assert run(main())["claims"] == {}


def test_an_expiry_closes_the_socket_with_4001(server):
    async def main():
        async with connect(server.url("/room?mode=expire")) as ws:
            await recv_json(ws)
            started = time.monotonic()
            code, _ = await close_code(ws, timeout=5)
            return code, ws.close_reason, time.monotonic() - started

    code, reason, waited = run(main())
    assert code == 4001 and reason == "expired" and waited < 2.5


@pytest.mark.parametrize("mode, logged", [
    ("error", "deliberate-hook-error"),
    ("badstatus", "reject's status must be"),
    ("slow", "script run abandoned"),
])
def test_a_failing_hook_fails_closed_with_503(server, mode, logged):
    assert refused(server, f"/room?mode={mode}")[0] == 503
    server.wait_for_log(logged)


class Identity(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        time.sleep(0.2)  # the gateway's loop must not wait for this
        token = self.path.split("token=", 1)[1] if "token=" in self.path else ""
        status, body = (200, json.dumps({"sub": "idp-user", "token": token})) if token == "good" else (403, "{}")
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_the_hook_waits_on_an_identity_service_without_holding_the_loop(server):
    idp = ThreadingHTTPServer((HOST, 0), Identity)
    threading.Thread(target=idp.serve_forever, daemon=True).start()
    base = f"http://{HOST}:{idp.server_address[1]}"
    try:
        async def main():
            async with connect(server.url("/room?mode=claims&who=bystander")) as bystander:
                await recv_json(bystander)
                pending = [connect(server.url(f"/room?mode=identity&token=good&idp={base}")) for _ in range(3)]
                import asyncio
                tasks = [asyncio.ensure_future(p) for p in pending]
                latencies = []
                while not all(t.done() for t in tasks):
                    t0 = time.monotonic()
                    await bystander.send("tick")
                    await recv_json(bystander)
                    latencies.append(time.monotonic() - t0)
                sockets = [await t for t in tasks]
                opened = [await recv_json(ws) for ws in sockets]
                for ws in sockets:
                    await ws.close()
                return opened, latencies

        opened, latencies = run(main())
        assert all(o["claims"] == {"sub": "idp-user", "token": "good"} for o in opened)
        assert latencies and max(latencies) < 0.15, latencies
        assert refused(server, f"/room?mode=identity&token=bad&idp={base}") == (403, b"identity service said 403")
    finally:
        idp.shutdown()
        idp.server_close()


def _jwt(claims, secret=SECRET, alg="HS256"):
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())
    if alg == "none":
        return f"{header}.{payload}."
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def test_a_jwt_gate(server):
    now = int(time.time())
    good = _jwt({"sub": "jwt-user", "exp": now + 60})

    async def main():
        async with connect(server.url(f"/room?mode=jwt&token={good}")) as ws:
            return await recv_json(ws)

    assert run(main())["claims"] == {"sub": "jwt-user", "exp": now + 60}
    assert refused(server, f"/room?mode=jwt&token={_jwt({'sub': 'x', 'exp': now - 60})}") == (401, b"expired")
    tampered = good[:-2] + ("A" if good[-2] != "A" else "B") + good[-1]
    assert refused(server, f"/room?mode=jwt&token={tampered}") == (401, b"bad signature")
    assert refused(server, f"/room?mode=jwt&token={_jwt({'sub': 'x'}, alg='none')}")[0] == 401
    assert refused(server, f"/room?mode=jwt&token={_jwt({'sub': 'x'}, secret='other')}") == (401, b"bad signature")
