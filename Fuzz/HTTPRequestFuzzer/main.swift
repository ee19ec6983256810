// libFuzzer target for the HTTP/1.1 request-head parser and the opening handshake.
//
// Built by Fuzz/run.sh together with Sources/WebSocketCodec/*.swift into a single module
// (-parse-as-library, libFuzzer supplies main), so the codec is used without an import.
// Every invariant is a precondition: a violation is a crash that libFuzzer records.

/// Reference for `HTTPRequestParser.headEnd`: the offset just past the first CRLFCRLF, by plain search.
private func referenceHeadEnd(_ bytes: UnsafeRawBufferPointer) -> Int? {
    guard bytes.count >= 4 else { return nil }
    for i in 3..<bytes.count
    where bytes[i - 3] == 0x0D && bytes[i - 2] == 0x0A && bytes[i - 1] == 0x0D && bytes[i] == 0x0A {
        return i + 1
    }
    return nil
}

private func isSpaceOrTab(_ c: Character) -> Bool { c == " " || c == "\t" }

/// Everything a server does with a parsed head, with the invariants the parser promises.
private func exercise(_ head: HTTPRequestHead) {
    precondition(!head.method.isEmpty, "empty method accepted")
    precondition(!head.target.isEmpty, "empty target accepted")
    precondition(head.version.utf8.starts(with: "HTTP/".utf8), "version without HTTP/ accepted")
    precondition(!head.method.contains(" ") && !head.target.contains(" ") && !head.version.contains(" "),
                 "request-line part contains a space")

    for field in head.headers {
        precondition(!field.name.isEmpty, "empty header name accepted")
        precondition(!field.name.contains(" ") && !field.name.contains("\t"), "header name with blank accepted")
        precondition(!field.name.contains(":"), "header name contains the colon")
        precondition(field.name == field.name.lowercased(), "header name not lower-cased")
        precondition(field.value.first.map { !isSpaceOrTab($0) } ?? true, "header value not trimmed (front)")
        precondition(field.value.last.map { !isSpaceOrTab($0) } ?? true, "header value not trimmed (back)")
        precondition(head.header(named: field.name) != nil, "header(name) misses a present field")
    }

    let path = head.path
    let query = head.query
    precondition(!path.contains("?"), "path contains '?'")
    if head.target.contains("?") {
        precondition(path + "?" + query == head.target, "path + ? + query != target")
    } else {
        precondition(path == head.target && query.isEmpty, "target without '?' has a query")
    }

    for item in URLComponentsDecoding.queryItems(query) {
        precondition(!item.name.isEmpty, "query item with an empty name")
    }
    let decodedPath = URLComponentsDecoding.percentDecode(path[...], plusAsSpace: false)
    if !path.contains("%") {
        precondition(decodedPath == path, "percentDecode changed a string without escapes")
    }

    for (name, token): (StaticString, StaticString) in [("connection", "upgrade"), ("upgrade", "websocket"), ("sec-websocket-protocol", "chat"),
                          ("sec-websocket-extensions", "permessage-deflate")] {
        _ = head.headerContainsToken(name, token)
    }

    switch Handshake.evaluate(head) {
    case .upgrade(let key):
        precondition(head.method == "GET" && head.version == "HTTP/1.1", "upgrade accepted for non GET HTTP/1.1")
        precondition(head.headerContainsToken("upgrade", "websocket"), "upgrade accepted without Upgrade: websocket")
        precondition(head.headerContainsToken("connection", "upgrade"), "upgrade accepted without Connection: upgrade")
        precondition(head.header("sec-websocket-version") == "13", "upgrade accepted for a version other than 13")
        precondition(head.header("sec-websocket-key") == key, "key is not the first Sec-WebSocket-Key")
        precondition(Base64.decode(key)?.count == 16, "upgrade accepted with a key that is not 16 bytes")
        let accept = Handshake.acceptValue(forKey: key)
        precondition(accept.utf8.count == 28 && Base64.decode(accept)?.count == 20, "accept value is not base64 of 20 bytes")
        let response = Handshake.switchingProtocols(key: key)
        let end = response.withUnsafeBytes { HTTPRequestParser.headEnd($0) }
        precondition(end == response.count, "101 response does not end with exactly one blank line")
    case .notUpgrade:
        precondition(!head.headerContainsToken("upgrade", "websocket") && head.header("sec-websocket-key") == nil,
                     "notUpgrade for a request that asks for an upgrade")
    case .badRequest(let reason):
        precondition(!reason.isEmpty, "badRequest without a reason")
    case .upgradeRequired:
        precondition(head.header("sec-websocket-version") != "13", "upgradeRequired for version 13")
    }
}

private func parseAndExercise(_ bytes: UnsafeRawBufferPointer) {
    if case .success(let head) = HTTPRequestParser.parse(bytes) {
        exercise(head)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)

    let end = HTTPRequestParser.headEnd(input)
    precondition(end == referenceHeadEnd(input), "headEnd disagrees with a plain search for CRLFCRLF")
    if let end {
        precondition(end >= 4 && end <= size, "headEnd out of range")
        precondition(input[end - 4] == 0x0D && input[end - 3] == 0x0A && input[end - 2] == 0x0D && input[end - 1] == 0x0A,
                     "head does not end with CRLFCRLF")
        parseAndExercise(UnsafeRawBufferPointer(rebasing: input[..<end]))
    }
    // A server may also be handed bytes that never contained a terminator, or a head followed by data.
    parseAndExercise(input)
    return 0
}
