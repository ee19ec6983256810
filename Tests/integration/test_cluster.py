"""Several gateways on one Redis (the `cluster` section): the Keystore lives in Redis, shared by
every loop of every node; nodes heartbeat and forget a node killed with -9; Redis stopped,
killed or restarted empty degrades to local service and comes back; passwords from a file,
never logged; start-up refusals naming the key. Real redis-server processes on free ports."""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from wsgate_support import (COUNTER_SCRIPT, ECHO_SCRIPT, EVAL_SCRIPT, HOST, FreezingProxy, close_code, connect, evaluate,
                            evaluate_each, free_port, http_get, recv, recv_json, recv_until, run, run_until_exit, wait_until)

SCRIPTS = {"eval.lua": EVAL_SCRIPT, "counter.lua": COUNTER_SCRIPT, "echo.lua": ECHO_SCRIPT}


def cluster_config(store, **overrides):
    cluster = {"redis": store.url, "heartbeatMs": 200, "nodeTimeoutMs": 1000, "requestTimeoutMs": 300, **overrides}
    return {"rateLimit": {"messagesPerSecond": 0}, "metrics": {"public": True}, "cluster": cluster}


def metric(server, name, **labels):
    _, _, body = http_get(server.port, "/metrics")
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def two_nodes(wsgate, store):
    """Nodes "nodea" and "nodeb" on `store`, once each sees the other."""
    nodes = [wsgate(SCRIPTS, cluster_config(store, nodeId=name)) for name in ("nodea", "nodeb")]
    wait_until(lambda: all(metric(n, "wsgate_cluster_nodes") == 2 for n in nodes), what="two live nodes")
    return nodes


def echo_works(server):
    async def main():
        async with connect(server.url("/echo")) as ws:
            await ws.send("still here")
            return await recv(ws)
    return run(main()) == "still here"


def test_the_keystore_is_shared_by_every_node_and_loop(wsgate, redis):
    store = redis()
    a = wsgate(SCRIPTS, cluster_config(store))
    b = wsgate(SCRIPTS, cluster_config(store))
    assert evaluate_each(a.url("/eval"),
              'Keystore.set{key = "a", value = "text"}',
              'Keystore.set{key = "n", value = 42}',
              'Keystore.set{key = "f", value = 1.5}',
              'Keystore.set{key = "digits", value = "41"}') == [True] * 4
    assert evaluate_each(b.url("/eval"),
              'Keystore.get{key = "a"}',
              'math.type(Keystore.get{key = "n"})',
              'Keystore.get{key = "f"}',
              'Keystore.set{key = "a", value = "other", only_if_absent = true}',
              'Keystore.get{key = "a"}',
              'Keystore.incr{key = "digits"}',
              'Keystore.incr{key = "n", by = -2}',
              'Keystore.incr{key = "fresh"}',
              'Keystore.mget{keys = {"a", "missing", "n"}}',
              'Keystore.incr{key = "a"}.status',
              'Keystore.incr{key = "n", by = math.maxinteger}.status',
              'Keystore.delete{key = "a"}',
              'Keystore.delete{key = "a"}',
              'Keystore.get{key = "a"}') == ["text", "integer", 1.5, False, "text", 42, 40, 1, {"1": "text", "3": 40},
                                             400, 400, 1, 0, "<nil>"]
    # Values are stored so that redis-cli shows them: integers as digits, strings tagged.
    assert store.command("GET", "wsgate:ks:n") == b"40"
    assert evaluate_each(a.url("/eval"), 'Keystore.get{key = "digits"}') == [42]


def test_incr_is_atomic_across_nodes_and_loops(wsgate, redis):
    store = redis()
    nodes = [wsgate(SCRIPTS, cluster_config(store)) for _ in range(2)]

    async def main():
        sockets = [await connect(node.url("/counter")) for node in nodes for _ in range(4)]
        try:
            for ws in sockets:
                await ws.send("250")
            for ws in sockets:
                assert await recv(ws, timeout=30) == "done"
        finally:
            for ws in sockets:
                await ws.close()

    run(main())
    assert evaluate_each(nodes[1].url("/eval"), 'Keystore.get{key = "hits"}') == [2000]


