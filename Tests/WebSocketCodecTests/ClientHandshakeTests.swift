import XCTest
import WebSocketCodec

private func url(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> WebSocketURL? {
    switch WebSocketURL.parse(text) {
    case .success(let parsed): return parsed
    case .failure(let error):
        XCTFail("\(text): \(error)", file: file, line: line)
        return nil
    }
}

private func urlError(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> String {
    switch WebSocketURL.parse(text) {
    case .success(let parsed):
        XCTFail("\(text) parsed as \(parsed)", file: file, line: line)
        return ""
    case .failure(let error): return error.message
    }
}

private func responseHead(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> HTTPResponseHead? {
    switch Array(text.utf8).withUnsafeBytes({ HTTPResponseParser.parse($0) }) {
    case .success(let head): return head
    case .failure(let error):
        XCTFail("\(text.debugDescription): \(error)", file: file, line: line)
        return nil
    }
}

private func responseError(_ text: String) -> HTTPParseError? {
    responseError(Array(text.utf8))
}

private func responseError(_ bytes: [UInt8]) -> HTTPParseError? {
    if case .failure(let error) = bytes.withUnsafeBytes({ HTTPResponseParser.parse($0) }) { return error }
    return nil
}

final class WebSocketURLTests: XCTestCase {
    func testDefaultPortsAndPaths() {
        guard let plain = url("ws://example.com"), let secure = url("wss://Example.COM/chat") else { return }
        XCTAssertEqual(plain, try WebSocketURL.parse("ws://example.com/").get())
        XCTAssertFalse(plain.secure)
        XCTAssertEqual(plain.host, "example.com")
        XCTAssertEqual(plain.port, 80)
        XCTAssertEqual(plain.requestTarget, "/")
        XCTAssertEqual(plain.hostHeader, "example.com")
        XCTAssertEqual(plain.description, "ws://example.com/")
        XCTAssertFalse(plain.isIPLiteral)

        XCTAssertTrue(secure.secure)
        XCTAssertEqual(secure.host, "example.com")
        XCTAssertEqual(secure.port, 443)
        XCTAssertEqual(secure.requestTarget, "/chat")
        XCTAssertEqual(secure.description, "wss://example.com/chat")

        // A default port given explicitly is still left out of Host.
        XCTAssertEqual(url("wss://example.com:443/")?.hostHeader, "example.com")
        XCTAssertEqual(url("ws://example.com:443/")?.hostHeader, "example.com:443")
    }

    func testSchemeIsCaseInsensitive() {
        XCTAssertEqual(url("WS://h/")?.secure, false)
        XCTAssertEqual(url("Wss://h/")?.secure, true)
    }

    func testExplicitPortQueryAndEscapes() {
        guard let parsed = url("ws://api.example.com:8080/v1/feed%20x?room=a%2Fb&x=1") else { return }
        XCTAssertEqual(parsed.port, 8080)
        XCTAssertEqual(parsed.requestTarget, "/v1/feed%20x?room=a%2Fb&x=1")
        XCTAssertEqual(parsed.hostHeader, "api.example.com:8080")
        XCTAssertEqual(parsed.description, "ws://api.example.com:8080/v1/feed%20x?room=a%2Fb&x=1")
        XCTAssertEqual(url("ws://h?x=1")?.requestTarget, "/?x=1")
        XCTAssertEqual(url("ws://h:1")?.port, 1)
        XCTAssertEqual(url("ws://h:65535")?.port, 65535)
    }

    func testIPLiterals() {
        guard let v4 = url("ws://127.0.0.1:9000/x"), let v6 = url("wss://[::1]/"), let v6Port = url("ws://[FE80::1]:8080") else { return }
        XCTAssertEqual(v4.host, "127.0.0.1")
        XCTAssertTrue(v4.isIPLiteral)
        XCTAssertEqual(v4.hostHeader, "127.0.0.1:9000")
        XCTAssertEqual(v6.host, "::1")
        XCTAssertTrue(v6.isIPLiteral)
        XCTAssertEqual(v6.port, 443)
        XCTAssertEqual(v6.hostHeader, "[::1]")
        XCTAssertEqual(v6.description, "wss://[::1]/")
        XCTAssertEqual(v6Port.host, "fe80::1")
        XCTAssertEqual(v6Port.hostHeader, "[fe80::1]:8080")
        XCTAssertEqual(url("ws://1.2.3.4.example/")?.isIPLiteral, false)
    }

    func testSchemeErrors() {
        XCTAssertEqual(urlError("http://example.com/"), "unsupported scheme \"http\": only ws:// and wss:// are allowed")
        XCTAssertEqual(urlError("HTTPS://example.com/"), "unsupported scheme \"HTTPS\": only ws:// and wss:// are allowed")
        for text in ["example.com", "example.com:80/x", "//example.com/", "ws:example.com", "ws:/example.com", "", "://x", "1ws://x"] {
            XCTAssertEqual(urlError(text), "not a ws:// or wss:// URL", text)
        }
    }

    func testHostAndPortErrors() {
        let cases: [(String, String)] = [
            ("ws://", "the URL has no host"),
            ("ws:///path", "the URL has no host"),
            ("ws://:80/", "the URL has no host"),
            ("ws://h:/", "no port number after \":\""),
            ("ws://h:0/", "port 0 is out of range (1-65535)"),
            ("ws://h:65536/", "port 65536 is out of range (1-65535)"),
            ("ws://h:99999999999999999999/", "port 99999999999999999999 is out of range (1-65535)"),
            ("ws://h:8o/", "invalid port \"8o\""),
            ("ws://h:-1/", "invalid port \"-1\""),
            ("ws://user@h/", "user information (\"user@\") is not allowed in the URL"),
            ("ws://user:pw@h:80/", "user information (\"user@\") is not allowed in the URL"),
            ("ws://::1/", "an IPv6 address must be in brackets, as in ws://[::1]:8080/"),
            ("ws://[::1/", "the IPv6 address has no closing \"]\""),
            ("ws://[::g]/", "invalid IPv6 address \"::g\""),
            ("ws://[127.0.0.1]/", "invalid IPv6 address \"127.0.0.1\""),
            ("ws://[::1]x/", "unexpected \"x\" after the IPv6 address"),
            ("ws://[::1]:/", "no port number after \":\""),
            ("ws://exa%6Dple.com/", "invalid character \"%\" in the host \"exa%6Dple.com\""),
            ("ws://exa!mple.com/", "invalid character \"!\" in the host \"exa!mple.com\""),
            ("ws://256.1.1.1/", "invalid IPv4 address \"256.1.1.1\""),
            ("ws://10.1/", "invalid IPv4 address \"10.1\""),
            ("ws://010.0.0.1/", "invalid IPv4 address \"010.0.0.1\""),
        ]
        for (text, message) in cases {
            XCTAssertEqual(urlError(text), message, text)
        }
    }

    func testCharacterAndFragmentErrors() {
        for text in ["ws://example.com/a b", "ws://exa mple.com/", "ws://h/\t", "ws://h/x\r\nHost: evil", "ws://h/\u{0}", "ws://h/\u{7F}"] {
            XCTAssertEqual(urlError(text), "the URL contains a space or a control character", text.debugDescription)
        }
        XCTAssertTrue(urlError("ws://h/é").hasPrefix("the URL contains non-ASCII characters"))
        XCTAssertTrue(urlError("ws://bücher.example/").hasPrefix("the URL contains non-ASCII characters"))
        XCTAssertEqual(urlError("ws://h/chat#top"), "WebSocket URLs cannot have a fragment (\"#...\")")
        XCTAssertEqual(urlError("ws://h#"), "WebSocket URLs cannot have a fragment (\"#...\")")
    }
}

final class ClientHandshakeTests: XCTestCase {
    private let key = "dGhlIHNhbXBsZSBub25jZQ=="

    func testKeysAreSixteenRandomBytes() {
        let keys = (0..<32).map { _ in ClientHandshake.makeKey() }
        for key in keys { XCTAssertEqual(Base64.decode(key)?.count, 16, key) }
        XCTAssertEqual(Set(keys).count, keys.count)
    }

    func testRandomMaskKeysDiffer() {
        let keys = (0..<32).map { _ in Masking.randomKey() }
        XCTAssertGreaterThan(Set(keys).count, 30)
    }

    func testRequestBytes() throws {
        let target = try WebSocketURL.parse("wss://[::1]:9443/feed?x=1").get()
        let bytes = ClientHandshake.request(url: target, key: key, headers: [("Origin", "https://app.example"), ("X-Token", "a b")])
        XCTAssertEqual(String(decoding: bytes, as: UTF8.self),
                       "GET /feed?x=1 HTTP/1.1\r\n" +
                       "Host: [::1]:9443\r\n" +
                       "Upgrade: websocket\r\n" +
                       "Connection: Upgrade\r\n" +
                       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
                       "Sec-WebSocket-Version: 13\r\n" +
                       "Origin: https://app.example\r\n" +
                       "X-Token: a b\r\n" +
                       "\r\n")
    }

    func testOurRequestPassesTheServerHandshake() throws {
        let bytes = ClientHandshake.request(url: try WebSocketURL.parse("ws://example.com/chat").get(), key: key, headers: [])
        XCTAssertEqual(bytes.withUnsafeBytes { HTTPRequestParser.headEnd($0) }, bytes.count)
        let head = try bytes.withUnsafeBytes { HTTPRequestParser.parse($0) }.get()
        XCTAssertEqual(Handshake.evaluate(head), .upgrade(key: key))
        XCTAssertEqual(head.header("host"), "example.com")
        XCTAssertEqual(head.target, "/chat")
    }

    func testHeaderProblem() {
        XCTAssertNil(ClientHandshake.headerProblem(name: "Origin", value: "https://app.example"))
        XCTAssertNil(ClientHandshake.headerProblem(name: "Sec-WebSocket-Protocol", value: "chat, superchat"))
        XCTAssertNil(ClientHandshake.headerProblem(name: "Authorization", value: "Bearer x\ty"))
        XCTAssertNil(ClientHandshake.headerProblem(name: "X-Empty", value: ""))
        XCTAssertNil(ClientHandshake.headerProblem(name: "X-Unicode", value: "héllo"))

        XCTAssertEqual(ClientHandshake.headerProblem(name: "Bad Name", value: "x"), "header name \"Bad Name\" is not a valid HTTP token")
        XCTAssertEqual(ClientHandshake.headerProblem(name: "", value: "x"), "header name \"\" is not a valid HTTP token")
        XCTAssertEqual(ClientHandshake.headerProblem(name: "X:Y", value: "x"), "header name \"X:Y\" is not a valid HTTP token")
        XCTAssertNotNil(ClientHandshake.headerProblem(name: "X-Ünï", value: "x"))
        for value in ["a\r\nHost: evil", "a\nb", "a\rb", "a\u{0}b", "a\u{1}b", "a\u{7F}"] {
            XCTAssertEqual(ClientHandshake.headerProblem(name: "X-A", value: value),
                           "header \"X-A\" has a control character (CR, LF, NUL...) in its value", value.debugDescription)
        }
        for name in ["Host", "upgrade", "CONNECTION", "Sec-WebSocket-Key", "sec-websocket-version", "Sec-WebSocket-Accept",
                     "Sec-WebSocket-Extensions", "Content-Length", "Transfer-Encoding"] {
            XCTAssertEqual(ClientHandshake.headerProblem(name: name, value: "x"), "header \"\(name)\" is set by the WebSocket handshake itself")
        }
    }

    /// A response to `key`; nil leaves a header out, except `accept`: nil is the right value, "" none.
    private func response(status: String = "101 Switching Protocols", _ extra: [String] = [],
                          upgrade: String? = "websocket", connection: String? = "Upgrade", accept: String? = nil) -> HTTPResponseHead? {
        var lines = ["HTTP/1.1 \(status)"]
        if let upgrade { lines.append("Upgrade: \(upgrade)") }
        if let connection { lines.append("Connection: \(connection)") }
        let acceptValue = accept ?? Handshake.acceptValue(forKey: key)
        if !acceptValue.isEmpty { lines.append("Sec-WebSocket-Accept: \(acceptValue)") }
        return responseHead((lines + extra).joined(separator: "\r\n") + "\r\n\r\n")
    }

    private func problem(_ head: HTTPResponseHead?, offered: [String] = []) -> String? {
        guard let head else { return "no head" }
        return ClientHandshake.problem(with: head, key: key, offeredProtocols: offered)
    }

    func testAcceptedUpgrade() {
        XCTAssertEqual(Handshake.acceptValue(forKey: key), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        XCTAssertNil(problem(response()))
        // The server's own 101 is accepted as it is.
        XCTAssertNil(problem(responseHead(String(decoding: Handshake.switchingProtocols(key: key), as: UTF8.self))))
        XCTAssertNil(problem(response(upgrade: "WebSocket", connection: "keep-alive, upgrade")))
        XCTAssertNil(problem(response(["Sec-WebSocket-Protocol: chat"]), offered: ["superchat", "chat"]))
        XCTAssertNil(problem(response(["Sec-WebSocket-Extensions: "])))
    }

    func testWrongAccept() {
        XCTAssertEqual(problem(response(accept: "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")),
                       "Sec-WebSocket-Accept \"AAAAAAAAAAAAAAAAAAAAAAAAAAA=\" does not match the key sent")
        XCTAssertEqual(problem(response(accept: "")), "the response has no Sec-WebSocket-Accept")
        let other = ClientHandshake.makeKey()
        XCTAssertNotNil(problem(response(accept: Handshake.acceptValue(forKey: other))))
    }

    func testMissingUpgradeOrConnection() {
        XCTAssertEqual(problem(response(upgrade: nil)), "the response has no \"Upgrade: websocket\"")
        XCTAssertEqual(problem(response(upgrade: "h2c")), "the response has no \"Upgrade: websocket\"")
        XCTAssertEqual(problem(response(connection: nil)), "the response has no \"Connection: Upgrade\"")
        XCTAssertEqual(problem(response(connection: "keep-alive")), "the response has no \"Connection: Upgrade\"")
    }

    func testRedirectsAndBadStatus() {
        XCTAssertEqual(problem(responseHead("HTTP/1.1 302 Found\r\nLocation: wss://other.example/chat\r\n\r\n")),
                       "redirect to wss://other.example/chat not followed")
        XCTAssertEqual(problem(responseHead("HTTP/1.1 301 Moved Permanently\r\nLocation: /new\r\n\r\n")), "redirect to /new not followed")
        XCTAssertEqual(problem(responseHead("HTTP/1.1 307 Temporary Redirect\r\n\r\n")),
                       "redirect (307 Temporary Redirect) without a Location not followed")
        XCTAssertEqual(problem(responseHead("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")), "bad status 404 Not Found")
        XCTAssertEqual(problem(responseHead("HTTP/1.1 403\r\n\r\n")), "bad status 403")
        XCTAssertEqual(problem(response(status: "200 OK")), "bad status 200 OK")
    }

    func testUnexpectedExtensionOrSubprotocol() {
        XCTAssertEqual(problem(response(["Sec-WebSocket-Extensions: permessage-deflate"])),
                       "the server chose the extension \"permessage-deflate\", which was not offered")
        XCTAssertEqual(problem(response(["Sec-WebSocket-Protocol: chat"])),
                       "the server chose the subprotocol \"chat\", which was not offered")
        XCTAssertEqual(problem(response(["Sec-WebSocket-Protocol: Chat"]), offered: ["chat"]),
                       "the server chose the subprotocol \"Chat\", which was not offered")
    }
}

final class HTTPResponseParserTests: XCTestCase {
    func testParseSwitchingProtocols() {
        let text = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nCONNECTION:  Upgrade \r\nX-A: 1\r\nx-a: 2\r\n\r\n"
        guard let head = responseHead(text) else { return }
        XCTAssertEqual(head.version, "HTTP/1.1")
        XCTAssertEqual(head.status, 101)
        XCTAssertEqual(head.reason, "Switching Protocols")
        XCTAssertEqual(head.headers.map { $0.name }, ["upgrade", "connection", "x-a", "x-a"])
        XCTAssertEqual(head.header("connection"), "Upgrade")
        XCTAssertEqual(head.header("x-a"), "1")
        XCTAssertNil(head.header("Upgrade"), "lookups use lower-case names")
        XCTAssertTrue(head.headerContainsToken("connection", "upgrade"))
        XCTAssertFalse(head.headerContainsToken("connection", "close"))
    }

    func testReasonPhraseForms() {
        XCTAssertEqual(responseHead("HTTP/1.1 404 Not Found Here\r\n\r\n")?.reason, "Not Found Here")
        XCTAssertEqual(responseHead("HTTP/1.1 404 \r\n\r\n")?.reason, "")
        XCTAssertEqual(responseHead("HTTP/1.1 404\r\n\r\n")?.reason, "")
        XCTAssertEqual(responseHead("HTTP/1.0 200 OK\r\n\r\n")?.version, "HTTP/1.0")
    }

    func testMalformedResponses() {
        XCTAssertEqual(responseError("\r\n\r\n"), .malformed("bad HTTP version"))
        XCTAssertEqual(responseError("ICY 200 OK\r\n\r\n"), .malformed("bad HTTP version"))
        XCTAssertEqual(responseError("HTTP/1.1\r\n\r\n"), .malformed("bad status line"))
        XCTAssertEqual(responseError("HTTP/1.1 20 OK\r\n\r\n"), .malformed("bad status line"))
        XCTAssertEqual(responseError("HTTP/1.1 2000 OK\r\n\r\n"), .malformed("bad status line"))
        XCTAssertEqual(responseError("HTTP/1.1 +10 OK\r\n\r\n"), .malformed("bad status line"))
        XCTAssertEqual(responseError("HTTP/1.1  101 OK\r\n\r\n"), .malformed("bad status line"))
        XCTAssertEqual(responseError("HTTP/1.1 101 OK\r\nUpgrade websocket\r\n\r\n"), .malformed("header line without colon"))
        XCTAssertEqual(responseError("HTTP/1.1 101 OK\r\nBad Name: x\r\n\r\n"), .malformed("bad header name"))
        let bytes = Array("HTTP/1.1 101 OK\r\nX: ".utf8) + [0xFF] + Array("\r\n\r\n".utf8)
        XCTAssertEqual(responseError(bytes), .malformed("response head is not UTF-8"))
    }
}

final class ClientFrameTests: XCTestCase {
    private func parse(_ bytes: [UInt8], role: Role) -> FrameParseResult {
        bytes.withUnsafeBytes { FrameDecoder.parseHeader($0, role: role, maxPayload: 1 << 20) }
    }

    func testClientRejectsMaskedServerFrames() {
        let key = Masking.randomKey()
        for (opcode, length) in [(Opcode.text, 5), (.binary, 300), (.binary, 70_000), (.ping, 0), (.close, 2)] {
            var frame = [UInt8](repeating: 0, count: FrameEncoder.headerLength(payloadLength: length, masked: true))
            frame.withUnsafeMutableBytes { _ = FrameEncoder.writeHeader(to: $0.baseAddress!, opcode: opcode, payloadLength: length, maskKey: key) }
            XCTAssertEqual(parse(frame, role: .client), .failure(.protocolError, "server frame masked"), "\(opcode) \(length)")
        }
    }

    /// What a client sends: header with a fresh key, then the payload masked with it; the server
    /// side decodes and unmasks it back.
    func testMaskedFrameRoundTrip() {
        for length in [0, 1, 5, 125, 126, 1000, 65535, 65536, 100_000] {
            let payload = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
            let key = Masking.randomKey()
            let headerLength = FrameEncoder.headerLength(payloadLength: length, masked: true)
            var frame = [UInt8](repeating: 0, count: headerLength + length)
            frame.withUnsafeMutableBytes { raw in
                let written = FrameEncoder.writeHeader(to: raw.baseAddress!, opcode: .binary, payloadLength: length, maskKey: key)
                XCTAssertEqual(written, headerLength)
                payload.withUnsafeBytes { raw.baseAddress!.advanced(by: written).copyMemory(from: $0.baseAddress!, byteCount: length) }
                Masking.apply(key, to: UnsafeMutableRawBufferPointer(rebasing: raw[written...]))
            }
            guard case .header(let header) = parse(frame, role: .server) else {
                XCTFail("length \(length): no header")
                continue
            }
            XCTAssertEqual(header.opcode, .binary)
            XCTAssertEqual(header.maskKey, key)
            XCTAssertEqual(header.payloadLength, length)
            XCTAssertEqual(header.frameLength, frame.count)
            var received = Array(frame[header.headerLength...])
            received.withUnsafeMutableBytes { Masking.apply(header.maskKey!, to: $0) }
            XCTAssertEqual(received, payload, "length \(length)")
        }
    }
}
