#!/usr/bin/env python3
"""Writes the seed corpora Fuzz/corpus/http/* and Fuzz/corpus/frames/*.

The seeds are committed; this script documents what each one is and regenerates them byte for byte:
    python3 Fuzz/make_corpus.py
It only rewrites the files it knows and leaves everything else (e.g. regressions/) alone.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # the RFC 6455 section 1.3 example key


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


if __name__ == "__main__":
    http_seeds()
    frame_seeds()