def test_ttl_list_and_prefixes(wsgate, redis):
    store = redis()
    a = wsgate(SCRIPTS, cluster_config(store))
    other = wsgate(SCRIPTS, cluster_config(store, prefix="other"))
    assert evaluate_each(a.url("/eval"), 'Keystore.set{key = "brief", value = "x", ttl_ms = 150}', 'Keystore.get{key = "brief"}') == [True, "x"]
    evaluate_each(a.url("/eval"), 'Keystore.set{key = "user:b", value = 1}', 'Keystore.set{key = "user:a", value = 1}', 'Keystore.set{key = "u*er", value = 1}')
    assert sorted(evaluate_each(a.url("/eval"), 'Keystore.list{prefix = "user:"}')[0]) == ["user:a", "user:b"]
    assert evaluate_each(a.url("/eval"), 'Keystore.list{prefix = "u*"}') == [["u*er"]]
    time.sleep(0.3)
    assert evaluate_each(a.url("/eval"), 'Keystore.get{key = "brief"}') == ["<nil>"]
    # Another prefix is another cluster: it sees none of these keys.
    assert evaluate_each(other.url("/eval"), 'Keystore.get{key = "user:a"}', '#Keystore.list()') == ["<nil>", 0]
    # Over one page: cursors until the last page has none; every key once.
    evaluate_each(a.url("/eval"), 'select("#", (function() for i = 1, 12000 do Keystore.set{key = string.format("p:%05d", i), value = i} end end)())')
    keys, cursor, pages = [], None, 0
    while True:
        call = 'Keystore.list{prefix = "p:"%s}' % (f', cursor = "{cursor}"' if cursor else "")
        page = evaluate_each(a.url("/eval"), f'(function() local k, c = {call} return #k, c or "", table.concat(k, ",") end)()')[0]
        count, cursor, joined = page
        pages += 1
        assert count <= 10000
        keys += joined.split(",") if joined else []
        if not cursor:
            break
    assert pages >= 2 and sorted(keys) == [f"p:{i:05d}" for i in range(1, 12001)]


def test_nodes_heartbeat_and_a_killed_node_is_forgotten(wsgate, redis):
    store = redis()
    a = wsgate(SCRIPTS, cluster_config(store, nodeId="nodea"))
    b = wsgate(SCRIPTS, cluster_config(store, nodeId="nodeb"))
    wait_until(lambda: metric(a, "wsgate_cluster_nodes") == 2, what="two live nodes")
    assert metric(a, "wsgate_cluster_up") == 1
    assert evaluate_each(a.url("/eval"), '"x"') == ["x"]
    assert run(_socket_id(a)).startswith("nodea-")
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait(timeout=5)
    started = time.monotonic()
    wait_until(lambda: metric(a, "wsgate_cluster_nodes") == 1, timeout=5, what="the killed node forgotten")
    assert time.monotonic() - started < 1.0 + 0.5, "forgotten within cluster.nodeTimeoutMs (and a heartbeat)"
    ops = {s.labels["op"] for f in text_string_to_metric_families(http_get(a.port, "/metrics")[2].decode())
           for s in f.samples if s.name == "wsgate_cluster_requests_total"}
    assert "heartbeat" in ops


async def _socket_id(server):
    async with connect(server.url("/eval")) as ws:
        return await recv(ws)


def test_a_stopped_redis_times_out_a_killed_one_is_unavailable_and_both_come_back(wsgate, redis):
    store = redis()
    node = wsgate(SCRIPTS, cluster_config(store))
    assert evaluate_each(node.url("/eval"), 'Keystore.set{key = "k", value = 1}') == [True]

    store.pause()
    started = time.monotonic()
    error = evaluate_each(node.url("/eval"), '(function() local e = Keystore.get{key = "k"} return e.type .. "|" .. e.status end)()')[0]
    took = time.monotonic() - started
    assert error == "GatewayTimeout|504" and took < 0.3 + 0.5, (error, took)
    assert echo_works(node)
    assert http_get(node.port, "/api/v1/solution/health")[0] == 200
    store.resume()
    wait_until(lambda: evaluate_each(node.url("/eval"), 'Keystore.get{key = "k"}') == [1], what="answers again after SIGCONT")

    # Stopped for longer than two heartbeats: the link is taken for wedged and replaced, and the
    # new one comes up once Redis answers again.
    store.pause()
    time.sleep(1.2)
    assert echo_works(node)
    store.resume()
    wait_until(lambda: evaluate_each(node.url("/eval"), 'Keystore.get{key = "k"}') == [1], timeout=10, what="answers again after a long stop")
    assert "no reply for" in node.log()

    store.kill()
    error = evaluate_each(node.url("/eval"), '(function() local e = Keystore.get{key = "k"} return e.type .. "|" .. e.status end)()')[0]
    assert error == "ServiceUnavailable|503"
    assert echo_works(node)
    wait_until(lambda: metric(node, "wsgate_cluster_up") == 0, what="cluster down in metrics")

    store.start()  # empty, same port
    wait_until(lambda: metric(node, "wsgate_cluster_up") == 1, timeout=10, what="reconnected")
    wait_until(lambda: store.command("ZCARD", "wsgate:nodes") == 1, what="the node re-registered")
    assert evaluate_each(node.url("/eval"), 'Keystore.get{key = "k"}', 'Keystore.set{key = "k", value = 2}', 'Keystore.get{key = "k"}') == ["<nil>", True, 2]
    assert "unreachable" in node.log() and "retrying" in node.log()


