// libFuzzer target for the client role of the opening handshake: the HTTP/1.1 response-head
// parser and ClientHandshake.problem(with:key:) on what a server sends back, WebSocketURL.parse,
// the upgrade request ClientHandshake.request(url:key:headers:) writes, and the user-header
// filter ClientHandshake.headerProblem(name:value:).
//
// Built by Fuzz/run.sh together with Sources/WebSocketCodec/*.swift into a single module
// (-parse-as-library, libFuzzer supplies main), so the codec is used without an import.
// Every invariant is a precondition: a violation is a crash that libFuzzer records.
//
// Strings are compared as UTF-8 bytes (`same`), not with String ==, which is Unicode canonical
// equivalence: "\u{212A}" (KELVIN SIGN) == "K", but on the wire they are different bytes.

/// The RFC 6455 section 1.3 example key, and its accept value from the RFC.
private let key = "dGhlIHNhbXBsZSBub25jZQ=="
private let expectedAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

// MARK: - References (slow and obvious)

/// Reference for `HTTPRequestParser.headEnd`: the offset just past the first CRLFCRLF, by plain search.
private func referenceHeadEnd(_ bytes: UnsafeRawBufferPointer) -> Int? {
    guard bytes.count >= 4 else { return nil }
    for i in 3..<bytes.count
    where bytes[i - 3] == 0x0D && bytes[i - 2] == 0x0A && bytes[i - 1] == 0x0D && bytes[i] == 0x0A {
        return i + 1
    }
    return nil
}

private func same(_ a: String, _ b: String) -> Bool { a.utf8.elementsEqual(b.utf8) }

/// RFC 9110 token: 1*tchar.
private func isToken(_ s: String) -> Bool {
    !s.isEmpty && s.utf8.allSatisfy { b in
        (b >= 0x30 && b <= 0x39) || (b | 0x20 >= 0x61 && b | 0x20 <= 0x7A) || "!#$%&'*+-.^_`|~".utf8.contains(b)
    }
}

private func isBlank(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 }

/// RFC 9110 5.6.3: OWS is spaces and tabs, as bytes.
private func trimmedOWS(_ s: String) -> String {
    let bytes = Array(s.utf8)
    guard let first = bytes.firstIndex(where: { !isBlank($0) }), let last = bytes.lastIndex(where: { !isBlank($0) }) else {
        return ""
    }
    return String(decoding: bytes[first...last], as: UTF8.self)
}

private func asciiLower(_ s: String) -> String {
    String(decoding: s.utf8.map { $0 >= 0x41 && $0 <= 0x5A ? $0 + 0x20 : $0 }, as: UTF8.self)
}

/// Checked once, on the first input: makeKey is random, and the rest of the target is deterministic.
private let makeKeyChecked: Bool = {
    for _ in 0..<4 {
        let fresh = ClientHandshake.makeKey()
        precondition(fresh.utf8.count == 24 && Base64.decode(fresh)?.count == 16, "makeKey is not base64 of 16 bytes")
    }
    return true
}()

// MARK: - The server's response, as the client reads it

private func exercise(_ head: HTTPResponseHead) {
    precondition((100...999).contains(head.status), "status \(head.status) is not three digits 100-999")
    precondition(head.version.utf8.starts(with: "HTTP/".utf8), "version without HTTP/ accepted")
    precondition(!head.version.utf8.contains(0x20), "version contains a space")

    for field in head.headers {
        precondition(isToken(field.name), "header name \(field.name.debugDescription) is not a token")
        precondition(same(field.name, asciiLower(field.name)), "header name not lower-cased")
        precondition(same(field.value, trimmedOWS(field.value)), "header value \(field.value.debugDescription) not trimmed")
        guard let first = head.header(field.name) else { preconditionFailure("header(name) misses a present field") }
        let firstField = head.headers.first { same($0.name, field.name) }!
        precondition(same(first, firstField.value), "header(name) is not the first field of that name")
    }
    for (name, token) in [("connection", "upgrade"), ("upgrade", "websocket"), ("sec-websocket-protocol", "chat"),
                          ("sec-websocket-extensions", "permessage-deflate")] {
        _ = head.headerContainsToken(name, token)
    }

    for offered in [[], ["chat"], ["chat", "superchat"]] {
        guard let problem = ClientHandshake.problem(with: head, key: key, offeredProtocols: offered) else {
            precondition(head.status == 101, "upgrade accepted with status \(head.status)")
            precondition(head.headerContainsToken("upgrade", "websocket"), "upgrade accepted without Upgrade: websocket")
            precondition(head.headerContainsToken("connection", "upgrade"), "upgrade accepted without Connection: upgrade")
            guard let accept = head.header("sec-websocket-accept") else {
                preconditionFailure("upgrade accepted without Sec-WebSocket-Accept")
            }
            precondition(same(accept, expectedAccept) && same(accept, Handshake.acceptValue(forKey: key)),
                         "upgrade accepted with Sec-WebSocket-Accept \(accept.debugDescription)")
            // Repeated fields count as one comma-joined list (RFC 9110 5.3): every one of them matters.
            for field in head.headers where field.name == "sec-websocket-accept" {
                precondition(same(field.value, expectedAccept), "upgrade accepted with a second, wrong Sec-WebSocket-Accept")
            }
            // No extension was offered; an empty Sec-WebSocket-Extensions names none.
            for field in head.headers where field.name == "sec-websocket-extensions" {
                precondition(field.value.isEmpty, "upgrade accepted with the extension \(field.value.debugDescription), never offered")
            }
            // At most one subprotocol, and one that was offered.
            let protocols = head.headers.filter { $0.name == "sec-websocket-protocol" }.map(\.value)
            for chosen in protocols {
                precondition(offered.contains { same($0, chosen) },
                             "upgrade accepted with the subprotocol \(chosen.debugDescription), offered: \(offered)")
                precondition(same(chosen, protocols[0]), "upgrade accepted with two subprotocols \(protocols)")
            }
            continue
        }
        precondition(!problem.isEmpty, "empty problem description")
    }
}

