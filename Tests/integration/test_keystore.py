"""The Keystore service: state shared by every script on every loop, atomic per call, keys that
expire on time, a size cap, errors as the other services."""

from __future__ import annotations

import time

import pytest

from wsgate_support import COUNTER_SCRIPT, EVAL_SCRIPT, connect, evaluate_each, recv, recv_json, run


@pytest.fixture(scope="module")
def server(wsgate_module):
    return wsgate_module({"eval.lua": EVAL_SCRIPT, "counter.lua": COUNTER_SCRIPT},
                         {"rateLimit": {"messagesPerSecond": 0}, "keystore": {"maxBytes": 4096}}, workers=2)


def test_set_get_delete_and_types(server):
    assert evaluate_each(server.url("/eval"),
              'Keystore.set{key = "a", value = "text"}',
              'Keystore.get{key = "a"}',
              'Keystore.set{key = "n", value = 42}',
              'math.type(Keystore.get{key = "n"})',
              'Keystore.set{key = "f", value = 1.5}',
              'Keystore.get{key = "f"}',
              'Keystore.set{key = "a", value = "other", only_if_absent = true}',
              'Keystore.get{key = "a"}',
              'Keystore.delete{key = "a"}',
              'Keystore.delete{key = "a"}',
              'Keystore.get{key = "a"}') == [True, "text", True, "integer", True, 1.5, False, "text", 1, 0, "<nil>"]


def test_state_is_shared_across_loops_and_runs(server):
    async def main():
        sockets = [await connect(server.url("/eval")) for _ in range(6)]
        try:
            for ws in sockets:
                await recv(ws)  # its socket id
            for i, ws in enumerate(sockets):
                await ws.send(f'Keystore.set{{key = "shared:{i}", value = {i}}}')
                await recv_json(ws)
            got = []
            for ws in sockets:
                await ws.send('Keystore.mget{keys = {"shared:0", "shared:3", "missing", "shared:5"}}')
                got.append((await recv_json(ws))["r"][0])
            return got
        finally:
            for ws in sockets:
                await ws.close()

    # The hole for the missing key: JSON encodes {1=0, 2=3, 4=5} as an object.
    assert all(g == {"1": 0, "2": 3, "4": 5} for g in run(main()))


def test_incr_is_atomic_across_loops(server):
    evaluate_each(server.url("/eval"), 'Keystore.delete{key = "hits"}')

    async def main():
        sockets = [await connect(server.url("/counter")) for _ in range(8)]
        try:
            for ws in sockets:
                await ws.send("500")
            for ws in sockets:
                assert await recv(ws, timeout=20) == "done"
        finally:
            for ws in sockets:
                await ws.close()

    run(main())
    assert evaluate_each(server.url("/eval"), 'Keystore.get{key = "hits"}') == [4000]
    assert evaluate_each(server.url("/eval"), 'Keystore.incr{key = "hits", by = -4000}', 'Keystore.incr{key = "fresh"}',
              'Keystore.set{key = "digits", value = "41"}', 'Keystore.incr{key = "digits"}') == [0, 1, True, 42]
    bad = evaluate_each(server.url("/eval"), 'Keystore.set{key = "word", value = "x"}', 'Keystore.incr{key = "word"}.status')
    assert bad == [True, 400]


def test_keys_expire_on_time_without_being_read(server):
    # The cap is 4096 bytes: fill most of it with keys that expire, then wait. A set that fits only
    # once they are gone proves the sweep freed them; nothing read them meanwhile.
    filler = "x" * 900
    assert evaluate_each(server.url("/eval"), *[f'Keystore.set{{key = "ttl:{i}", value = "{filler}", ttl_ms = 200}}' for i in range(3)]) == [True] * 3
    assert evaluate_each(server.url("/eval"), f'Keystore.set{{key = "big", value = "{filler * 2}"}}.status') == [507]
    time.sleep(0.5)
    assert evaluate_each(server.url("/eval"), f'Keystore.set{{key = "big", value = "{filler * 2}"}}') == [True]
    assert evaluate_each(server.url("/eval"), 'Keystore.get{key = "ttl:0"}', 'Keystore.delete{key = "big"}') == ["<nil>", 1]


def test_list_with_prefix_and_paging(wsgate):
    server = wsgate({"eval.lua": EVAL_SCRIPT}, {"rateLimit": {"messagesPerSecond": 0}}, workers=1)
    evaluate_each(server.url("/eval"), 'Keystore.set{key = "user:b", value = 1}', 'Keystore.set{key = "user:a", value = 1}',
       'Keystore.set{key = "other", value = 1}')
    assert evaluate_each(server.url("/eval"), 'Keystore.list{prefix = "user:"}') == [["user:a", "user:b"]]
    assert sorted(evaluate_each(server.url("/eval"), 'Keystore.list()')[0]) == ["other", "user:a", "user:b"]
    # Over one page (10,000 keys): a cursor for the rest.
    evaluate_each(server.url("/eval"), 'select("#", (function() for i = 1, 10005 do Keystore.set{key = string.format("p:%05d", i), value = i} end end)())')
    first = evaluate_each(server.url("/eval"), 'Keystore.list{prefix = "p:"}')[0]
    assert len(first) == 2 and len(first[0]) == 10000 and first[1] == "p:10000"
    rest = evaluate_each(server.url("/eval"), f'Keystore.list{{prefix = "p:", cursor = "{first[1]}"}}')
    assert rest == [["p:10001", "p:10002", "p:10003", "p:10004", "p:10005"]]


@pytest.mark.parametrize("call, fragment", [
    ('Keystore.set{value = 1}', "key is required"),
    ('Keystore.set{key = "", value = 1}', "key must be"),
    ('Keystore.set{key = "k", value = {}}', "value must be"),
    ('Keystore.set{key = "k", value = 1, ttl_ms = 0}', "ttl_ms"),
    ('Keystore.get("k")', "argument must be a table"),
    ('Keystore.mget{keys = {1}}', "keys[1]"),
    ('Keystore.incr{key = "k", by = 1.5}', "by must be"),
])
def test_bad_arguments_are_400(server, call, fragment):
    error = evaluate_each(server.url("/eval"), f'(function() local e = {call} return e.type .. "|" .. e.status .. "|" .. e.error end)()')[0]
    kind, status, message = error.split("|", 2)
    assert kind == "BadRequest" and status == "400" and fragment in message


def test_the_store_survives_a_script_reload(wsgate):
    server = wsgate({"eval.lua": EVAL_SCRIPT}, {"rateLimit": {"messagesPerSecond": 0}}, workers=1)
    assert evaluate_each(server.url("/eval"), 'Keystore.set{key = "kept", value = "yes"}') == [True]
    (server.endpoints_dir / "eval.lua").write_text(EVAL_SCRIPT + "\n-- changed\n")
    server.wait_for_log("script changed: eval.lua")
    assert evaluate_each(server.url("/eval"), 'Keystore.get{key = "kept"}') == ["yes"]