def test_requests_waiting_on_a_stopped_redis_each_time_out_after_their_own_wait(wsgate, redis):
    store = redis()
    # Heartbeats far apart: the link is not taken for wedged while the requests wait.
    node = wsgate(SCRIPTS, cluster_config(store, heartbeatMs=1000, nodeTimeoutMs=5000), workers=1)
    call = '(function() local e = Keystore.get{key = "k"} return e.status end)()'

    async def scenario():
        first, second = await connect(node.url("/eval")), await connect(node.url("/eval"))
        await recv(first), await recv(second)
        try:
            store.pause()
            loop = asyncio.get_running_loop()
            sent_first = loop.time()
            await first.send(call)
            await asyncio.sleep(0.15)
            sent_second = loop.time()
            await second.send(call)
            answer_first = await recv_json(first)
            took_first = loop.time() - sent_first
            answer_second = await recv_json(second)
            took_second = loop.time() - sent_second
            return answer_first["r"][0], took_first, answer_second["r"][0], took_second
        finally:
            store.resume()
            await first.close()
            await second.close()

    status_first, took_first, status_second, took_second = run(scenario())
    assert (status_first, status_second) == (504, 504)
    # requestTimeoutMs is 300: neither answers before its own 300 ms, nor long after.
    assert 0.29 <= took_first < 0.3 + 0.5, took_first
    assert 0.29 <= took_second < 0.3 + 0.5, took_second


def test_cluster_required_makes_health_follow_redis(wsgate, redis):
    store = redis()
    node = wsgate(SCRIPTS, cluster_config(store, required=True))
    assert http_get(node.port, "/api/v1/solution/health")[0] == 200
    store.kill()
    wait_until(lambda: http_get(node.port, "/api/v1/solution/health")[0] == 503, what="health 503 without Redis")
    assert echo_works(node)
    store.start()
    wait_until(lambda: http_get(node.port, "/api/v1/solution/health")[0] == 200, timeout=10, what="health 200 again")


def test_the_password_comes_from_a_file_and_is_never_logged(wsgate, redis, tmp_path):
    secret = "s3cret-redis-pass-7731"
    store = redis(password=secret)
    good = tmp_path / "redis.pass"
    good.write_text(secret + "\n")
    node = wsgate(SCRIPTS, {**cluster_config(store, passwordFile=str(good)), "logLevel": "debug"})
    assert evaluate_each(node.url("/eval"), 'Keystore.set{key = "k", value = "v"}', 'Keystore.get{key = "k"}') == [True, "v"]

    bad = tmp_path / "wrong.pass"
    bad.write_text("not-the-password\n")
    refused = wsgate(SCRIPTS, {**cluster_config(store, passwordFile=str(bad)), "logLevel": "debug"})
    refused.wait_for_log("AUTH refused")
    error = evaluate_each(refused.url("/eval"), '(function() local e = Keystore.get{key = "k"} return e.status end)()')[0]
    assert error == 503
    by_env = wsgate(SCRIPTS, cluster_config(store), env={"REDIS_PASSWORD": secret})
    assert evaluate_each(by_env.url("/eval"), 'Keystore.get{key = "k"}') == ["v"]
    for server in (node, refused, by_env):
        assert secret not in server.log() and "not-the-password" not in server.log()


@pytest.mark.parametrize("cluster, fragment", [
    ({"prefix": "x"}, '"cluster.redis" is required'),
    ({"redis": "redis://:pw@127.0.0.1:6379"}, "cluster.redis"),
    ({"redis": "http://127.0.0.1"}, "redis:// URL"),
    ({"redis": "redis://127.0.0.1:6379", "nodeId": "Node-1"}, "cluster.nodeId"),
    ({"redis": "redis://127.0.0.1:6379", "heartbeatMs": 1000, "nodeTimeoutMs": 1500}, "cluster.nodeTimeoutMs"),
    ({"redis": "redis://127.0.0.1:6379", "bogus": 1}, "cluster.bogus"),
    ({"redis": "redis://127.0.0.1:6379", "passwordFile": "/nonexistent/pass"}, "cluster.passwordFile"),
])
def test_bad_cluster_config_stops_start_up(tmp_path, cluster, fragment):
    code, stderr = run_until_exit(tmp_path, SCRIPTS, {"cluster": cluster})
    assert code == 2, stderr
    assert fragment in stderr, stderr