private func parseResponse(_ bytes: UnsafeRawBufferPointer) {
    if case .success(let head) = HTTPResponseParser.parse(bytes) {
        exercise(head)
    }
}

// MARK: - The URL and the upgrade request

/// Parses `request` back the way the gateway's own server would, and checks it is the upgrade for `url`
/// with `extra` (name, expected value) present.
private func checkRequest(_ request: [UInt8], url: WebSocketURL, extra: (name: String, value: String)?) {
    let end = request.withUnsafeBytes { HTTPRequestParser.headEnd($0) }
    precondition(end == request.count, "the request does not end with exactly one blank line")
    guard case .success(let head) = request.withUnsafeBytes({ HTTPRequestParser.parse($0) }) else {
        preconditionFailure("the request does not parse: \(String(decoding: request, as: UTF8.self).debugDescription)")
    }
    precondition(same(head.method, "GET") && same(head.version, "HTTP/1.1"), "the request is not GET ... HTTP/1.1")
    precondition(same(head.target, url.requestTarget), "request target \(head.target) != \(url.requestTarget)")
    precondition(head.header("host").map { same($0, url.hostHeader) } == true, "Host is not url.hostHeader")
    precondition(Handshake.evaluate(head) == .upgrade(key: key), "the server would not accept the request: \(Handshake.evaluate(head))")
    precondition(head.header("sec-websocket-key").map { same($0, key) } == true, "Sec-WebSocket-Key is not the key used")
    if let extra {
        let name = asciiLower(extra.name)
        guard let value = head.header(name) else { preconditionFailure("header \(name) lost in the request") }
        precondition(same(value, trimmedOWS(extra.value)),
                     "header \(name): \(extra.value.debugDescription) came back as \(value.debugDescription)")
    }
}

private func checkURL(_ text: String) {
    guard case .success(let url) = WebSocketURL.parse(text) else { return }
    precondition(url.port != 0, "port 0 accepted")
    precondition(!url.host.isEmpty, "empty host accepted")
    precondition(url.host.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && !($0 >= 0x41 && $0 <= 0x5A) },
                 "host \(url.host.debugDescription) is not printable lower-case ASCII")
    precondition(url.requestTarget.utf8.first == UInt8(ascii: "/"), "request target does not start with /")
    precondition(!url.requestTarget.utf8.contains(UInt8(ascii: "#")), "request target has a fragment")
    precondition(!url.requestTarget.utf8.contains { $0 <= 0x20 || $0 >= 0x7F }, "request target has a blank, a control or non-ASCII")
    precondition(!url.hostHeader.utf8.contains { $0 == 0x20 || $0 == 0x0D || $0 == 0x0A }, "Host header with a space, CR or LF")
    if url.host.contains(":") {
        precondition(url.isIPLiteral && url.hostHeader.hasPrefix("["), "IPv6 host not bracketed in Host")
    }

    let description = url.description
    guard case .success(let again) = WebSocketURL.parse(description) else {
        preconditionFailure("description \(description) does not parse")
    }
    precondition(again == url && same(again.host, url.host) && same(again.requestTarget, url.requestTarget),
                 "\(description) parses to \(again), not \(url)")
    precondition(same(again.description, description), "description is not stable")

    checkRequest(ClientHandshake.request(url: url, key: key, headers: []), url: url, extra: nil)
    let extra = (name: "X-Client", value: "fuzz")
    checkRequest(ClientHandshake.request(url: url, key: key, headers: [extra]), url: url, extra: extra)
}

// MARK: - User headers

private let fixedURL = try! WebSocketURL.parse("ws://gw.example.com:8080/chat?room=1").get()

private func checkHeader(name: String, value: String) {
    guard let problem = ClientHandshake.headerProblem(name: name, value: value) else {
        precondition(isToken(name), "header name \(name.debugDescription) is not a token")
        precondition(!value.utf8.contains { $0 == 0x0D || $0 == 0x0A || $0 == 0x00 }, "header value with CR, LF or NUL accepted")
        let reserved = ["host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version", "sec-websocket-accept",
                        "sec-websocket-extensions", "content-length", "transfer-encoding"]
        precondition(!reserved.contains(asciiLower(name)), "reserved header \(name) accepted")
        checkRequest(ClientHandshake.request(url: fixedURL, key: key, headers: [(name, value)]), url: fixedURL, extra: (name, value))
        return
    }
    precondition(!problem.isEmpty, "empty header problem")
}

// MARK: - Entry point

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    precondition(makeKeyChecked)
    let input = UnsafeRawBufferPointer(start: data, count: size)

    // The client reads the server's answer up to the blank line; frames may follow it.
    let end = HTTPRequestParser.headEnd(input)
    precondition(end == referenceHeadEnd(input), "headEnd disagrees with a plain search for CRLFCRLF")
    if let end {
        precondition(end >= 4 && end <= size, "headEnd out of range")
        parseResponse(UnsafeRawBufferPointer(rebasing: input[..<end]))
    }
    parseResponse(input)

    let text = String(decoding: input, as: UTF8.self)
    checkURL(text)
    checkURL("ws://" + text)

    // A header given by a script: name up to the first colon, the rest is the value.
    if let colon = input.firstIndex(of: UInt8(ascii: ":")) {
        checkHeader(name: String(decoding: input[..<colon], as: UTF8.self),
                    value: String(decoding: input[(colon + 1)...], as: UTF8.self))
    } else {
        checkHeader(name: text, value: "")
    }
    return 0
}
