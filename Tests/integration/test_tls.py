"""wss:// against the real binary.

Every certificate here comes from a throw-away CA made with the ``openssl`` command in a tmp
folder (``TestPKI``); the clients trust that CA and nothing else. The gateway is started with
``tls.certificate`` / ``tls.privateKey`` in its config (or ``--tls-cert`` / ``--tls-key``), so its
port speaks TLS only.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import signal
import socket
import ssl
import time
import warnings

import pytest

from wsgate_support import (
    ECHO_SCRIPT,
    HOST,
    Bystander,
    RawClient,
    OP_TEXT,
    TestPKI,
    connect,
    https_get,
    open_fds,
    peer_serial,
    recv,
    report,
    run,
    run_until_exit,
    ws_frame,
)

INFO_SCRIPT = """
if websocketInfo.type == "data" then
  websocketInfo.send{uri = websocketInfo.uri, extensions = websocketInfo.extensions,
                     route = websocketInfo.route, host = websocketInfo.headers.host}
end
"""

SCRIPTS = {"echo.lua": ECHO_SCRIPT, "info.lua": INFO_SCRIPT}
NO_RATE_LIMIT = {"messagesPerSecond": 0}
SERIAL_A, SERIAL_B = 0xA1A1, 0xB2B2


def tls_config(cert, key, **extra) -> dict:
    config = {"tls": {"certificate": str(cert), "privateKey": str(key)}, "rateLimit": NO_RATE_LIMIT}
    config.update(extra)
    return config


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The CA plus every leaf the tests use."""
    pki = TestPKI(tmp_path_factory.mktemp("pki"))
    now = datetime.datetime.now(datetime.timezone.utc)
    pki.good = pki.leaf("good")
    pki.a = pki.leaf("a", cn="localhost A", serial=SERIAL_A)
    pki.b = pki.leaf("b", cn="localhost B", serial=SERIAL_B)
    pki.other = pki.leaf("other", cn="other.example", sans=("DNS:other.example",))
    pki.expired = pki.leaf("expired", not_before=now - datetime.timedelta(days=10),
                           not_after=now - datetime.timedelta(days=1))
    pki.future = pki.leaf("future", not_before=now + datetime.timedelta(days=1),
                          not_after=now + datetime.timedelta(days=10))
    return pki


@pytest.fixture(scope="module", params=[True, False], ids=["compression-on", "compression-off"])
def tls_server(request, wsgate_module, pki):
    cert, key = pki.good
    return wsgate_module(SCRIPTS, tls_config(cert, key, compression={"enabled": request.param}))


def peer_cert_serial(ws) -> int:
    return peer_serial(ws.transport.get_extra_info("ssl_object"))


# --- the basics over wss -----------------------------------------------------


def test_wss_echo_text_and_binary(tls_server, pki):
    async def scenario():
        async with connect(tls_server.wss_url("/echo"), ssl=pki.client_context()) as ws:
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            await ws.send("hello over tls")
            assert await recv(ws) == "hello over tls"
            blob = os.urandom(3000) + bytes(range(256))
            await ws.send(blob)
            assert await recv(ws) == blob
            text = json.dumps([{"n": i, "name": "item", "ok": True} for i in range(4000)])
            await ws.send(text)
            assert await recv(ws) == text
            tiny = b"\x00\x01"
            await ws.send(tiny)
            assert await recv(ws) == tiny
            large = os.urandom(900 * 1024)  # many TLS records, incompressible
            await ws.send(large)
            assert await recv(ws, 15) == large
            assert peer_cert_serial(ws) == pki.serial_of(pki.good[0])
            return extensions

    extensions = run(scenario())
    enabled = json.loads(tls_server.config_path.read_text())["compression"]["enabled"]
    if enabled:
        assert "permessage-deflate" in extensions, extensions
    else:
        assert extensions == "", extensions
    report(f"wss echo with compression {'on' if enabled else 'off'}: extensions {extensions!r}")