def test_sockets_of_every_node_are_reached_from_any_node(wsgate, redis):
    store = redis()
    a, b = two_nodes(wsgate, store)

    async def main():
        sa, sb = await connect(a.url("/eval?from=a")), await connect(b.url("/eval?from=b"))
        ida, idb = await recv(sa), await recv(sb)
        try:
            sent = await evaluate(sa, f'Websocket.send{{socket_id = "{idb}", message = "hi from a"}}')
            got = await recv(sb)
            await evaluate(sa, f'Websocket.send{{socket_id = "{idb}", type = "data-binary", message = "AAEC"}}')
            got_binary = await recv(sb)
            info = await evaluate(sa, f'(function() local i = Websocket.info{{socket_id = "{idb}"}} '
                                  f'return {{i.type, i.socket_id, i.route, i.uri, i.parameters.from, i.headers.host ~= nil, math.type(i.timestamp)}} end)()')
            listed = await evaluate(sa, "Websocket.list()")
            missing = await evaluate(sa, '(function() local e = Websocket.send{socket_id = "nodeb-0-999", message = "x"} return e.status end)()')
            stranger = await evaluate(sa, '(function() local e = Websocket.info{socket_id = "nodez-0-1"} return e.status .. " " .. e.error end)()')
            # Answered at once, a call works in a coroutine; one that must wait says why it cannot.
            await sa.send(f'(function() local ok, e = coroutine.resume(coroutine.create(function() '
                          f'return Websocket.send{{socket_id = "{ida}", message = "local"}} end)) '
                          f'local ok2, e2 = coroutine.resume(coroutine.create(function() '
                          f'return Websocket.send{{socket_id = "{idb}", message = "x"}} end)) return {{ok, ok2, e2}} end)()')
            assert await recv(sa) == "local"
            in_coroutine = (await recv_json(sa))["r"][0]
            closed = await evaluate(sa, f'Websocket.close{{socket_id = "{idb}"}}')
            code = None
            try:
                await asyncio.wait_for(sb.recv(), 5)
            except Exception as exc:  # ConnectionClosed
                code = getattr(getattr(exc, "rcvd", None), "code", None)
            return ida, idb, sent, got, got_binary, info, listed, missing, stranger, in_coroutine, closed, code
        finally:
            await sa.close()
            await sb.close()

    ida, idb, sent, got, got_binary, info, listed, missing, stranger, in_coroutine, closed, code = run(main())
    assert ida.startswith("nodea-") and idb.startswith("nodeb-")
    assert (sent, got, got_binary) == ("<nil>", "hi from a", b"\x00\x01\x02")
    assert info[:3] == ["open", idb, "/eval"] and info[3].endswith("/eval?from=b") and info[4:] == ["b", True, "integer"]
    assert sorted(listed) == sorted([ida, idb])
    assert missing == 404
    assert stranger.startswith("404 ") and "nodez" in stranger
    assert in_coroutine[0] is True and in_coroutine[1] is False and "cannot wait inside a coroutine" in in_coroutine[2]
    assert (closed, code) == ("<nil>", 1000)


def test_close_all_counts_every_node_and_a_dead_node_is_404(wsgate, redis):
    store = redis()
    a, b = two_nodes(wsgate, store)

    async def count_and_close_all():
        sockets = [await connect(n.url("/eval")) for n in (a, a, b, b)]
        ids = [await recv(ws) for ws in sockets]
        # The caller's socket closes too; its run still completes and keeps the count.
        await sockets[0].send('Keystore.set{key = "total", value = Websocket.closeAll()}')
        codes = []
        for ws in sockets:
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            except Exception as exc:
                codes.append(getattr(getattr(exc, "rcvd", None), "code", None))
        return ids, codes

    ids, codes = run(count_and_close_all())
    assert codes == [1000] * 4, codes
    assert evaluate_each(b.url("/eval"), 'Keystore.get{key = "total"}') == [4]

    async def holder():
        ws = await connect(b.url("/eval"))
        return ws, await recv(ws)

    async def scenario():
        on_b, idb = await holder()
        on_a = await connect(a.url("/eval"))
        await recv(on_a)
        before = await evaluate(on_a, f'Websocket.send{{socket_id = "{idb}", message = "alive"}}')
        assert await recv(on_b) == "alive"
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(timeout=5)
        await asyncio.sleep(1.5)  # past nodeTimeoutMs
        after = await evaluate(on_a, f'(function() local e = Websocket.send{{socket_id = "{idb}", message = "x"}} return e.status end)()')
        listed = await evaluate(on_a, "#Websocket.list()")
        await on_a.close()
        return before, after, listed

    before, after, listed = run(scenario())
    assert (before, after, listed) == ("<nil>", 404, 1)


