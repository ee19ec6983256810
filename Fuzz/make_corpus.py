#!/usr/bin/env python3
"""Writes the seed corpora Fuzz/corpus/http/*, Fuzz/corpus/frames/*, Fuzz/corpus/client/* and
Fuzz/corpus/response/*.

The seeds are committed; this script documents what each one is and regenerates them byte for byte:
    python3 Fuzz/make_corpus.py
It only rewrites the files it knows and leaves everything else (e.g. regressions/) alone.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # the RFC 6455 section 1.3 example key
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # its Sec-WebSocket-Accept (RFC 6455 section 1.3)


def write(kind, name, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory = os.path.join(HERE, "corpus", kind)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def request(lines, target="/chat", method="GET", version="HTTP/1.1"):
    return f"{method} {target} {version}\r\n" + "".join(line + "\r\n" for line in lines) + "\r\n"


UPGRADE = [
    "Host: server.example.com",
    "Upgrade: websocket",
    "Connection: Upgrade",
    f"Sec-WebSocket-Key: {KEY}",
    "Sec-WebSocket-Version: 13",
]


def http_seeds():
    write("http", "01-valid-upgrade", request(UPGRADE + ["Origin: http://example.com"]))
    write("http", "02-upgrade-with-query", request(
        UPGRADE + ["Sec-WebSocket-Protocol: chat, superchat"],
        target="/rooms/lobby%20one?token=a%2Bb%3D&user=J%C3%BCrgen+M&flag&=empty&x=%zz&&last=1"))
    many = [
        "Host: gw.example.com:8080",
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        "Accept: */*",
        "Accept-Language: en-US,en;q=0.5",
        "Accept-Encoding: gzip, deflate, br",
        "Sec-WebSocket-Version: 13",
        "Origin: https://app.example.com",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
        f"Sec-WebSocket-Key: {KEY}",
        "DNT: 1",
        "Connection: keep-alive, Upgrade",
        "Cookie: session=abc123; theme=dark",
        "Sec-Fetch-Dest: empty",
        "Sec-Fetch-Mode: websocket",
        "Sec-Fetch-Site: same-origin",
        "Pragma: no-cache",
        "Cache-Control: no-cache",
        "Upgrade: websocket",
        "X-Forwarded-For: 203.0.113.7, 10.0.0.1",
        "X-Request-Id: 7f3c2a",
        "x-lower: value",
        "X-UPPER: VALUE",
        "X-Empty:",
        "X-Spaces:    padded\t ",
        "X-Dup: one",
        "X-Dup: two",
        "Sec-WebSocket-Key: c2Vjb25kIGtleSBpZ25vcmVk",
    ]
    write("http", "03-many-headers", request(many, target="/ws"))
    write("http", "04-plain-get", request(["Host: example.com", "Accept: text/html"], target="/healthz"))
    write("http", "05-bad-request-lines",
          "GET  HTTP/1.1\r\nHost: a\r\n\r\n"  # empty target; the rest is pipelined junk for the whole-input parse
          "GET /x HTTP/1.1 extra\r\n\r\nPOST\r\n\r\n get /lower http/1.1\r\n\r\n")
    write("http", "06-header-without-colon", request(UPGRADE + ["NoColonHere", " leading: space", "Bad Name: x"]))
    write("http", "07-bare-lf-and-split-crlf",
          "GET /lf HTTP/1.1\nHost: a\nUpgrade: websocket\n\n"
          "X-CR: a\rb\r\nX-LF: c\nd\r\n\r\r\n\n\r\n\r\n")
    write("http", "08-non-utf8",
          b"GET /caf\xe9 HTTP/1.1\r\nHost: ex\xff\xfeample\r\nX-Latin1: \xe0\xe9\xe8\r\n"
          b"X-Overlong: \xc0\xaf\r\nX-Surrogate: \xed\xa0\x80\r\n\r\n")
    write("http", "09-huge-header", request(
        UPGRADE + ["Cookie: " + ";".join(f"k{i}=v{'x' * 40}{i}" for i in range(180)), "X-After: end"]))
    write("http", "10-post-and-http10-upgrade",
          request(UPGRADE, method="POST") + request(UPGRADE, version="HTTP/1.0"))
    write("http", "11-wrong-version-and-keys", request([
        "Host: a", "Upgrade: WebSocket", "Connection: upgrade", "Sec-WebSocket-Version: 8",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZR==", "Sec-WebSocket-Key: short=="]))
    write("http", "12-obs-fold-and-tabs", request([
        "Host:\tbar", "Upgrade:\twebsocket\t", "Connection: Upgrade", "X-Folded: first",
        "\tcontinued", "Sec-WebSocket-Version: 13", f"Sec-WebSocket-Key:{KEY}"]))
    write("http", "13-unicode-headers", request([
        "Host: ünïcödé.example", "X-Ümlaut: ✓ ok", "Upgrade: websocket", "Connection: Upgrade",
        "Sec-WebSocket-Version: 13", f"Sec-WebSocket-Key: {KEY}"], target="/p%C3%A4th?q=%E2%9C%93"))
    write("http", "14-head-then-frame",
          request(UPGRADE).encode() + bytes([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58]))
    write("http", "15-truncated-head", "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\r")


def frame(opcode, payload=b"", fin=True, mask=b"\x37\xfa\x21\x3d", rsv=0, length=None, extended=None):
    """One frame; mask=None for unmasked. `length`/`extended` force a (possibly non-minimal) length encoding."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if mask is not None else 0
    if extended is None:
        extended = 0 if n < 126 else (16 if n <= 0xFFFF else 64)
    if extended == 0:
        head = bytes([b0, mbit | n])
    elif extended == 16:
        head = bytes([b0, mbit | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack(">Q", n)
    if mask is None:
        return head + payload
    return head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload))


TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def close(code, reason=b""):
    return struct.pack(">H", code) + reason


def frame_seeds():
    write("frames", "01-masked-text-7bit", frame(TEXT, b"Hello"))
    write("frames", "02-masked-binary-16bit", frame(BINARY, bytes(range(256)) * 2, mask=b"\x01\x02\x03\x04"))
    write("frames", "03-masked-binary-64bit", frame(BINARY, bytes(i * 7 & 0xFF for i in range(65536)), mask=b"\xa5\x5a\x0f\xf0"))
    write("frames", "04-masked-64bit-truncated", frame(BINARY, b"", length=70000)[:14] + b"partial")
    write("frames", "05-unmasked-server-frames",
          frame(TEXT, b"from server", mask=None) + frame(BINARY, b"\x00" * 300, mask=None)
          + frame(CLOSE, close(1001, b"going away"), mask=None))
    # "Hello, wörld": the two-byte ö is split across the second and third fragment, a ping in between.
    text = "Hello, wörld".encode()
    cut = text.index(b"\xc3") + 1
    write("frames", "06-fragmented-text-with-ping",
          frame(TEXT, text[:3], fin=False) + frame(CONT, text[3:cut], fin=False, mask=b"\x00\x00\x00\x00")
          + frame(PING, b"ping!") + frame(CONT, text[cut:]) + frame(PONG, b""))
    write("frames", "07-fragmented-binary",
          frame(BINARY, b"\x00\x01", fin=False) + frame(CONT, b"\x02" * 200, fin=False) + frame(CONT, b"", fin=True))
    write("frames", "08-ping-pong", frame(PING, b"x" * 125) + frame(PONG, b"pong"))
    write("frames", "09-close-1000-reason", frame(CLOSE, close(1000, "bye ✓".encode())))
    write("frames", "10-close-empty", frame(CLOSE, b""))
    write("frames", "11-close-one-byte", frame(CLOSE, b"\x03"))
    write("frames", "12-close-1005-invalid", frame(CLOSE, close(1005)))
    write("frames", "13-close-3000-4999", frame(CLOSE, close(4999, b"app")))
    write("frames", "14-close-invalid-utf8-reason", frame(CLOSE, close(1000, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited")))
    write("frames", "15-text-invalid-utf8",
          frame(TEXT, b"ok \xed\xa0\x80 surrogate") + frame(TEXT, b"\xc0\xaf overlong"))
    write("frames", "16-text-above-10ffff", frame(TEXT, b"\xf4\x90\x80\x80"))
    write("frames", "17-text-truncated-sequence-at-fin", frame(TEXT, b"abc\xe2\x82"))
    write("frames", "18-text-valid-multibyte", frame(TEXT, "κόσμε 𝄞 €".encode() * 3))
    write("frames", "19-rsv1-set", frame(TEXT, b"compressed?", rsv=4) + frame(TEXT, b"x", mask=None, rsv=4))
    write("frames", "20-reserved-opcode", frame(0x3, b"?") + frame(0xB, b""))
    write("frames", "21-fragmented-control", frame(PING, b"no", fin=False))
    write("frames", "22-control-126", frame(PING, b"p" * 126))
    write("frames", "23-nonminimal-16bit", frame(TEXT, b"short", extended=16))
    write("frames", "24-nonminimal-64bit", frame(BINARY, b"y" * 300, extended=64))
    write("frames", "25-64bit-high-bit", frame(BINARY, b"", length=1 << 63)[:14])
    write("frames", "26-64bit-over-limit", frame(BINARY, b"", length=(1 << 20) + 1)[:14])
    write("frames", "27-exactly-1mib-header", frame(BINARY, b"", length=1 << 20)[:14] + b"\x00" * 16)
    write("frames", "28-continuation-without-start", frame(CONT, b"orphan"))
    write("frames", "29-stream-mixed",
          frame(TEXT, b"one") + frame(BINARY, b"\xff\xfe") + frame(PING, b"")
          + frame(TEXT, "two ✓".encode(), mask=b"\xff\xff\xff\xff") + frame(CLOSE, close(1001, b"done"))
          + frame(TEXT, b"after close"))
    write("frames", "30-base64-key", KEY)


def response(lines, status="101 Switching Protocols", version="HTTP/1.1"):
    return f"{version} {status}\r\n" + "".join(line + "\r\n" for line in lines) + "\r\n"


SWITCHING = ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Accept: {ACCEPT}"]


def client_seeds():
    """ClientHandshakeFuzzer reads each input as a server's response, as a URL (also after "ws://")
    and as a script's header "name:value", so the seeds mix the three."""
    # Responses to the upgrade request sent with KEY (the key the fuzzer uses).
    write("client", "01-valid-101", response(SWITCHING))
    write("client", "02-101-mixed-case-and-lists", response([
        "Server: gw/1.0", "upgrade: WebSocket", "CONNECTION: keep-alive, Upgrade",
        f"sec-websocket-accept:   {ACCEPT}\t", "Sec-WebSocket-Protocol: chat", "X-Empty:"]))
    write("client", "03-101-then-frames",
          response(SWITCHING).encode() + frame(TEXT, b"hello", mask=None) + frame(PING, b"", mask=None))
    write("client", "04-101-with-extensions", response(SWITCHING + [
        "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_max_window_bits=10"]))
    write("client", "05-101-empty-and-repeated-extensions", response(SWITCHING + [
        "Sec-WebSocket-Extensions:", "Sec-WebSocket-Extensions: x-webkit-deflate-frame"]))
    write("client", "06-101-wrong-accept", response([
        "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo",
        "Sec-WebSocket-Accept: " + ACCEPT]))
    write("client", "07-101-missing-upgrade", response(["Connection: Upgrade", f"Sec-WebSocket-Accept: {ACCEPT}"]))
    write("client", "08-101-subprotocols", response(SWITCHING + [
        "Sec-WebSocket-Protocol: superchat", "Sec-WebSocket-Protocol: chat, superchat"]))
    write("client", "09-302-location", response([
        "Location: wss://other.example.com:8443/chat?x=1", "Content-Length: 0"], status="302 Found"))
    write("client", "10-307-without-location", response(["Content-Length: 0"], status="307 Temporary Redirect"))
    write("client", "11-404-with-body", response([
        "Content-Type: text/plain; charset=utf-8", "Content-Length: 10", "Connection: close"],
        status="404 Not Found") + "not found\n")
    write("client", "12-426-upgrade-required", response(
        ["Sec-WebSocket-Version: 13", "Upgrade: websocket"], status="426 Upgrade Required", version="HTTP/1.0"))
    write("client", "13-malformed-status-lines",
          "HTTP/1.1 1010 Too Long\r\n\r\n"
          "HTTP/1.1 10\r\n\r\nHTTP/1.1  101 Two Spaces\r\n\r\nhttp/1.1 101 lower\r\n\r\n"
          "HTTP/1.1 abc\r\n\r\nICY 200 OK\r\n\r\nHTTP/1.1 101\r\n\r\n")
    write("client", "14-status-without-reason", "HTTP/1.1 101\r\n" + "".join(l + "\r\n" for l in SWITCHING) + "\r\n")
    write("client", "15-bad-header-lines", response(SWITCHING + ["NoColon", " Leading: space", "Bad Name: x", "X-Folded: a", "\tb"]))
    write("client", "16-bare-lf-and-truncated",
          "HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: Upgrade\n\n"
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r")
    write("client", "17-unicode-headers", response([
        "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Accept: {ACCEPT}",
        "X-Umlaut: ✓ ök", "X-Combining: \u0301e\u0301 ", "Server: ünïcödé"], status="101 Schaltet um ✓"))
    write("client", "18-non-utf8", b"HTTP/1.1 101 \xe9t\xe9\r\nUpgrade: websocket\r\nX-Latin1: \xe0\xe9\r\n\r\n")

    # URLs: the input itself, and the input after "ws://".
    write("client", "20-url-ws", "ws://example.com/chat")
    write("client", "21-url-wss-port-query", "wss://API.Example.com:8443/v1/feed%20x?room=a%2Fb&x=1&&=y")
    write("client", "22-url-ipv6", "ws://[2001:DB8::1]:9000/socket")
    write("client", "23-url-ipv6-mapped-default-port", "wss://[::ffff:192.0.2.1]:443?only=query")
    write("client", "24-url-ipv4", "ws://127.0.0.1:80")
    write("client", "25-url-bad-schemes", "http://example.com/ ftp://x wss:/one-slash WS://UPPER/ 1ws://x")
    write("client", "26-url-bad-authority", "ws://user:pw@host:0/#frag")
    write("client", "27-url-bad-ipv6", "ws://[::1:8080/ ws://::1/ ws://[fe80::1%25eth0]/ ws://[::1]x/")
    write("client", "28-url-ports", "ws://h:65535 ws://h:65536 ws://h:00080/ ws://h:/ ws://h:8a/")
    write("client", "29-url-numeric-hosts", "ws://010.0.0.1/ ws://10.1/ ws://1.2.3.256/ ws://a_b-c.d../")
    write("client", "30-authority-only", "gw.example.com:8080/path?q=1")
    write("client", "31-authority-ipv6", "[::1]:8443")
    write("client", "32-url-non-ascii", "wss://bücher.example/päth")

    # Script headers: "name:value".
    write("client", "40-header-ok", "Authorization: Bearer abc.def.ghi")
    write("client", "41-header-reserved", "Sec-WebSocket-Key:" + KEY)
    write("client", "42-header-crlf-injection", "X-Inject: a\r\nHost: evil\r\n\r\n")
    write("client", "43-header-bad-name", "Bad Name(): v")
    write("client", "44-header-padded-value", "X-Pad: \t padded \t")
    write("client", "45-header-unicode-value", "X-Unicode: \u0301✓ ö")
    write("client", "46-header-tab-del", "X-Tab:a\tb\x7f")


GET, HEAD, CONNECT, POST = 0, 1, 2, 3


def body_seed(name, wire, method=GET, cut=32):
    """HTTPResponseFuzzer reads bytes 1... as a response to `method` (control bits 0-1) and as a request
    whose body follows its head, cut in two at `cut`/63 of the way (control bits 2-7)."""
    if isinstance(wire, str):
        wire = wire.encode("utf-8")
    write("response", name, bytes([(cut << 2) | method]) + wire)


OK = "HTTP/1.1 200 OK\r\n"


def chunked(*chunks, trailers=()):
    return "".join(f"{len(c):x}\r\n{c}\r\n" for c in chunks) + "0\r\n" + "".join(t + "\r\n" for t in trailers) + "\r\n"


def response_seeds():
    body_seed("01-content-length", OK + "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
    body_seed("02-chunked-extensions-trailers", OK + "Transfer-Encoding: chunked\r\n\r\n"
              "5;name=value\r\nhello\r\n0006 ; a=\"b;c\"\r\n world\r\n0\r\nX-Trailer: 1\r\nExpires: 0\r\n\r\n", cut=20)
    body_seed("03-chunked-and-content-length", OK + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked("abc"))
    body_seed("04-until-close", OK + "Connection: keep-alive\r\n\r\nthe body ends with the connection", cut=63)
    body_seed("05-gzip-final-coding", (OK + "Transfer-Encoding: chunked, gzip\r\n\r\n").encode() + b"\x1f\x8b\x08\x00")
    body_seed("06-interim-responses", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
              + OK + "Content-Length: 2\r\n\r\nok", cut=8)
    body_seed("07-101-then-frame", f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Accept: {ACCEPT}\r\n\r\n".encode() + frame(TEXT, b"hi", mask=None))
    body_seed("08-head-request", OK + "Content-Length: 1000\r\n\r\n", method=HEAD)
    body_seed("09-204-304-with-bytes", "HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc"
              "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n")
    body_seed("10-connect-tunnel", "HTTP/1.1 200 Connection Established\r\n\r\n\x16\x03\x01", method=CONNECT)
    body_seed("11-http10-keep-alive", "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nhi")
    body_seed("12-repeated-content-lengths", OK + "Content-Length: 4, 004\r\nContent-Length: 4\r\n\r\nbody")
    body_seed("13-conflicting-content-lengths", OK + "Content-Length: 4\r\nContent-Length: 5\r\n\r\nbody!")
    body_seed("14-bad-chunks", OK + "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n3\r\nabcX\r\n-1\r\n0x2\r\n\r\r\n")
    body_seed("15-chunk-size-overflow", OK + "Transfer-Encoding: chunked\r\n\r\n" + "0" * 20 + "FFFFFFFFFFFFFFFFF\r\n")
    body_seed("16-pipelined-responses", OK + "Content-Length: 1\r\n\r\nx" + OK + "Transfer-Encoding: chunked\r\n\r\n" + chunked("y"))
    body_seed("17-request-content-length", "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
              "GET /next HTTP/1.1\r\nHost: a\r\n\r\n", method=POST)
    body_seed("18-request-chunked", "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
              + chunked("hello", " world", trailers=["Digest: x"]) + "GET /next HTTP/1.1\r\n\r\n", method=POST, cut=40)
    body_seed("19-request-both-framings", "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked("smug"))
    body_seed("20-request-gzip-chunked", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + chunked("z"))
    body_seed("21-head-bare-lf", "HTTP/1.1 200 OK\nContent-Length: 1\n\nx")
    body_seed("22-body-over-limit", OK + "Content-Length: 300\r\n\r\n" + "b" * 300, cut=50)
    body_seed("23-empty-and-odd-codings", OK + "Transfer-Encoding: , \r\nTransfer-Encoding: Chunked;q=1\r\n\r\n" + chunked("ok"))
    body_seed("24-http10-transfer-encoding", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked("a"))
    body_seed("25-many-small-chunks", OK + "Transfer-Encoding: chunked\r\n\r\n" + chunked(*"abcdefghijklmnopqrstuvwxyz"), cut=1)


if __name__ == "__main__":
    http_seeds()
    frame_seeds()
    client_seeds()
    response_seeds()
