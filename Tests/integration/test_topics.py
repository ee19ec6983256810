"""Topics: subscribe, unsubscribe, publish (text and binary), subscriptions, subscribers; across
loops; a socket leaves its topics when it closes; a slow subscriber is skipped without slowing the
others; the management API's POST /@topics/{topic}."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json

import pytest
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from wsgate_support import (EVAL_SCRIPT, HOST, RawClient, connect, connect_on_every_loop, evaluate, free_port, recv, run,
                            socket_loop)

TOKEN = "topics-token"


@pytest.fixture(scope="module")
def admin_port():
    return free_port()


@pytest.fixture(scope="module")
def server(wsgate_module, admin_port):
    return wsgate_module({"eval.lua": EVAL_SCRIPT}, {"rateLimit": {"messagesPerSecond": 0},
                                              "admin": {"port": admin_port, "token": TOKEN}}, workers=2)



async def open_sockets(server, n):
    sockets = [await connect(server.url("/eval")) for _ in range(n)]
    ids = [await recv(ws) for ws in sockets]
    return sockets, ids


def test_publish_reaches_subscribers_on_every_loop(server):
    async def main():
        # Two subscribers on each loop and a publisher on each: loop-major order from the helper.
        spread, spread_ids = await connect_on_every_loop(server.url("/eval"), 3)
        order = [0, 1, 3, 4, 2, 5]
        sockets, ids = [spread[i] for i in order], [spread_ids[i] for i in order]
        try:
            for ws in sockets[:4]:
                assert await evaluate(ws, 'Websocket.subscribe{socket_id = me, topic = "news"}') == "<nil>"
            assert await evaluate(sockets[0], 'Websocket.subscribe{socket_id = me, topic = "news"}') == "<nil>"  # twice: harmless
            subscribers = await evaluate(sockets[5], 'Websocket.subscribers{topic = "news"}')
            count = await evaluate(sockets[5], 'Websocket.publish{topic = "news", message = "hello all"}')
            got = [await recv(ws) for ws in sockets[:4]]
            binary = await evaluate(sockets[5], 'Websocket.publish{topic = "news", type = "data-binary", message = "%s"}'
                               % base64.b64encode(b"\x00\x01bin").decode())
            got_binary = [await recv(ws) for ws in sockets[:4]]
            nobody = await evaluate(sockets[5], 'Websocket.publish{topic = "nobody-listens", message = "x"}')
            # Outside a cluster every subscriber is local: wait=false changes nothing.
            uncounted = await evaluate(sockets[5], 'Websocket.publish{topic = "news", message = "again", wait = false}')
            got_uncounted = [await recv(ws) for ws in sockets[:4]]
            return ids, subscribers, count, got, binary, got_binary, nobody, uncounted, got_uncounted
        finally:
            for ws in sockets:
                await ws.close()

    ids, subscribers, count, got, binary, got_binary, nobody, uncounted, got_uncounted = run(main())
    assert sorted(subscribers) == sorted(ids[:4])
    assert len({socket_loop(i) for i in ids[:4]}) == 2, "subscribers on both loops"
    assert count == 4 and got == ["hello all"] * 4
    assert binary == 4 and got_binary == [b"\x00\x01bin"] * 4
    assert nobody == 0
    assert uncounted == 4 and got_uncounted == ["again"] * 4


def test_compressed_and_plain_subscribers_on_both_loops_get_the_same_message(server):
    # Half the subscribers negotiate permessage-deflate (the gateway's default: no context takeover,
    # so one compressed frame serves them all), half do not; some ask for a smaller window.
    async def main():
        plain, plain_ids = await connect_on_every_loop(server.url("/eval"), 2, compression=None)
        deflate, deflate_ids = await connect_on_every_loop(server.url("/eval"), 2)
        small = await connect(server.url("/eval"), extensions=[ClientPerMessageDeflateFactory(client_max_window_bits=True,
                                                                                              server_max_window_bits=9)])
        publisher = await connect(server.url("/eval"))
        await recv(small), await recv(publisher)
        subscribers = plain + deflate + [small]
        try:
            for ws in subscribers:
                await evaluate(ws, 'Websocket.subscribe{socket_id = me, topic = "big"}')
            extensions = [ws.protocol.extensions for ws in subscribers]
            texts = ["%d %s" % (n, "a compressible line of text. " * 40) for n in range(3)]
            counts = [await evaluate(publisher, 'Websocket.publish{topic = "big", message = "%s"}' % t) for t in texts]
            got = [[await recv(ws) for _ in texts] for ws in subscribers]
            return extensions, texts, counts, got, plain_ids + deflate_ids
        finally:
            for ws in subscribers + [publisher]:
                await ws.close()

    extensions, texts, counts, got, ids = run(main())
    assert [len(e) for e in extensions] == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    assert len({socket_loop(i) for i in ids}) == 2
    assert counts == [9, 9, 9]
    assert got == [texts] * 9


def test_subscriptions_unsubscribe_and_leaving_on_close(server):
    async def main():
        sockets, ids = await open_sockets(server, 2)
        a, b = sockets
        await evaluate(a, 'Websocket.subscribe{socket_id = me, topic = "t2"}')
        await evaluate(a, 'Websocket.subscribe{socket_id = me, topic = "t1"}')
        mine = await evaluate(a, 'Websocket.subscriptions{socket_id = me}')
        await evaluate(a, 'Websocket.unsubscribe{socket_id = me, topic = "t2"}')
        after = await evaluate(a, 'Websocket.subscriptions{socket_id = me}')
        # b subscribes a (any script may subscribe any socket), then a closes.
        await evaluate(b, f'Websocket.subscribe{{socket_id = "{ids[0]}", topic = "t3"}}')
        await a.close()
        await asyncio.sleep(0.2)
        left = [await evaluate(b, f'Websocket.subscribers{{topic = "{t}"}}') for t in ("t1", "t3")]
        gone = await evaluate(b, f'Websocket.subscriptions{{socket_id = "{ids[0]}"}}.status')
        await b.close()
        return mine, after, left, gone

    mine, after, left, gone = run(main())
    assert mine == ["t1", "t2"] and after == ["t1"]
    assert left == [{}, {}]  # empty lists: to_json writes {} for an empty table
    assert gone == 404


@pytest.mark.parametrize("call, status, fragment", [
    ('Websocket.subscribe{socket_id = "no-such", topic = "t"}', 404, "not open"),
    ('Websocket.subscribe{socket_id = me, topic = ""}', 400, "topic must be"),
    ('Websocket.subscribe{socket_id = me, topic = string.rep("x", 257)}', 400, "topic must be"),
    ('Websocket.subscribe{topic = "t"}', 400, "socket_id is required"),
    ('Websocket.unsubscribe{socket_id = me}', 400, "topic is required"),
    ('Websocket.publish{topic = "t", message = "\\xff"}', 400, "UTF-8"),
    ('Websocket.publish{topic = "t", message = {}}', 400, "message must be a string"),
    ('Websocket.publish{topic = "t", message = "x", type = "data-binary"}', 400, "base64"),
    ('Websocket.publish{topic = "t", message = "x", wait = 0}', 400, "wait must be a boolean"),
    ('Websocket.subscribers{}', 400, "topic is required"),
    ('Websocket.subscribe(5)', 400, "argument must be a table"),
    ('Websocket.subscriptions(5)', 400, "argument must be a table"),
    ('Websocket.unsubscribe(true)', 400, "argument must be a table"),
])
def test_errors(server, call, status, fragment):
    async def main():
        sockets, _ = await open_sockets(server, 1)
        try:
            return await evaluate(sockets[0], f'(function() local e = {call} return e.status .. "|" .. e.error end)()')
        finally:
            await sockets[0].close()

    got_status, message = run(main()).split("|", 1)
    assert int(got_status) == status and fragment in message


def test_a_slow_subscriber_is_skipped_and_does_not_slow_the_others(wsgate):
    server = wsgate({"eval.lua": EVAL_SCRIPT}, {"rateLimit": {"messagesPerSecond": 0},
                                         "limits": {"maxMessageBytes": 65536, "sendQueueBytes": 262144}}, workers=2)
    slow = RawClient(server.port, "/eval", rcvbuf=4096)
    slow_id = slow.recv_text()

    async def main():
        sockets, ids = await open_sockets(server, 3)
        publisher = sockets[0]
        for ws in sockets[1:]:
            await evaluate(ws, 'Websocket.subscribe{socket_id = me, topic = "firehose"}')
        await evaluate(publisher, f'Websocket.subscribe{{socket_id = "{slow_id}", topic = "firehose"}}')
        counts = []
        fast_received = 0
        for _ in range(60):
            counts.append(await evaluate(publisher, 'Websocket.publish{topic = "firehose", message = string.rep("m", 60000)}'))
            for ws in sockets[1:]:
                assert len(await recv(ws)) == 60000
                fast_received += 1
        for ws in sockets:
            await ws.close()
        return counts, fast_received

    try:
        counts, fast_received = run(main())
    finally:
        slow.sock.close()
    assert fast_received == 120
    assert counts[0] == 3 and counts[-1] == 2, counts  # the slow one is skipped once its queue is past half
    assert all(c in (2, 3) for c in counts)


def test_the_management_api_publishes(server, admin_port):
    async def main():
        sockets, ids = await open_sockets(server, 3)
        try:
            for ws in sockets:
                await evaluate(ws, 'Websocket.subscribe{socket_id = me, topic = "ops/alerts"}')
            conn = http.client.HTTPConnection(HOST, admin_port, timeout=5)
            conn.request("POST", "/@topics/ops%2Falerts", body=b"disk full", headers={"Authorization": f"Bearer {TOKEN}"})
            response = conn.getresponse()
            answer = (response.status, json.loads(response.read()))
            conn.request("POST", "/@topics/empty-topic", body=b"x", headers={"Authorization": f"Bearer {TOKEN}"})
            response = conn.getresponse()
            empty = (response.status, json.loads(response.read()))
            conn.close()
            return answer, empty, [await recv(ws) for ws in sockets]
        finally:
            for ws in sockets:
                await ws.close()

    answer, empty, got = run(main())
    assert answer == (200, {"delivered": 3}) and empty == (200, {"delivered": 0})
    assert got == ["disk full"] * 3