def test_a_stopped_redis_times_out_remote_calls_and_local_ones_go_on(wsgate, redis):
    store = redis()
    a, b = two_nodes(wsgate, store)

    async def scenario():
        sa, sb = await connect(a.url("/eval")), await connect(b.url("/eval"))
        ida, idb = await recv(sa), await recv(sb)
        try:
            store.pause()
            started = time.monotonic()
            remote = await evaluate(sa, f'(function() local e = Websocket.send{{socket_id = "{idb}", message = "x"}} return e.status end)()')
            took = time.monotonic() - started
            await sa.send(f'Websocket.send{{socket_id = "{ida}", message = "to myself"}}')
            echoed = await recv(sa)
            local = (await recv_json(sa))["n"] == 0 and "<nil>"
            await asyncio.sleep(1.0)  # past two heartbeats: the links are replaced once Redis answers
            store.resume()
            deadline = time.monotonic() + 10
            while True:
                again = await evaluate(sa, f'Websocket.send{{socket_id = "{idb}", message = "back"}}')
                if again == "<nil>" or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            # A call answered 504 may still take effect: the PUBLISH was on its way when Redis stopped.
            received, early = await recv_until(sb, lambda m: m == "back")
            assert early in ([], ["x"]), early
            return remote, took, local, echoed, again, received
        finally:
            await sa.close()
            await sb.close()

    remote, took, local, echoed, again, received = run(scenario())
    assert remote == 504 and took < 0.3 + 0.5, (remote, took)
    assert (local, echoed) == ("<nil>", "to myself")
    assert (again, received) == ("<nil>", "back")


def test_topics_span_the_nodes(wsgate, redis):
    store = redis()
    a, b = two_nodes(wsgate, store)

    async def scenario():
        sockets = [await connect(n.url("/eval")) for n in (a, a, b, b)]
        ids = [await recv(ws) for ws in sockets]
        publisher = await connect(a.url("/eval"))
        await recv(publisher)
        try:
            # Subscriptions made from node a, for sockets of both nodes.
            for socket_id in ids[:3]:
                assert await evaluate(publisher, f'Websocket.subscribe{{socket_id = "{socket_id}", topic = "news"}}') == "<nil>"
            assert await evaluate(sockets[3], 'Websocket.subscribe{socket_id = "' + ids[3] + '", topic = "news"}') == "<nil>"
            subscribers = await evaluate(publisher, 'Websocket.subscribers{topic = "news"}')
            of_b = await evaluate(publisher, f'Websocket.subscriptions{{socket_id = "{ids[2]}"}}')
            count = await evaluate(publisher, 'Websocket.publish{topic = "news", message = "to all"}')
            got = [await recv(ws) for ws in sockets]
            # A subscriber publishing gets its own message before the call's answer.
            await sockets[2].send('Websocket.publish{topic = "news", type = "data-binary", message = "AAE="}')
            own = await recv(sockets[2])
            from_b = (await recv_json(sockets[2]))["r"][0]
            got_b = [await recv(ws) for ws in sockets if ws is not sockets[2]]
            # Node b leaves the topic's channel once its last subscriber goes.
            for socket_id in ids[2:]:
                assert await evaluate(publisher, f'Websocket.unsubscribe{{socket_id = "{socket_id}", topic = "news"}}') == "<nil>"
            # Only node a still listens on the topic's channel, within a second.
            numsub = lambda: store.command("PUBSUB", "NUMSUB", "wsgate:topic:news")  # noqa: E731
            wait_until(lambda: numsub() == [b"wsgate:topic:news", 1], timeout=1.0, what="node b left the channel")
            after = await evaluate(publisher, 'Websocket.publish{topic = "news", message = "a only"}')
            got_after = [await recv(ws) for ws in sockets[:2]]
            return ids, subscribers, of_b, count, got, from_b, got_b, own, after, got_after
        finally:
            for ws in sockets + [publisher]:
                await ws.close()

    ids, subscribers, of_b, count, got, from_b, got_b, own, after, got_after = run(scenario())
    assert sorted(subscribers) == sorted(ids)
    assert of_b == ["news"]
    assert count == 4 and got == ["to all"] * 4
    assert from_b == 4 and got_b == [b"\x00\x01"] * 3 and own == b"\x00\x01"
    assert after == 2 and got_after == ["a only"] * 2
    # Once every subscriber has gone, no node listens on the topic's channel.
    wait_until(lambda: store.command("PUBSUB", "NUMSUB", "wsgate:topic:news") == [b"wsgate:topic:news", 0], what="the channel left")


