"""Several gateways on one Redis (the `cluster` section): the Keystore lives in Redis, shared by
every loop of every node; nodes heartbeat and forget a node killed with -9; Redis stopped,
killed or restarted empty degrades to local service and comes back; passwords from a file,
never logged; start-up refusals naming the key. Real redis-server processes on free ports."""

from __future__ import annotations

import asyncio
import re
import signal
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from wsgate_support import (ECHO_SCRIPT, HOST, connect, http_get, recv, recv_json, run, run_until_exit,
                            wait_until)

EVAL = """
local w = websocketInfo
if w.type == "open" then w.send(w.socket_id) return end
if w.type ~= "data" then return end
local chunk = load("return " .. w.message)
local results = table.pack(chunk())
local out = {}
for i = 1, results.n do out[i] = results[i] == nil and "<nil>" or results[i] end
w.send(to_json{n = results.n, r = out})
"""

COUNTER = """
if websocketInfo.type == "data" then
  for i = 1, tonumber(websocketInfo.message) do Keystore.incr{key = "hits"} end
  websocketInfo.send("done")
end
"""

SCRIPTS = {"eval.lua": EVAL, "counter.lua": COUNTER, "echo.lua": ECHO_SCRIPT}


def cluster_config(redis, **overrides):
    cluster = {"redis": redis.url, "heartbeatMs": 200, "nodeTimeoutMs": 1000, "requestTimeoutMs": 300, **overrides}
    return {"rateLimit": {"messagesPerSecond": 0}, "metrics": {"public": True}, "cluster": cluster}


def ev(server, *expressions):
    async def main():
        async with connect(server.url("/eval")) as ws:
            await recv(ws)
            out = []
            for expression in expressions:
                await ws.send(expression)
                reply = await recv_json(ws)
                out.append(reply["r"][0] if reply["n"] == 1 else reply["r"])
            return out
    return run(main())


def metric(server, name):
    _, _, body = http_get(server.port, "/metrics")
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return None


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
    assert ev(a,
              'Keystore.set{key = "a", value = "text"}',
              'Keystore.set{key = "n", value = 42}',
              'Keystore.set{key = "f", value = 1.5}',
              'Keystore.set{key = "digits", value = "41"}') == [True] * 4
    assert ev(b,
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
    assert store.command("GET", "wsgate:ks:n") == b"$2"
    assert ev(a, 'Keystore.get{key = "digits"}') == [42]


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
    assert ev(nodes[1], 'Keystore.get{key = "hits"}') == [2000]


def test_ttl_list_and_prefixes(wsgate, redis):
    store = redis()
    a = wsgate(SCRIPTS, cluster_config(store))
    other = wsgate(SCRIPTS, cluster_config(store, prefix="other"))
    assert ev(a, 'Keystore.set{key = "brief", value = "x", ttl_ms = 150}', 'Keystore.get{key = "brief"}') == [True, "x"]
    ev(a, 'Keystore.set{key = "user:b", value = 1}', 'Keystore.set{key = "user:a", value = 1}', 'Keystore.set{key = "u*er", value = 1}')
    assert sorted(ev(a, 'Keystore.list{prefix = "user:"}')[0]) == ["user:a", "user:b"]
    assert ev(a, 'Keystore.list{prefix = "u*"}') == [["u*er"]]
    time.sleep(0.3)
    assert ev(a, 'Keystore.get{key = "brief"}') == ["<nil>"]
    # Another prefix is another cluster: it sees none of these keys.
    assert ev(other, 'Keystore.get{key = "user:a"}', '#Keystore.list()') == ["<nil>", 0]
    # Over one page: cursors until the last page has none; every key once.
    ev(a, 'select("#", (function() for i = 1, 12000 do Keystore.set{key = string.format("p:%05d", i), value = i} end end)())')
    keys, cursor, pages = [], None, 0
    while True:
        call = 'Keystore.list{prefix = "p:"%s}' % (f', cursor = "{cursor}"' if cursor else "")
        page = ev(a, f'(function() local k, c = {call} return #k, c or "", table.concat(k, ",") end)()')[0]
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
    assert ev(a, '"x"') == ["x"]
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
    assert ev(node, 'Keystore.set{key = "k", value = 1}') == [True]

    store.pause()
    started = time.monotonic()
    error = ev(node, '(function() local e = Keystore.get{key = "k"} return e.type .. "|" .. e.status end)()')[0]
    took = time.monotonic() - started
    assert error == "GatewayTimeout|504" and took < 0.3 + 0.5, (error, took)
    assert echo_works(node)
    assert http_get(node.port, "/api/v1/solution/health")[0] == 200
    store.resume()
    wait_until(lambda: ev(node, 'Keystore.get{key = "k"}') == [1], what="answers again after SIGCONT")

    # Stopped for longer than two heartbeats: the link is taken for wedged and replaced, and the
    # new one comes up once Redis answers again.
    store.pause()
    time.sleep(1.2)
    assert echo_works(node)
    store.resume()
    wait_until(lambda: ev(node, 'Keystore.get{key = "k"}') == [1], timeout=10, what="answers again after a long stop")
    assert "no reply for" in node.log()

    store.kill()
    error = ev(node, '(function() local e = Keystore.get{key = "k"} return e.type .. "|" .. e.status end)()')[0]
    assert error == "ServiceUnavailable|503"
    assert echo_works(node)
    wait_until(lambda: metric(node, "wsgate_cluster_up") == 0, what="cluster down in metrics")

    store.start()  # empty, same port
    wait_until(lambda: metric(node, "wsgate_cluster_up") == 1, timeout=10, what="reconnected")
    wait_until(lambda: store.command("ZCARD", "wsgate:nodes") == b":1", what="the node re-registered")
    assert ev(node, 'Keystore.get{key = "k"}', 'Keystore.set{key = "k", value = 2}', 'Keystore.get{key = "k"}') == ["<nil>", True, 2]
    assert "unreachable" in node.log() and "retrying" in node.log()


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
    assert ev(node, 'Keystore.set{key = "k", value = "v"}', 'Keystore.get{key = "k"}') == [True, "v"]

    bad = tmp_path / "wrong.pass"
    bad.write_text("not-the-password\n")
    refused = wsgate(SCRIPTS, {**cluster_config(store, passwordFile=str(bad)), "logLevel": "debug"})
    refused.wait_for_log("AUTH refused")
    error = ev(refused, '(function() local e = Keystore.get{key = "k"} return e.status end)()')[0]
    assert error == 503
    by_env = wsgate(SCRIPTS, cluster_config(store), env={"REDIS_PASSWORD": secret})
    assert ev(by_env, 'Keystore.get{key = "k"}') == ["v"]
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