def test_pipelined_messages_buffered_inside_tls_are_all_answered(tls_server, pki):
    """Many frames arrive in few TLS records: input already decrypted must not wait for epoll."""
    messages = [f"pipelined-{i}-" + "p" * (i % 300) for i in range(500)]
    client = RawClient(tls_server.port, "/echo", ssl_context=pki.client_context())
    try:
        client.send(b"".join(ws_frame(OP_TEXT, m.encode()) for m in messages))
        got = []
        for _ in messages:
            fin, opcode, payload = client.read_frame(timeout=10)
            assert fin and opcode == OP_TEXT and client.last_rsv == 0  # no extension was offered
            got.append(payload.decode())
        assert got == messages
    finally:
        client.close()


def test_wss_without_offering_compression(tls_server, pki):
    async def scenario():
        async with connect(tls_server.wss_url("/echo"), ssl=pki.client_context(), compression=None) as ws:
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            await ws.send("plain")
            assert await recv(ws) == "plain"
            payload = os.urandom(70000)
            await ws.send(payload)
            assert await recv(ws) == payload

    run(scenario())


def test_websocket_info_uri_is_wss(tls_server, pki):
    async def scenario():
        async with connect(tls_server.wss_url("/info?x=1"), ssl=pki.client_context()) as ws:
            await ws.send("?")
            info = json.loads(await recv(ws))
            return info, ws.response.headers.get("Sec-WebSocket-Extensions", "")

    info, extensions = run(scenario())
    assert info["uri"].startswith("wss://"), info
    assert info["uri"] == f"wss://localhost:{tls_server.port}/info?x=1", info
    assert info["extensions"] == extensions, (info, extensions)


def test_ip_address_in_the_url_is_checked_against_the_ip_san(tls_server, pki):
    async def scenario():
        async with connect(f"wss://{HOST}:{tls_server.port}/echo", ssl=pki.client_context()) as ws:
            await ws.send("by ip")
            assert await recv(ws) == "by ip"

    run(scenario())


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_tls_1_2_and_1_3_are_spoken(tls_server, pki, version):
    context = pki.client_context()
    context.minimum_version = context.maximum_version = getattr(ssl.TLSVersion, version)
    client = RawClient(tls_server.port, "/echo", ssl_context=context)
    try:
        assert client.sock.version() == version.replace("_", "."), client.sock.version()
        client.send_text(f"over {version}")
        assert client.recv_text() == f"over {version}"
    finally:
        client.close()


def test_tls_1_1_is_refused(tls_server, pki):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(str(pki.ca_cert))
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client library itself offer TLS 1.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection((HOST, tls_server.port), timeout=5) as sock:
        with pytest.raises(ssl.SSLError) as err:
            context.wrap_socket(sock, server_hostname="localhost")
    assert not isinstance(err.value, ssl.SSLCertVerificationError), err.value
    status, _, _ = https_get(tls_server.port, "/api/v1/solution/health", pki.client_context())
    assert status == 200


def test_alpn_http_1_1_is_chosen_when_offered(tls_server, pki):
    context = pki.client_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    client = RawClient(tls_server.port, "/echo", ssl_context=context)
    try:
        assert client.sock.selected_alpn_protocol() == "http/1.1"
        client.send_text("alpn")
        assert client.recv_text() == "alpn"
    finally:
        client.close()


def test_certificate_file_with_the_whole_chain_is_sent(wsgate, pki, tmp_path):
    intermediate = TestPKI(tmp_path / "intermediate", parent=pki)
    leaf, key = intermediate.leaf("chained")
    chain = tmp_path / "chain.pem"
    chain.write_text(leaf.read_text() + intermediate.ca_cert.read_text())
    server = wsgate(SCRIPTS, tls_config(chain, key))

    async def scenario():
        async with connect(server.wss_url("/echo"), ssl=pki.client_context()) as ws:  # trusts the root only
            await ws.send("chained")
            assert await recv(ws) == "chained"

    run(scenario())
    # The control: the leaf alone cannot be verified by a client that only knows the root.
    alone = wsgate(SCRIPTS, tls_config(leaf, key))
    with pytest.raises(ssl.SSLCertVerificationError):
        https_get(alone.port, "/api/v1/solution/health", pki.client_context())