def test_subscribe_answers_once_the_node_listens_on_the_topic(wsgate, redis):
    """A message published on any node after `subscribe` returned reaches the socket: the answer
    waits until Redis has confirmed the node's subscription to the topic's channel."""
    store = redis()
    # Heartbeats far apart: the links are not taken for wedged while Redis is stopped.
    a, b = [wsgate(SCRIPTS, cluster_config(store, nodeId=name, heartbeatMs=1000, nodeTimeoutMs=5000)) for name in ("nodea", "nodeb")]
    wait_until(lambda: all(metric(n, "wsgate_cluster_nodes") == 2 for n in (a, b)), what="two live nodes")
    numsub = lambda topic: store.command("PUBSUB", "NUMSUB", f"wsgate:topic:{topic}")[1]  # noqa: E731

    async def scenario():
        on_a, on_b = await connect(a.url("/eval")), await connect(b.url("/eval"))
        id_a, id_b = await recv(on_a), await recv(on_b)
        try:
            # Subscribed from its own node, and from another node: listened on when answered.
            listened = []
            for i in range(20):
                assert await evaluate(on_b, f'Websocket.subscribe{{socket_id = "{id_b}", topic = "own{i}"}}') == "<nil>"
                listened.append(numsub(f"own{i}"))
                assert await evaluate(on_a, f'Websocket.subscribe{{socket_id = "{id_b}", topic = "far{i}"}}') == "<nil>"
                listened.append(numsub(f"far{i}"))
            # Redis stopped: no answer until it confirms.
            store.pause()
            try:
                await on_b.send(f'Websocket.subscribe{{socket_id = "{id_b}", topic = "held"}}')
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(recv(on_b), 0.6)
            finally:
                store.resume()
            held = (await recv_json(on_b))["n"]
            held_listened = numsub("held")
            counted = await evaluate(on_a, 'Websocket.publish{topic = "held", message = "after"}')
            return listened, held, held_listened, counted, await recv(on_b)
        finally:
            await on_a.close()
            await on_b.close()

    listened, held, held_listened, counted, got = run(scenario())
    assert listened == [1] * 40
    assert held == 0 and held_listened == 1
    assert counted == 1 and got == "after"


def test_an_uncounted_publish_does_not_wait_for_the_other_nodes_and_keeps_their_order(wsgate, redis):
    store = redis()
    a, b = two_nodes(wsgate, store)

    async def scenario():
        sub_a, sub_b, pub = [await connect(n.url("/eval")) for n in (a, b, a)]
        ids = [await recv(ws) for ws in (sub_a, sub_b, pub)]
        try:
            for socket_id in ids[:2]:
                await evaluate(pub, f'Websocket.subscribe{{socket_id = "{socket_id}", topic = "feed"}}')
            counted = await evaluate(pub, 'Websocket.publish{topic = "feed", message = "counted"}')
            got = [await recv(ws) for ws in (sub_a, sub_b)]
            replies_before = (metric(b, "wsgate_cluster_requests_total", op="node_reply") or 0)
            # One run, 200 publications: each returns this node's count without yielding.
            counts = await evaluate(pub, 'table.concat((function() local t = {} for i = 1, 200 do '
                                         't[i] = Websocket.publish{topic = "feed", message = tostring(i), wait = false} end '
                                         'return t end)(), ",")')
            on_b = [await recv(sub_b) for _ in range(200)]
            on_a = [await recv(sub_a) for _ in range(200)]
            replies_after = (metric(b, "wsgate_cluster_requests_total", op="node_reply") or 0)
            bad = await evaluate(pub, 'Websocket.publish{topic = "feed", message = "x", wait = "no"}')
            # In a coroutine of the script's own a counted publish cannot wait: it raises before
            # delivering anything, here or elsewhere; an uncounted one works there.
            in_coroutine = await evaluate(pub, '(function() local ok, e = coroutine.resume(coroutine.create(function() '
                                               'return Websocket.publish{topic = "feed", message = "held"} end)) '
                                               'local ok2, n = coroutine.resume(coroutine.create(function() '
                                               'return Websocket.publish{topic = "feed", message = "free", wait = false} end)) '
                                               'return {ok, e, ok2, n} end)()')
            after = [await recv(ws) for ws in (sub_a, sub_b)]
            return counted, got, counts, on_a, on_b, replies_after - replies_before, bad, in_coroutine, after
        finally:
            for ws in (sub_a, sub_b, pub):
                await ws.close()

    counted, got, counts, on_a, on_b, replies, bad, in_coroutine, after = run(scenario())
    assert counted == 2 and got == ["counted"] * 2
    assert counts == ",".join(["1"] * 200)
    assert on_b == [str(i) for i in range(1, 201)] and on_a == on_b
    # Node b delivered without answering a count.
    assert replies == 0
    assert bad["status"] == 400 and bad["error"] == "wait must be a boolean"
    assert in_coroutine[0] is False and "cannot wait inside a coroutine" in in_coroutine[1]
    assert in_coroutine[2:] == [True, 1] and after == ["free", "free"]


