"""``wsgate probe``: one client connection, one JSON line, exit 0 / 1 / 2.

The servers probed are Python ``websockets`` servers started by the tests (``Upstream``: plain, or
TLS with a leaf of the throw-away CA), a bare TCP listener that never answers, and wsgate itself
(its health route answers a WebSocket upgrade with "OK").
"""

from __future__ import annotations

import base64
import json
import subprocess
import time

import pytest

from wsgate_support import (HOST, SilentListener, TestPKI, free_port, require_binary, tls_server_context,
                            wsgate_bin)

PROBE_BOUND = 15.0  # no probe run may take longer than this, whatever it waits for


def probe(*args, timeout: float = PROBE_BOUND):
    """Run ``wsgate probe ARGS``; return (exit code, parsed JSON line or None, stdout, stderr, seconds)."""
    require_binary()
    started = time.monotonic()
    proc = subprocess.run([str(wsgate_bin()), "probe", *[str(a) for a in args]],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    took = time.monotonic() - started
    lines = proc.stdout.strip().splitlines()
    result = None
    if lines:
        assert len(lines) == 1, f"probe printed more than one line: {proc.stdout!r}"
        result = json.loads(lines[0])
    return proc.returncode, result, proc.stdout, proc.stderr, took


def assert_connected(code, result, out, err):
    assert code == 0, f"exit {code}; stdout {out!r}; stderr {err!r}"
    assert result is not None and result["connection"] is True, out


def assert_not_connected(code, result, out, err, *needles):
    assert code == 1, f"exit {code}; stdout {out!r}; stderr {err!r}"
    assert result is not None and result["connection"] is False, out
    assert isinstance(result.get("error"), str) and result["error"], out
    for needle in needles:
        assert needle.lower() in result["error"].lower(), f"{needle!r} not in {result['error']!r}"


# --- plain ws:// upstreams --------------------------------------------------------------------


def test_data_is_sent_and_the_echo_reported(upstream):
    server = upstream(echo=True)
    code, result, out, err, _ = probe(server.url("/echo/path?q=1"), "--data", "hello probe")
    assert_connected(code, result, out, err)
    assert result["data"] == "hello probe", out
    assert "binary" not in result and "close_code" not in result, out
    peer = server.wait_peer()
    assert peer.path == "/echo/path?q=1"
    assert peer.messages == ["hello probe"]
    assert peer.wait_closed() == 1000  # the probe closes cleanly


@pytest.mark.parametrize("flag", [None, "--no-compression"])
def test_compression_is_offered_unless_turned_off(upstream, flag):
    server = upstream(echo=True)
    text = "probe with permessage-deflate " * 50
    code, result, out, err, _ = probe(server.url(), "--data", text, *([flag] if flag else []))
    assert_connected(code, result, out, err)
    assert result["data"] == text, out
    peer = server.wait_peer()
    offer = peer.headers.get("Sec-WebSocket-Extensions")
    if flag:
        assert offer is None, offer
    else:
        assert offer and offer.startswith("permessage-deflate"), offer
        assert peer.ws.response.headers.get("Sec-WebSocket-Extensions", "").startswith("permessage-deflate")
    assert peer.messages == [text]


def test_greeting_is_reported_without_data(upstream):
    server = upstream(greeting='{"hello": "from upstream"}')
    code, result, out, err, _ = probe(server.url())
    assert_connected(code, result, out, err)
    assert result["data"] == '{"hello": "from upstream"}', out
    peer = server.wait_peer()
    assert peer.wait_closed() == 1000
    assert peer.messages == []  # nothing was sent without --data


def test_binary_first_message_is_base64(upstream):
    blob = bytes(range(256)) + b"\x00\xff"
    server = upstream(greeting=blob)
    code, result, out, err, _ = probe(server.url())
    assert_connected(code, result, out, err)
    assert result.get("binary") is True, out
    assert base64.b64decode(result["data"]) == blob, out


def test_server_closing_first_gives_null_data_and_its_close_code(upstream):
    server = upstream(close_with=(4000, "go away"))
    code, result, out, err, _ = probe(server.url(), "--timeout", "5")
    assert_connected(code, result, out, err)
    assert result["data"] is None, out
    assert result.get("close_code") == 4000, out


def test_silent_server_gives_null_data_after_the_timeout(upstream):
    server = upstream()
    code, result, out, err, took = probe(server.url(), "--timeout", "1.5")
    assert_connected(code, result, out, err)
    assert result["data"] is None, out
    assert "error" not in result, out
    # The timeout is respected: not cut short, and over soon after (plus a close handshake).
    assert 1.4 <= took <= 4.0, f"probe with --timeout 1.5 took {took:.2f}s"
    assert server.wait_peer().wait_closed() == 1000


def test_timeout_while_waiting_for_the_upgrade_response():
    """A TCP listener that accepts but never answers: the run ends at --timeout, not connected."""
    with SilentListener() as listener:
        code, result, out, err, took = probe(listener.url(), "--timeout", "1")
    assert_not_connected(code, result, out, err, "timeout")
    assert 0.9 <= took <= 3.5, f"probe with --timeout 1 took {took:.2f}s"


def test_headers_reach_the_server(upstream):
    server = upstream(echo=True, require_header=("X-Probe-Token", "s3cret"))
    code, result, out, err, _ = probe(server.url("/guarded"), "--data", "x")
    assert_not_connected(code, result, out, err, "bad status 403")
    assert server.refused == ["/guarded"]

    code, result, out, err, _ = probe(server.url("/guarded"), "--data", "x",
                                      "--header", "X-Probe-Token: s3cret", "--header", "X-Other:  two words ")
    assert_connected(code, result, out, err)
    assert result["data"] == "x"
    peer = server.wait_peer()
    assert peer.headers.get("X-Probe-Token") == "s3cret"
    assert peer.headers.get("X-Other") == "two words"


def test_refused_port():
    code, result, out, err, _ = probe(f"ws://{HOST}:{free_port()}/")
    assert_not_connected(code, result, out, err, "refused")


def test_unresolvable_host():
    code, result, out, err, _ = probe("ws://nonexistent.invalid/", "--timeout", "5")
    assert_not_connected(code, result, out, err, "resolve", "nonexistent.invalid")


# --- bad arguments: exit 2 ----------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["http://127.0.0.1:1/"],
    ["https://127.0.0.1:1/"],
    ["not a url"],
    ["ws://127.0.0.1:1/", "--header", "no colon here"],
    ["ws://127.0.0.1:1/", "--header", ": empty name"],
    ["ws://127.0.0.1:1/", "--header", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="],
    ["ws://127.0.0.1:1/", "--header", "X-Evil: a\r\nX-Injected: 1"],
    ["ws://127.0.0.1:1/", "--no-such-flag"],
    ["ws://127.0.0.1:1/", "--timeout", "0"],
    ["ws://127.0.0.1:1/", "--ca-file", "/etc/hostname"],
    ["wss://127.0.0.1:1/", "--ca-file", "/nonexistent/ca.pem"],
], ids=["http-scheme", "https-scheme", "not-a-url", "header-without-colon", "header-empty-name",
        "header-reserved", "header-crlf",
        "unknown-flag", "zero-timeout", "ca-file-with-ws", "unreadable-ca-file"])
