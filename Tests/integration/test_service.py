"""The Websocket service table: list, info, send, close, closeAll."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid

import pytest

from wsgate_support import close_code, connect, recv, recv_json, run

# On open: reports its socket id. On data: runs the JSON command
# {"op": NAME, "args": {...}} through pcall and reports what came back.
SVC = """
local w = websocketInfo
if w.type == "open" then
  w.send(to_json{id = w.socket_id})
  return
end
if w.type ~= "data" then return end
local cmd = from_json(w.message)
local ok, result
if cmd.op == "closeAll" then
  ok, result = pcall(Websocket.closeAll)
  print("closeAll-result=" .. tostring(result) .. " ok=" .. tostring(ok) .. " tag=" .. tostring(cmd.tag))
  return
elseif cmd.op == "list" then
  ok, result = pcall(Websocket.list)
else
  ok, result = pcall(Websocket[cmd.op], cmd.args)
end
w.send(to_json{op = cmd.op, ok = ok, isnil = (result == nil), result = result})
"""


@pytest.fixture(scope="module")
def server(wsgate_module):
    return wsgate_module({"svc.lua": SVC}, {"rateLimit": {"messagesPerSecond": 0}})


@contextlib.asynccontextmanager
async def clients(server, count):
    """Open ``count`` connections to /svc?name=cN; yield [(ws, socket_id), ...]."""
    async with contextlib.AsyncExitStack() as stack:
        opened = []
        for i in range(count):
            ws = await stack.enter_async_context(connect(server.url(f"/svc?name=c{i}")))
            opened.append((ws, (await recv_json(ws))["id"]))
        yield opened


async def call(ws, op, args=None):
    await ws.send(json.dumps({"op": op, "args": args if args is not None else {}}))
    reply = await recv_json(ws)
    assert reply["op"] == op
    assert reply["ok"] is True, f"Websocket.{op} raised a Lua error: {reply.get('result')!r}"
    return reply


def assert_error(reply, status):
    result = reply["result"]
    assert isinstance(result, dict), f"expected an error object, got {reply!r}"
    assert result.get("status") == status, result
    assert "error" in result and "type" in result, result


def test_list_includes_every_open_socket(server):
    async def main():
        async with clients(server, 2) as [(a, a_id), (_, b_id)]:
            reply = await call(a, "list")
            return reply["result"], a_id, b_id

    ids, a_id, b_id = run(main())
    assert isinstance(ids, list)
    assert a_id in ids and b_id in ids


def test_info_returns_the_connection_fields(server):
    async def main():
        async with clients(server, 2) as [(a, _), (_, b_id)]:
            return (await call(a, "info", {"socket_id": b_id}))["result"], b_id

    info, b_id = run(main())
    assert info["socket_id"] == b_id
    assert info["type"] == "open"
    assert info["route"] == "/svc"
    assert info["uri"] == f"ws://127.0.0.1:{server.port}/svc?name=c1"
    assert info["parameters"] == {"name": "c1"}
    assert isinstance(info["headers"], dict) and "host" in info["headers"]
    assert isinstance(info["timestamp"], int)
    assert "message" not in info


def test_send_text_defaults_to_text(server):
    async def main():
        async with clients(server, 2) as [(a, _), (b, b_id)]:
            reply = await call(a, "send", {"socket_id": b_id, "message": "hi b"})
            return reply, await recv(b)

    reply, received = run(main())
    assert reply["isnil"] is True, reply
    assert received == "hi b"


def test_send_explicit_data_text(server):
    async def main():
        async with clients(server, 2) as [(a, _), (b, b_id)]:
            reply = await call(a, "send", {"socket_id": b_id, "message": "typed", "type": "data-text"})
            return reply, await recv(b)

    reply, received = run(main())
    assert reply["isnil"] is True, reply
    assert received == "typed"


def test_send_data_binary_is_delivered_decoded(server):
    payload = bytes(range(256))

    async def main():
        async with clients(server, 2) as [(a, _), (b, b_id)]:
            reply = await call(a, "send", {
                "socket_id": b_id,
                "message": base64.b64encode(payload).decode(),
                "type": "data-binary",
            })
            return reply, await recv(b)

    reply, received = run(main())
    assert reply["isnil"] is True, reply
    assert received == payload


@pytest.mark.parametrize("args, status", [
    pytest.param({"message": 42}, 400, id="message-not-a-string"),
    pytest.param({"message": {"nested": True}}, 400, id="message-is-a-table"),
    pytest.param({"message": "no target", "socket_id": None}, 400, id="missing-socket_id"),
    pytest.param({"message": "x", "type": "data-video"}, 400, id="bad-type"),
    pytest.param({"message": "@@@ not base64 @@@", "type": "data-binary"}, 400, id="bad-base64"),
    pytest.param({"message": "x", "socket_id": "no-such-socket"}, 404, id="unknown-socket"),
])
def test_send_errors_are_returned_not_raised(server, args, status):
    async def main():
        async with clients(server, 2) as [(a, _), (_, b_id)]:
            full = {"socket_id": b_id, **args}
            full = {k: v for k, v in full.items() if v is not None}
            return await call(a, "send", full)

    assert_error(run(main()), status)


def test_send_to_closed_socket_is_404(server):
    async def main():
        async with connect(server.url("/svc?name=gone")) as gone:
            gone_id = (await recv_json(gone))["id"]
        async with connect(server.url("/svc?name=b")) as b:
            await recv_json(b)
            # The server may take a moment to forget the closed socket.
            for _ in range(30):
                reply = await call(b, "send", {"socket_id": gone_id, "message": "anyone?"})
                if not reply["isnil"]:
                    return reply
                await asyncio.sleep(0.1)
            return reply

    assert_error(run(main()), 404)


def test_close_socket_returns_nil_and_client_sees_1000(server):
    async def main():
        async with clients(server, 2) as [(a, _), (b, b_id)]:
            reply = await call(a, "close", {"socket_id": b_id})
            code, _ = await close_code(b)
            return reply, code

    reply, code = run(main())
    assert reply["isnil"] is True, reply
    assert code == 1000


def test_close_all_closes_everything_and_returns_count(wsgate):
    server = wsgate({"svc.lua": SVC}, {"rateLimit": {"messagesPerSecond": 0}})
    tag = uuid.uuid4().hex

    async def main():
        async with clients(server, 3) as opened:
            a = opened[0][0]
            await a.send(json.dumps({"op": "closeAll", "tag": tag}))
            return [(await close_code(ws))[0] for ws, _ in opened]

    codes = run(main())
    assert all(code is not None for code in codes), codes
    server.wait_for_log(f"tag={tag}")
    lines = server.log_lines_with(f"tag={tag}")
    assert any("closeAll-result=3 ok=true" in line for line in lines), lines
