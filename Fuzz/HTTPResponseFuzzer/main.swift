// libFuzzer target for HTTP/1.1 message bodies: HTTPResponseReader on the bytes as a server's
// response, HTTPRequestBodyReader on the body after the bytes' request head, and the chunked
// decoder both share on a body the target encodes itself.
//
// Input: byte 0 is the control byte: bits 0-1 choose the request method the response answers
// (GET, HEAD, CONNECT, POST), bits 2-7 where the input is cut in two. Bytes 1... are the wire.
// Each reader gets the wire whole, cut in two there, and (when short) one byte at a time, and must
// come to the same outcome every way.
//
// Built by Fuzz/run.sh together with Sources/WebSocketCodec/*.swift into a single module
// (-parse-as-library, libFuzzer supplies main), so the codec is used without an import.
// Every invariant is a precondition: a violation is a crash that libFuzzer records.

private let maxHead = 512
private let maxBody = 256
private let methods = ["GET", "HEAD", "CONNECT", "POST"]

// MARK: - References (slow and obvious)

private func isBlankByte(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 }

private func lowerASCII(_ bytes: some Sequence<UInt8>) -> [UInt8] { bytes.map { $0 >= 0x41 && $0 <= 0x5A ? $0 + 0x20 : $0 } }

/// `value`'s comma-separated members, as bytes without surrounding spaces and tabs.
private func members(_ value: String) -> [ArraySlice<UInt8>] {
    Array(value.utf8).split(separator: 0x2C, omittingEmptySubsequences: false).map { member in
        var member = member
        while let b = member.first, isBlankByte(b) { member = member.dropFirst() }
        while let b = member.last, isBlankByte(b) { member = member.dropLast() }
        return member
    }
}

/// The Content-Length every field agrees on, when it is small enough for Int: nil when the fields
/// are absent, invalid, disagree, or too large.
private func referenceLength(_ headers: [(name: String, value: String)]) -> Int? {
    var agreed: Int?
    for header in headers where header.name == "content-length" {
        for member in members(header.value) {
            guard !member.isEmpty, member.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            let significant = member.drop { $0 == 0x30 }
            guard significant.count <= 18 else { return nil }
            let length = significant.reduce(0) { $0 * 10 + Int($1 - 0x30) }
            if let agreed, agreed != length { return nil }
            agreed = length
        }
    }
    return agreed
}

private func hasToken(_ headers: [(name: String, value: String)], _ name: String, _ token: String) -> Bool {
    headers.contains { header in
        header.name == name && members(header.value).contains { lowerASCII($0) == Array(token.utf8) }
    }
}

/// Whether some Transfer-Encoding field mentions chunked, in any case, parameters or not.
private func mentionsChunked(_ headers: [(name: String, value: String)]) -> Bool {
    headers.contains { header in
        let value = lowerASCII(header.value.utf8), chunked = Array("chunked".utf8)
        return header.name == "transfer-encoding" && value.indices.contains { value[$0...].starts(with: chunked) }
    }
}

private func isTokenName(_ s: String) -> Bool {
    !s.isEmpty && s.utf8.allSatisfy { b in
        (b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x7A) || "!#$%&'*+-.^_`|~".utf8.contains(b)
    }
}

// MARK: - The response reader

/// Feeds `pieces`, then the end of input if the response is still open; the leftover of every call
/// after the end is summed, so cutting the same bytes differently gives the same outcome.
private func readResponse(_ pieces: [ArraySlice<UInt8>], method: String) -> HTTPResponseReader.Progress {
    var reader = HTTPResponseReader(maxHeadBytes: maxHead, maxBodyBytes: maxBody, requestMethod: method)
    var result = HTTPResponseReader.Progress.needMore
    var leftover = 0
    for piece in pieces {
        result = piece.withUnsafeBytes { reader.read($0) }
        if case .complete(_, let extra) = result {
            precondition(extra >= 0 && extra <= piece.count, "leftover \(extra) of a \(piece.count)-byte input")
            leftover += extra
        }
    }
    if case .needMore = result { result = reader.endOfInput() }
    precondition(reader.endOfInput() == result.withoutLeftover, "the end of input after the end changed the outcome")
    if case .complete(let response, _) = result { return .complete(response, leftover: leftover) }
    return result
}