def test_bad_arguments_exit_2(args):
    code, result, out, err, took = probe(*args)
    assert code == 2, f"exit {code}; stdout {out!r}; stderr {err!r}"
    assert took < 5, took  # refused before any network wait
    if result is not None:
        assert result["connection"] is False and result.get("error"), out
    else:
        assert err.strip(), "no message for a usage error"


# --- wss:// upstreams with the throw-away CA ------------------------------------------------------


@pytest.fixture
def tls_upstream(upstream, throwaway_ca):
    return upstream(echo=True, ssl_context=tls_server_context(*throwaway_ca.good))


def test_tls_with_the_test_ca(tls_upstream, throwaway_ca):
    for host in ("localhost", HOST):  # the DNS name and the IP address SAN
        code, result, out, err, _ = probe(tls_upstream.url("/", host=host), "--data", "over tls",
                                          "--ca-file", throwaway_ca.ca_cert)
        assert_connected(code, result, out, err)
        assert result["data"] == "over tls", out


def test_tls_without_the_ca_fails_verification(tls_upstream):
    code, result, out, err, _ = probe(tls_upstream.url("/", host="localhost"), "--data", "x")
    assert_not_connected(code, result, out, err, "certificate verification failed")
    assert tls_upstream.peers == []


def test_tls_insecure_skips_verification(tls_upstream):
    code, result, out, err, _ = probe(tls_upstream.url("/", host="localhost"), "--data", "unchecked", "--insecure")
    assert_connected(code, result, out, err)
    assert result["data"] == "unchecked", out