def test_health_over_https(tls_server, pki):
    status, headers, body = https_get(tls_server.port, "/api/v1/solution/health", pki.client_context())
    assert status == 200 and body.strip() == b"OK", (status, headers, body)
    # Another non-upgrade request over TLS gets the usual answers.
    status, _, _ = https_get(tls_server.port, "/no/such/path", pki.client_context())
    assert status == 404
    status, _, _ = https_get(tls_server.port, "/echo", pki.client_context())
    assert status == 426


def test_flags_override_the_config_files(wsgate, pki, tmp_path):
    cert, key = pki.good
    missing = tmp_path / "not-there.pem"
    server = wsgate(SCRIPTS, tls_config(missing, missing),
                    extra_args=["--tls-cert", cert, "--tls-key", key])

    async def scenario():
        async with connect(server.wss_url("/echo"), ssl=pki.client_context()) as ws:
            await ws.send("flags")
            assert await recv(ws) == "flags"

    run(scenario())


# --- clients that get it wrong -----------------------------------------------


def test_client_checking_the_hostname_rejects_a_certificate_for_another_name(wsgate, pki):
    cert, key = pki.other
    server = wsgate(SCRIPTS, tls_config(cert, key))
    # A bystander that trusts the CA but does not check the name keeps echoing throughout.
    bystander = Bystander(server.port, ssl_context=pki.client_context(check_hostname=False)).start()
    try:
        async def rejected():
            with pytest.raises(ssl.SSLCertVerificationError) as err:
                async with connect(server.wss_url("/echo"), ssl=pki.client_context()):
                    pass
            return err.value

        for _ in range(5):
            error = run(rejected())
            assert "other.example" in str(error) or "match" in str(error), error
        with pytest.raises(ssl.SSLCertVerificationError):
            https_get(server.port, "/api/v1/solution/health", pki.client_context())

        async def right_name():
            async with connect(server.wss_url("/echo"), ssl=pki.client_context(),
                               server_hostname="other.example") as ws:
                await ws.send("right name")
                assert await recv(ws) == "right name"

        run(right_name())
    finally:
        bystander.stop()
    bystander.assert_intact("after 5 clients refused the certificate for other.example")
    assert server.proc.poll() is None