extension HTTPResponseReader.Progress {
    fileprivate var withoutLeftover: Self {
        if case .complete(let response, _) = self { return .complete(response, leftover: 0) }
        return self
    }
}

private func checkResponse(_ wire: [UInt8], method: String, cut: Int) {
    let whole = readResponse([wire[...]], method: method)
    let split = readResponse([wire[..<cut], wire[cut...]], method: method)
    precondition(split == whole, "cut at \(cut): \(split) vs \(whole)")
    if wire.count <= 2048 {
        let single = readResponse(wire.indices.map { wire[$0...$0] }, method: method)
        precondition(single == whole, "one byte at a time: \(single) vs \(whole)")
    }

    guard case .complete(let response, let leftover) = whole else {
        if case .failed(.closedBeforeResponse) = whole { precondition(wire.isEmpty, "closedBeforeResponse after bytes") }
        return
    }
    precondition(leftover <= wire.count, "more leftover than input")
    precondition(response.body.count <= maxBody, "body of \(response.body.count) bytes over the limit")
    precondition((100...999).contains(response.status), "status \(response.status)")
    precondition(response.status >= 200 || response.status == 101, "an interim response was returned")
    for header in response.headers {
        precondition(isTokenName(header.name), "header name \(header.name.debugDescription) not a lower-case token")
    }

    let noBody = response.status == 101 || response.status == 204 || response.status == 304 || method == "HEAD"
        || (method == "CONNECT" && (200..<300).contains(response.status))
    if noBody { precondition(response.body.isEmpty, "a body where there is none") }
    if response.status == 101 || (method == "CONNECT" && (200..<300).contains(response.status)) {
        precondition(!response.keepAlive, "a connection that left HTTP kept alive")
    }
    if hasToken(response.headers, "connection", "close") { precondition(!response.keepAlive, "kept alive despite Connection: close") }

    let framedByEncoding = response.headers.contains { $0.name == "transfer-encoding" }
    if !noBody && !framedByEncoding {
        if let length = referenceLength(response.headers) {
            precondition(response.body.count == length, "body of \(response.body.count) bytes, Content-Length \(length)")
        } else {
            precondition(!response.headers.contains { $0.name == "content-length" }, "a body framed by a Content-Length that is not one")
            precondition(leftover == 0 && !response.keepAlive, "a body until close that did not end with the input")
        }
    }
    if framedByEncoding && response.headers.contains(where: { $0.name == "content-length" }) {
        precondition(noBody || !response.keepAlive, "framed both ways and kept alive")
    }
}

// MARK: - The request-body reader

private struct BodyOutcome: Equatable {
    var progress: HTTPRequestBodyReader.Progress
    var consumed: Int
}

private func readBody(_ head: HTTPRequestHead, _ pieces: [ArraySlice<UInt8>]) -> BodyOutcome {
    var reader = HTTPRequestBodyReader(head: head, maxBodyBytes: maxBody, maxTrailerBytes: maxHead)
    var outcome = BodyOutcome(progress: .needMore, consumed: 0)
    for piece in pieces {
        var consumed = 0
        outcome.progress = piece.withUnsafeBytes { reader.read($0, consumed: &consumed) }
        precondition(consumed >= 0 && consumed <= piece.count, "consumed \(consumed) of \(piece.count)")
        if case .needMore = outcome.progress { precondition(consumed == piece.count, "needMore with bytes left over") }
        outcome.consumed += consumed
    }
    return outcome
}