def test_tls_with_another_ca_fails_verification(tls_upstream, tmp_path):
    stranger = TestPKI(tmp_path / "stranger")
    code, result, out, err, _ = probe(tls_upstream.url("/", host="localhost"), "--ca-file", stranger.ca_cert)
    assert_not_connected(code, result, out, err, "certificate verification failed")


@pytest.mark.parametrize("case", ["ip-not-in-san", "name-not-in-san"])
def test_tls_wrong_hostname_fails_verification(upstream, throwaway_ca, case):
    if case == "ip-not-in-san":
        # The certificate names localhost and 127.0.0.1; the URL says 127.0.0.2.
        server = upstream(echo=True, ssl_context=tls_server_context(*throwaway_ca.good), host="127.0.0.2")
        url = server.url("/")
    else:
        # The certificate names other.example only; the URL says localhost.
        server = upstream(echo=True, ssl_context=tls_server_context(*throwaway_ca.other))
        url = server.url("/", host="localhost")
    code, result, out, err, _ = probe(url, "--data", "x", "--ca-file", throwaway_ca.ca_cert)
    assert_not_connected(code, result, out, err, "certificate verification failed")
    assert server.peers == []
    # The control: the same server is fine for a probe that does not check.
    code, result, out, err, _ = probe(url, "--data", "x", "--insecure")
    assert_connected(code, result, out, err)


# --- wsgate itself ---------------------------------------------------------------------------------

ECHO = 'if websocketInfo.type == "data" then websocketInfo.send(websocketInfo.message) end\n'


def test_wsgate_health_route_answers_ok_over_websocket(wsgate):
    server = wsgate({"echo.lua": ECHO})
    code, result, out, err, _ = probe(server.url("/api/v1/solution/health"))
    assert_connected(code, result, out, err)
    assert result["data"] == "OK", out
    # And a real route answers with the echo.
    code, result, out, err, _ = probe(server.url("/echo"), "--data", "via wsgate")
    assert_connected(code, result, out, err)
    assert result["data"] == "via wsgate", out


def test_wsgate_unknown_path_is_bad_status_404(wsgate):
    server = wsgate({"echo.lua": ECHO})
    code, result, out, err, _ = probe(server.url("/no/such/route"))
    assert_not_connected(code, result, out, err, "bad status 404")


def test_wsgate_health_route_over_wss(wsgate, throwaway_ca):
    cert, key = throwaway_ca.good
    server = wsgate({"echo.lua": ECHO}, {"tls": {"certificate": str(cert), "privateKey": str(key)}})
    code, result, out, err, _ = probe(server.wss_url("/api/v1/solution/health"), "--ca-file", throwaway_ca.ca_cert)
    assert_connected(code, result, out, err)
    assert result["data"] == "OK", out