def read_to_eof(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Everything the server sends until it closes; (bytes, closed within timeout)."""
    got = b""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return got, False
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return got, False
        except (ConnectionResetError, ssl.SSLError):
            return got, True
        if not chunk:
            return got, True
        got += chunk


@pytest.fixture
def guarded_server(wsgate, pki):
    """A TLS server with a 500 ms handshake timeout."""
    cert, key = pki.good
    return wsgate(SCRIPTS, tls_config(cert, key, limits={"handshakeTimeoutMs": 500}))


def test_plain_http_to_the_tls_port_gets_400(guarded_server, pki):
    server = guarded_server
    bystander = Bystander(server.port, ssl_context=pki.client_context()).start()
    try:
        requests = [
            f"GET /api/v1/solution/health HTTP/1.1\r\nHost: {HOST}:{server.port}\r\n\r\n".encode(),
            (f"GET /echo HTTP/1.1\r\nHost: {HOST}:{server.port}\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             "Sec-WebSocket-Version: 13\r\n\r\n").encode(),
            b"POST /x HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
        ]
        for request in requests:
            with socket.create_connection((HOST, server.port), timeout=5) as sock:
                sock.sendall(request)
                answer, closed = read_to_eof(sock)
            assert closed, f"connection not closed after {request[:30]!r}; got {answer!r}"
            assert answer.startswith(b"HTTP/1.1 400"), f"{request[:30]!r} got {answer[:200]!r}"
        # The health route still answers over TLS.
        status, _, body = https_get(server.port, "/api/v1/solution/health", pki.client_context())
        assert status == 200 and body.strip() == b"OK"
    finally:
        bystander.stop()
    bystander.assert_intact("after plain HTTP on the TLS port")
    assert server.proc.poll() is None


def client_hello(pki) -> bytes:
    """The bytes of a real TLS ClientHello, made with an in-memory TLS client."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = pki.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_garbage_and_stalled_handshakes_cost_one_socket_until_the_timeout(guarded_server, pki):
    server = guarded_server
    bystander = Bystander(server.port, ssl_context=pki.client_context()).start()
    time.sleep(0.2)
    baseline = open_fds(server.proc.pid)
    log_lines_before = len(server.log().splitlines())
    hello = client_hello(pki)
    assert hello[0] == 0x16 and len(hello) > 100
    try:
        # 1. Garbage: random bytes, and a TLS record header with garbage inside.
        garbage_inputs = [b"\xff" + os.urandom(4095), b"\x16\x03\x01\x00\x40" + os.urandom(64),
                          b"\x16\x03\x03\xff\xff" + os.urandom(2000)]
        for data in garbage_inputs:
            with socket.create_connection((HOST, server.port), timeout=5) as sock:
                started = time.monotonic()
                sock.sendall(data)
                _, closed = read_to_eof(sock, timeout=3.0)
                took = time.monotonic() - started
            assert closed, f"garbage {data[:8]!r} not closed within 3 s"
            assert took < 2.0, f"garbage {data[:8]!r} closed after {took:.2f}s"

        # 2. A crowd of stalled handshakes: nothing at all, half a ClientHello, or a finished TLS
        #    handshake followed by no upgrade request.
        crowd = []
        for i in range(24):
            sock = socket.create_connection((HOST, server.port), timeout=5)
            started = time.monotonic()
            if i >= 20:
                sock = pki.client_context().wrap_socket(sock, server_hostname="localhost")
            elif i % 2:
                sock.sendall(hello[: len(hello) // 2])
            crowd.append((sock, started))
        time.sleep(0.15)
        during = open_fds(server.proc.pid)
        closed_after = []
        for sock, started in crowd:
            _, closed = read_to_eof(sock, timeout=4.0)
            closed_after.append(time.monotonic() - started)
            assert closed, "a stalled TLS handshake was not closed by the server"
            sock.close()
        # The server closes at about the 500 ms handshake timeout (timers may round up a little).
        assert min(closed_after) >= 0.4, f"closed too early: {closed_after}"
        assert max(closed_after) <= 2.5, f"closed too late: {closed_after}"

        deadline = time.monotonic() + 3
        after = open_fds(server.proc.pid)
        while after > baseline and time.monotonic() < deadline:
            time.sleep(0.05)
            after = open_fds(server.proc.pid)
        log_lines = len(server.log().splitlines()) - log_lines_before
    finally:
        bystander.stop()
    report(f"tls garbage {len(garbage_inputs)}, stalled {len(crowd)}: {log_lines} log lines, server fds {baseline} -> {during} -> {after}, "
           f"closed after {min(closed_after):.2f}-{max(closed_after):.2f}s; {bystander.summary()}")
    assert during - baseline >= len(crowd) - 2, (baseline, during)  # each stalled client held one socket...
    assert during - baseline <= len(crowd) + 2, (baseline, during)  # ...and no more than one
    assert after <= baseline, (baseline, after)
    assert log_lines <= len(garbage_inputs) + len(crowd), server.log_tail()  # one line per bad client at most
    bystander.assert_intact("during garbage and stalled TLS handshakes")
    assert server.proc.poll() is None


def test_client_that_aborts_the_tls_handshake_midway(guarded_server, pki):
    """A client that refuses our certificate (it trusts another CA) sends an alert and leaves."""
    server = guarded_server
    other_ca = TestPKI(server.log_path.parent / "other-ca")
    bystander = Bystander(server.port, ssl_context=pki.client_context()).start()
    try:
        for _ in range(10):
            with pytest.raises(ssl.SSLCertVerificationError):
                RawClient(server.port, ssl_context=other_ca.client_context())
    finally:
        bystander.stop()
    bystander.assert_intact("after 10 aborted TLS handshakes")


# --- start-up errors ---------------------------------------------------------


def _start_up_cases(pki, tmp_path):
    not_pem = tmp_path / "not-a-cert.pem"
    not_pem.write_text("this is not a PEM certificate\n")
    not_pem_key = tmp_path / "not-a-key.pem"
    not_pem_key.write_bytes(os.urandom(300))
    good_cert, good_key = pki.good
    return {  # case: (certificate, key, the file the message must name; None: both)
        "missing-cert": (tmp_path / "missing-cert.pem", good_key, tmp_path / "missing-cert.pem"),
        "missing-key": (good_cert, tmp_path / "missing-key.pem", tmp_path / "missing-key.pem"),
        "cert-is-a-directory": (tmp_path, good_key, tmp_path),
        "not-pem-cert": (not_pem, good_key, not_pem),
        "not-pem-key": (good_cert, not_pem_key, not_pem_key),
        "mismatched-key": (good_cert, pki.b[1], None),
        "expired": (pki.expired[0], pki.expired[1], pki.expired[0]),
        "not-yet-valid": (pki.future[0], pki.future[1], pki.future[0]),
        "key-given-as-cert": (good_key, good_key, good_key),
        "encrypted-key": (good_cert, pki.encrypted_key(good_key), good_key.with_name(good_key.stem + "-encrypted.pem")),
    }


START_UP_CASES = ["missing-cert", "missing-key", "cert-is-a-directory", "not-pem-cert", "not-pem-key",
                  "mismatched-key", "expired", "not-yet-valid", "key-given-as-cert", "encrypted-key"]


@pytest.mark.parametrize("case", START_UP_CASES)
@pytest.mark.parametrize("via", ["config", "flags"])
def test_bad_certificate_or_key_stops_start_up(tmp_path, pki, case, via):
    files = tmp_path / "files"
    files.mkdir()
    cert, key, name = _start_up_cases(pki, files)[case]
    if via == "config":
        code, stderr = run_until_exit(tmp_path / "run", SCRIPTS, tls_config(cert, key))
    else:
        code, stderr = run_until_exit(tmp_path / "run", SCRIPTS, {},
                                      extra_args=["--tls-cert", cert, "--tls-key", key])
    assert code == 2, f"{case}: exit code {code}; stderr:\n{stderr}"
    named = [cert, key] if name is None else [name]
    for path in named:
        assert str(path) in stderr, f"{case}: stderr does not name {path}:\n{stderr}"


def test_half_a_tls_config_stops_start_up(tmp_path, pki):
    cert, _ = pki.good
    code, stderr = run_until_exit(tmp_path, SCRIPTS, {"tls": {"certificate": str(cert)}})
    assert code == 2, stderr
    assert "tls" in stderr.lower() and "privateKey" in stderr, stderr
    code, stderr = run_until_exit(tmp_path / "flags", SCRIPTS, {}, extra_args=["--tls-cert", cert])
    assert code == 2, stderr
    assert "key" in stderr.lower(), stderr


# --- SIGHUP reload -----------------------------------------------------------


def install_pair(live_dir, pair):
    """Replace live_dir/cert.pem and live_dir/key.pem with ``pair`` (each by an atomic rename)."""
    for src, dest in zip(pair, ("cert.pem", "key.pem")):
        tmp = live_dir / f".{dest}.new"
        shutil.copyfile(src, tmp)
        os.replace(tmp, live_dir / dest)


async def serial_of_new_connection(server, pki) -> int:
    async with connect(server.wss_url("/echo"), ssl=pki.client_context()) as ws:
        await ws.send("serial?")
        assert await recv(ws) == "serial?"
        return peer_cert_serial(ws)


def new_connection_serials(server, pki, count: int = 6) -> list[int]:
    async def scenario():
        return [await serial_of_new_connection(server, pki) for _ in range(count)]
    return run(scenario())


def wait_for_serial(server, pki, wanted: int, timeout: float = 3.0) -> list[int]:
    """New connections until one sees ``wanted``; then ``count`` more must all see it."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        seen = new_connection_serials(server, pki, 1)
        if seen[0] == wanted:
            return new_connection_serials(server, pki)
        time.sleep(0.05)
    raise AssertionError(f"no new connection saw serial {wanted:#x} within {timeout}s; last {seen}")


def test_sighup_reloads_the_certificate_for_new_connections(wsgate, pki, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    install_pair(live, pki.a)
    server = wsgate(SCRIPTS, tls_config(live / "cert.pem", live / "key.pem"))
    assert set(new_connection_serials(server, pki)) == {SERIAL_A}

    async def scenario():
        async with connect(server.wss_url("/echo"), ssl=pki.client_context()) as old:
            await old.send("before")
            assert await recv(old) == "before"
            assert peer_cert_serial(old) == SERIAL_A

            install_pair(live, pki.b)
            server.proc.send_signal(signal.SIGHUP)
            await asyncio.to_thread(server.wait_for_log, "TLS certificate")
            serials = await asyncio.to_thread(wait_for_serial, server, pki, SERIAL_B)

            # The connection opened before the reload keeps its session and keeps echoing.
            for i in range(20):
                message = f"old connection {i}" * (1 + i * 50)
                await old.send(message)
                assert await recv(old) == message
            assert peer_cert_serial(old) == SERIAL_A
            return serials

    serials = run(scenario())
    assert set(serials) == {SERIAL_B}, [hex(s) for s in serials]
    assert not server.log_lines_with("not reloaded"), server.log_tail()
    status, _, body = https_get(server.port, "/api/v1/solution/health", pki.client_context())
    assert status == 200 and body.strip() == b"OK"


def test_sighup_with_a_broken_new_pair_keeps_the_old_certificate(wsgate, pki, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    install_pair(live, pki.a)
    server = wsgate(SCRIPTS, tls_config(live / "cert.pem", live / "key.pem"))
    bystander = Bystander(server.port, ssl_context=pki.client_context()).start()
    try:
        assert set(new_connection_serials(server, pki)) == {SERIAL_A}
        garbage_key = tmp_path / "garbage-key.pem"
        garbage_key.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
        broken_pairs = [
            ("garbage key", (pki.b[0], garbage_key)),
            ("mismatched key", (pki.b[0], pki.a[1])),
            ("expired certificate", pki.expired),
        ]
        for n, (label, pair) in enumerate(broken_pairs, start=1):
            install_pair(live, pair)
            server.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            while len(server.log_lines_with("TLS certificate not reloaded")) < n:
                assert time.monotonic() < deadline, f"{label}: no 'not reloaded' line:\n{server.log_tail()}"
                time.sleep(0.05)
            line = server.log_lines_with("TLS certificate not reloaded")[-1]
            assert "ERROR" in line, line
            assert server.proc.poll() is None, f"{label}: the gateway exited"
            assert set(new_connection_serials(server, pki)) == {SERIAL_A}, label

        # A good pair afterwards is taken.
        install_pair(live, pki.b)
        server.proc.send_signal(signal.SIGHUP)
        assert set(wait_for_serial(server, pki, SERIAL_B)) == {SERIAL_B}
    finally:
        bystander.stop()
    bystander.assert_intact("through three refused reloads and one good one")
    report("SIGHUP: garbage key, mismatched key and expired certificate refused; "
           + " | ".join(server.log_lines_with("TLS certificate not reloaded")))


def test_wss_client_on_the_plain_port_is_closed_at_once(wsgate, pki):
    """A TLS ClientHello on a ws:// port is not an HTTP request: the socket is closed and logged
    right away, not held until limits.handshakeTimeoutMs."""
    server = wsgate(SCRIPTS, config={"rateLimit": NO_RATE_LIMIT, "limits": {"handshakeTimeoutMs": 30000}})
    started = time.monotonic()
    with socket.create_connection((HOST, server.port), timeout=5) as sock:
        sock.sendall(client_hello(pki))
        answer, closed = read_to_eof(sock)
    assert closed and answer == b""
    assert time.monotonic() - started < 3
    server.wait_for_log("TLS handshake on the plain port")