private func checkRequestBody(_ wire: [UInt8], cut: Int) {
    guard let end = wire.withUnsafeBytes({ HTTPRequestParser.headEnd($0) }),
          case .success(let head) = wire.withUnsafeBytes({ HTTPRequestParser.parse(UnsafeRawBufferPointer(rebasing: $0[..<end])) }) else {
        return
    }
    let rest = wire[end...]
    let cut = Swift.max(end, Swift.min(cut, wire.count))
    let whole = readBody(head, [rest])
    let split = readBody(head, [wire[end..<cut], wire[cut...]])
    precondition(split == whole, "body cut at \(cut): \(split) vs \(whole)")
    if rest.count <= 2048 {
        // An empty read first: a head without a body is complete before any byte follows it.
        let single = readBody(head, [wire[end..<end]] + rest.indices.map { wire[$0...$0] })
        precondition(single == whole, "body one byte at a time: \(single) vs \(whole)")
    }
    let headers = head.headers
    let framedByEncoding = headers.contains { $0.name == "transfer-encoding" }
    switch whole.progress {
    case .complete(let body):
        precondition(body.count <= maxBody, "request body over the limit")
        precondition(body.count <= whole.consumed, "more body than bytes read")
        if framedByEncoding {
            precondition(!headers.contains { $0.name == "content-length" }, "both framings accepted")
            precondition(mentionsChunked(headers), "a request body without chunked accepted")
        } else if let length = referenceLength(headers) {
            precondition(body.count == length && whole.consumed == length, "request body \(body.count), Content-Length \(length)")
        } else {
            precondition(!headers.contains { $0.name == "content-length" }, "a body framed by a Content-Length that is not one")
            precondition(body.isEmpty && whole.consumed == 0, "a body without framing")
        }
    case .failed(.bodyTooLarge):
        if !framedByEncoding, let length = referenceLength(headers) { precondition(length > maxBody, "too large at \(length)") }
    case .failed, .needMore:
        break
    }
}

// MARK: - Chunked round trip

/// The wire as the body of a chunked response and request, cut into chunks by sizes that the wire's
/// own bytes choose, with extensions and a trailer: both readers must give the wire back.
private func checkChunkedRoundTrip(_ data: [UInt8], control: UInt8) {
    var encoded: [UInt8] = []
    var i = 0
    var k = 0
    while i < data.count {
        let size = Swift.min(data.count - i, Int(data[(k * 7) % data.count] % 37) + 1)
        let digits = Array(String(size, radix: 16, uppercase: k % 2 == 0).utf8)
        encoded += Array(repeating: UInt8(ascii: "0"), count: k % 3) + digits
        if control & 0x04 != 0 { encoded += Array(" ;ext=\"a;b\"".utf8) }
        encoded += [0x0D, 0x0A] + data[i..<i + size] + [0x0D, 0x0A]
        i += size
        k += 1
    }
    encoded += Array("0\r\n".utf8)
    if control & 0x08 != 0 { encoded += Array("Trailer-Field: x\r\n".utf8) }
    encoded += [0x0D, 0x0A]

    let responseWire = Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".utf8) + encoded
    let expected: HTTPResponseReader.Progress = data.count <= maxBody
        ? .complete(.init(status: 200, headers: [("transfer-encoding", "chunked")], body: data, keepAlive: true), leftover: 0)
        : .failed(.bodyTooLarge)
    let cut = responseWire.count * Int(control >> 2) / 63
    precondition(readResponse([responseWire[...]], method: "GET") == expected, "chunked response round trip")
    precondition(readResponse([responseWire[..<cut], responseWire[cut...]], method: "GET") == expected, "chunked response round trip, cut")

    let requestWire = Array("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".utf8) + encoded
    let headEnd = requestWire.withUnsafeBytes { HTTPRequestParser.headEnd($0) }!
    let head = try! requestWire.withUnsafeBytes { HTTPRequestParser.parse(UnsafeRawBufferPointer(rebasing: $0[..<headEnd])) }.get()
    let outcome = readBody(head, [requestWire[headEnd...]])
    if data.count <= maxBody {
        precondition(outcome == BodyOutcome(progress: .complete(data), consumed: encoded.count), "chunked request round trip")
    } else {
        precondition(outcome.progress == .failed(.bodyTooLarge), "chunked request over the limit")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let control = data[0]
    let wire = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    let cut = wire.count * Int(control >> 2) / 63
    checkResponse(wire, method: methods[Int(control & 3)], cut: cut)
    checkRequestBody(wire, cut: cut)
    checkChunkedRoundTrip(wire, control: control)
    return 0
}
