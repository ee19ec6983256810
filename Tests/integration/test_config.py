"""Start-up validation: config keys and types, endpoint scripts that do not compile."""

from __future__ import annotations

from wsgate_support import connect, recv, run, run_until_exit

ECHO = """
if websocketInfo.type == "data" then websocketInfo.send(websocketInfo.message) end
"""

FULL_CONFIG = {
    "host": "0.0.0.0",
    "port": 8080,
    "endpoints": "Endpoints",
    "workers": 0,
    "logLevel": "info",
    "limits": {"maxMessageBytes": 1048576, "maxRequestHeaderBytes": 16384},
    "rateLimit": {"messagesPerSecond": 5, "burst": 5, "onExceed": "throttle"},
}


def test_full_config_is_accepted(wsgate):
    # host, port, endpoints and workers are overridden on the command line.
    server = wsgate({"echo.lua": ECHO}, FULL_CONFIG)

    async def main():
        async with connect(server.url("/echo")) as ws:
            await ws.send("configured")
            return await recv(ws)

    assert run(main()) == "configured"


def test_large_max_message_alone_starts_and_echoes(wsgate):
    # limits.sendQueueBytes left out follows limits.maxMessageBytes (twice it), so raising only
    # maxMessageBytes to 16 MiB starts, and a message over the old 4 MiB queue comes back.
    server = wsgate({"echo.lua": ECHO}, {"limits": {"maxMessageBytes": 16 << 20}})
    big = "x" * (5 << 20)

    async def main():
        async with connect(server.url("/echo"), max_size=16 << 20) as ws:
            await ws.send("hello")
            first = await recv(ws)
            await ws.send(big)
            return first, await recv(ws)

    first, second = run(main())
    assert first == "hello"
    assert second == big


def test_send_queue_below_twice_max_message_exits_2(tmp_path):
    config = {"limits": {"maxMessageBytes": 16 << 20, "sendQueueBytes": 4 << 20}}
    code, stderr = run_until_exit(tmp_path, {"echo.lua": ECHO}, config)
    assert code == 2, stderr
    assert "limits.sendQueueBytes" in stderr
    assert "must be at least twice limits.maxMessageBytes" in stderr


def test_unknown_top_level_key_exits_2(tmp_path):
    code, stderr = run_until_exit(tmp_path, {"echo.lua": ECHO}, {"bogusKey": 1})
    assert code == 2, stderr
    assert "bogusKey" in stderr


def test_unknown_nested_key_exits_2_naming_it(tmp_path):
    code, stderr = run_until_exit(tmp_path, {"echo.lua": ECHO}, {"rateLimit": {"burstt": 5}})
    assert code == 2, stderr
    assert "burstt" in stderr


def test_wrong_type_exits_2_naming_the_key(tmp_path):
    code, stderr = run_until_exit(tmp_path, {"echo.lua": ECHO}, {"port": "x"})
    assert code == 2, stderr
    assert "port" in stderr


def test_script_syntax_error_exits_2_naming_the_file(tmp_path):
    scripts = {"echo.lua": ECHO, "broken_script.lua": "if websocketInfo.type == then end\n"}
    code, stderr = run_until_exit(tmp_path, scripts, {})
    assert code == 2, stderr
    assert "broken_script.lua" in stderr