def test_an_unanswered_send_does_not_wait_for_the_owner_and_keeps_its_order(wsgate, redis):
    store = redis()
    a, b = two_nodes(wsgate, store)

    async def scenario():
        sender, receiver, gone = [await connect(n.url("/eval")) for n in (a, b, b)]
        _, to, gone_id = [await recv(ws) for ws in (sender, receiver, gone)]
        try:
            await gone.close()
            replies_before = metric(b, "wsgate_cluster_requests_total", op="node_reply") or 0
            sent = await evaluate(sender, 'table.concat((function() local t = {} for i = 1, 200 do '
                                          f'local e = Websocket.send{{socket_id = "{to}", message = tostring(i), wait = false}} '
                                          't[i] = e and e.status or "nil" end return t end)(), ",")')
            got = [await recv(receiver) for _ in range(200)]
            replies = (metric(b, "wsgate_cluster_requests_total", op="node_reply") or 0) - replies_before
            # What the owner finds is not reported; an unknown node is, and so are the argument rules.
            to_closed = await evaluate(sender, f'Websocket.send{{socket_id = "{gone_id}", message = "x", wait = false}}')
            to_unknown = await evaluate(sender, 'Websocket.send{socket_id = "nodez-0-1", message = "x", wait = false}')
            bad = await evaluate(sender, f'Websocket.send{{socket_id = "{to}", message = "x", wait = 1}}')
            answered_closed = await evaluate(sender, f'Websocket.send{{socket_id = "{gone_id}", message = "x"}}')
            return sent, got, replies, to_closed, to_unknown, bad, answered_closed
        finally:
            for ws in (sender, receiver):
                await ws.close()

    sent, got, replies, to_closed, to_unknown, bad, answered_closed = run(scenario())
    assert sent == ",".join(["nil"] * 200)
    assert got == [str(i) for i in range(1, 201)]
    assert replies == 0
    assert to_closed == "<nil>" and answered_closed["status"] == 404
    assert to_unknown["status"] == 404 and "not in the cluster" in to_unknown["error"]
    assert bad["status"] == 400 and bad["error"] == "wait must be a boolean"


def test_publish_without_redis_still_reaches_local_subscribers(wsgate, redis):
    store = redis()
    a = wsgate(SCRIPTS, cluster_config(store))

    async def scenario():
        sub, pub = await connect(a.url("/eval")), await connect(a.url("/eval"))
        sub_id = await recv(sub)
        await recv(pub)
        try:
            await evaluate(pub, f'Websocket.subscribe{{socket_id = "{sub_id}", topic = "t"}}')
            store.kill()
            await asyncio.sleep(0.2)
            count = await evaluate(pub, 'Websocket.publish{topic = "t", message = "local"}')
            return count, await recv(sub)
        finally:
            await sub.close()
            await pub.close()

    assert run(scenario()) == (1, "local")


def test_the_management_api_of_any_node_reaches_every_node(wsgate, redis):
    store = redis()
    token = "cluster-admin-token"
    nodes = []
    for name in ("nodea", "nodeb"):
        port = free_port()
        config = {**cluster_config(store, nodeId=name), "admin": {"port": port, "token": token}}
        nodes.append((wsgate(SCRIPTS, config), port))
    (a, admin_a), (b, _) = nodes
    wait_until(lambda: metric(a, "wsgate_cluster_nodes") == 2, what="two nodes")

    def admin(method, path, body=None):
        conn = http.client.HTTPConnection(HOST, admin_a, timeout=5)
        conn.request(method, path, body=body, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        result = response.status, response.read()
        conn.close()
        return result

    async def scenario():
        on_b = await connect(b.url("/eval?x=1"))
        idb = await recv(on_b)
        try:
            await evaluate(on_b, f'Websocket.subscribe{{socket_id = "{idb}", topic = "ops"}}')
            posted = admin("POST", f"/@connections/{idb}", b"pushed through node a")
            got = await recv(on_b)
            described = admin("GET", f"/@connections/{idb}")
            listed = admin("GET", "/@connections")
            published = admin("POST", "/@topics/ops", b"to the topic")
            got_topic = await recv(on_b)
            uncounted = admin("POST", "/@topics/ops?wait=false", b"not counted")
            got_uncounted = await recv(on_b)
            bad_wait = admin("POST", "/@topics/ops?wait=maybe", b"x")
            told = admin("POST", f"/@connections/{idb}?wait=false", b"told")
            got_told = await recv(on_b)
            gone = admin("POST", "/@connections/nodeb-0-999", b"x")
            deleted = admin("DELETE", f"/@connections/{idb}")
            code = await close_code(on_b)
            return idb, posted, got, described, listed, published, got_topic, gone, deleted, code, uncounted, got_uncounted, bad_wait, told, got_told
        finally:
            await on_b.close()

    idb, posted, got, described, listed, published, got_topic, gone, deleted, code, uncounted, got_uncounted, bad_wait, told, got_told = run(scenario())
    assert posted == (204, b"") and got == "pushed through node a"
    info = json.loads(described[1])
    assert described[0] == 200 and info["socket_id"] == idb and info["route"] == "/eval" and "connectedAt" in info
    assert listed[0] == 200 and idb in json.loads(listed[1])
    assert published == (200, b'{"delivered":1}') and got_topic == "to the topic"
    # wait=false counts this node's deliveries only (none here); node b's subscriber still gets it.
    assert uncounted == (200, b'{"delivered":0}') and got_uncounted == "not counted"
    assert bad_wait == (400, b"wait must be true or false\n")
    # On its way to node b, not confirmed: 202.
    assert told == (202, b"") and got_told == "told"
    assert gone[0] == 410
    assert deleted == (204, b"") and code[0] == 1000


def test_after_redis_restarts_empty_topics_and_nodes_come_back_and_a_late_node_joins(wsgate, redis):
    store = redis()
    a, b = two_nodes(wsgate, store)

    async def scenario():
        sub, pub = await connect(b.url("/eval")), await connect(a.url("/eval"))
        sub_id = await recv(sub)
        await recv(pub)
        try:
            await evaluate(pub, f'Websocket.subscribe{{socket_id = "{sub_id}", topic = "after"}}')
            store.restart_empty()
            wait_until(lambda: store.command("ZCARD", "wsgate:nodes") == 2, timeout=10, what="both nodes registered again")
            # Node b listens on the topic's channel again: a publication from node a reaches it.
            deadline = time.monotonic() + 10
            while (count := await evaluate(pub, 'Websocket.publish{topic = "after", message = "again"}')) != 1:
                assert time.monotonic() < deadline, f"publish counted {count}"
                await asyncio.sleep(0.1)
            got, _ = await recv_until(sub, lambda m: m == "again")
            # A third node started now sees the others' sockets.
            c = wsgate(SCRIPTS, cluster_config(store, nodeId="nodec"))
            wait_until(lambda: metric(c, "wsgate_cluster_nodes") == 3, what="three nodes")
            async with connect(c.url("/eval")) as on_c:
                await recv(on_c)
                listed = await evaluate(on_c, "Websocket.list()")
                sent = await evaluate(on_c, f'Websocket.send{{socket_id = "{sub_id}", message = "from c"}}')
                from_c = await recv(sub)
            return sub_id, got, listed, sent, from_c
        finally:
            await sub.close()
            await pub.close()

    sub_id, got, listed, sent, from_c = run(scenario())
    assert got == "again"
    assert len(listed) == 3 and sub_id in listed, listed
    assert (sent, from_c) == ("<nil>", "from c")


def test_a_wedged_subscriber_connection_is_found_by_its_probe_and_replaced(wsgate, redis):
    store = redis()
    proxy = FreezingProxy(store.port).start()
    try:
        a = wsgate(SCRIPTS, cluster_config(store, nodeId="nodea"))
        b = wsgate(SCRIPTS, cluster_config(store, nodeId="nodeb", redis=proxy.url))
        wait_until(lambda: metric(a, "wsgate_cluster_nodes") == 2 and proxy.subscribers_seen == 1, what="node b subscribed")

        async def scenario():
            on_a, on_b = await connect(a.url("/eval")), await connect(b.url("/eval"))
            ida = await recv(on_a)
            await recv(on_b)
            try:
                proxy.freeze_subscribers()
                # Node b's requests go out, but nothing reaches its subscriber: its calls time out.
                frozen = await evaluate(on_b, f'(function() local e = Websocket.send{{socket_id = "{ida}", message = "x"}} return e.status end)()')
                deadline = time.monotonic() + 10
                while (again := await evaluate(on_b, f'Websocket.send{{socket_id = "{ida}", message = "y"}}')) != "<nil>":
                    assert time.monotonic() < deadline, again
                    await asyncio.sleep(0.1)
                got, _ = await recv_until(on_a, lambda m: m == "y")
                return frozen, got
            finally:
                await on_a.close()
                await on_b.close()

        frozen, got = run(scenario())
        assert frozen == 504 and got == "y"
        assert proxy.subscribers_seen == 2, "a second subscriber connection replaced the wedged one"
        assert "no probe came back" in b.log()
    finally:
        proxy.stop()
