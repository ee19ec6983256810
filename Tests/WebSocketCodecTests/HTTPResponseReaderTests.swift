import XCTest
import WebSocketCodec

private typealias ReadProgress = HTTPResponseReader.Progress
private typealias Response = HTTPResponseReader.Response

/// Feeds `pieces` one after the other, then, if the response is still open and `close` is set, the
/// end of input. The leftover of every call after the response ended is summed, so the outcome of
/// the same bytes cut differently is the same.
private func feed(_ pieces: [ArraySlice<UInt8>], method: String, maxHead: Int, maxBody: Int, close: Bool) -> ReadProgress {
    var reader = HTTPResponseReader(maxHeadBytes: maxHead, maxBodyBytes: maxBody, requestMethod: method)
    var result = ReadProgress.needMore
    var leftover = 0
    for piece in pieces {
        result = piece.withUnsafeBytes { reader.read($0) }
        if case .complete(_, let extra) = result { leftover += extra }
    }
    if case .needMore = result, close { result = reader.endOfInput() }
    if case .complete(let response, _) = result { return .complete(response, leftover: leftover) }
    return result
}

private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

final class HTTPResponseReaderTests: XCTestCase {
    /// Reads `wire` whole, split in two at every position, and one byte at a time, and requires the
    /// same outcome each way; returns it.
    @discardableResult
    private func read(_ wire: [UInt8], method: String = "GET", maxHead: Int = 1024, maxBody: Int = 1024, close: Bool = false,
                      file: StaticString = #filePath, line: UInt = #line) -> ReadProgress {
        let whole = feed([wire[...]], method: method, maxHead: maxHead, maxBody: maxBody, close: close)
        // Every cut of a short input; of a long one, a couple of hundred spread over it.
        for cut in stride(from: 0, through: wire.count, by: wire.count <= 600 ? 1 : wire.count / 200) {
            let split = feed([wire[..<cut], wire[cut...]], method: method, maxHead: maxHead, maxBody: maxBody, close: close)
            XCTAssertEqual(split, whole, "split at \(cut)", file: file, line: line)
        }
        let single = feed(wire.indices.map { wire[$0...$0] }, method: method, maxHead: maxHead, maxBody: maxBody, close: close)
        XCTAssertEqual(single, whole, "one byte at a time", file: file, line: line)
        return whole
    }

    @discardableResult
    private func read(_ text: String, method: String = "GET", maxHead: Int = 1024, maxBody: Int = 1024, close: Bool = false,
                      file: StaticString = #filePath, line: UInt = #line) -> ReadProgress {
        read(bytes(text), method: method, maxHead: maxHead, maxBody: maxBody, close: close, file: file, line: line)
    }

    private func response(_ text: String, method: String = "GET", maxBody: Int = 1024, close: Bool = false, leftover: Int = 0,
                          file: StaticString = #filePath, line: UInt = #line) -> Response? {
        switch read(text, method: method, maxBody: maxBody, close: close, file: file, line: line) {
        case .complete(let response, let extra):
            XCTAssertEqual(extra, leftover, "leftover", file: file, line: line)
            return response
        case let other:
            XCTFail("\(text.debugDescription): \(other)", file: file, line: line)
            return nil
        }
    }

    private func failure(_ text: String, method: String = "GET", maxHead: Int = 1024, maxBody: Int = 1024, close: Bool = false,
                         file: StaticString = #filePath, line: UInt = #line) -> HTTPFramingError? {
        failure(bytes(text), method: method, maxHead: maxHead, maxBody: maxBody, close: close, file: file, line: line)
    }

    private func failure(_ wire: [UInt8], method: String = "GET", maxHead: Int = 1024, maxBody: Int = 1024, close: Bool = false,
                         file: StaticString = #filePath, line: UInt = #line) -> HTTPFramingError? {
        switch read(wire, method: method, maxHead: maxHead, maxBody: maxBody, close: close, file: file, line: line) {
        case .failed(let error): return error
        case let other:
            XCTFail("\(String(decoding: wire, as: UTF8.self).debugDescription) did not fail: \(other)", file: file, line: line)
            return nil
        }
    }

    private let ok = "HTTP/1.1 200 OK\r\n"

    // MARK: - Content-Length

    func testContentLengthBody() {
        let r = response(ok + "Content-Type: text/plain\r\nX-B: 2\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello")
        XCTAssertEqual(r?.status, 200)
        XCTAssertEqual(r?.body, bytes("hello"))
        XCTAssertEqual(r?.keepAlive, true)
        XCTAssertEqual(r?.headers.map(\.name), ["content-type", "x-b", "content-length", "x-a"])
        XCTAssertEqual(r?.headers.map(\.value), ["text/plain", "2", "5", "1"])
        XCTAssertEqual(r?.header("content-length"), "5")
    }

    func testZeroContentLengthCompletesWithoutClose() {
        let r = response("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        XCTAssertEqual(r?.status, 404)
        XCTAssertEqual(r?.body, [])
        XCTAssertEqual(r?.keepAlive, true)
    }

    func testRepeatedIdenticalContentLengths() {
        XCTAssertEqual(response(ok + "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc")?.body, bytes("abc"))
        XCTAssertEqual(response(ok + "Content-Length: 3, 3,3\r\n\r\nabc")?.body, bytes("abc"))
        XCTAssertEqual(response(ok + "Content-Length: 003\r\nContent-Length: 3\r\n\r\nabc")?.body, bytes("abc"), "same decimal value")
        XCTAssertEqual(response(ok + "Content-Length:  \t3 \r\n\r\nabc")?.body, bytes("abc"))
        XCTAssertEqual(response(ok + "Content-Length: 000\r\n\r\n")?.body, [])
    }

    func testInvalidContentLengths() {
        for value in ["3, 4", "", "+3", "-3", "3a", "0x3", "3.0", "3,", ",3", "3 3", "\u{661}"] {
            XCTAssertEqual(failure(ok + "Content-Length: \(value)\r\n\r\nabcd"), .badContentLength, value.debugDescription)
        }
        XCTAssertEqual(failure(ok + "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"), .badContentLength)
    }

    func testContentLengthOverTheLimitFailsBeforeTheBody() {
        XCTAssertEqual(response(ok + "Content-Length: 10\r\n\r\n0123456789", maxBody: 10)?.body.count, 10)
        XCTAssertEqual(failure(ok + "Content-Length: 11\r\n\r\n", maxBody: 10), .bodyTooLarge, "no body byte needed to know")
        XCTAssertEqual(failure(ok + "Content-Length: 99999999999999999999999999\r\n\r\n"), .bodyTooLarge, "does not fit an Int")
    }

    // MARK: - Connection reuse

    func testKeepAlive() {
        XCTAssertEqual(response(ok + "Connection: close\r\nContent-Length: 0\r\n\r\n")?.keepAlive, false)
        XCTAssertEqual(response(ok + "Connection: Upgrade, CLOSE\r\nContent-Length: 0\r\n\r\n")?.keepAlive, false)
        XCTAssertEqual(response(ok + "Connection: keep-alive\r\nContent-Length: 0\r\n\r\n")?.keepAlive, true)
        XCTAssertEqual(response("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")?.keepAlive, false)
        XCTAssertEqual(response("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")?.keepAlive, true)
        XCTAssertEqual(response("HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n")?.keepAlive, false)
        XCTAssertEqual(response("HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n")?.keepAlive, true, "a later 1.x reads as 1.1")
    }

    func testBytesAfterTheResponseAreLeftover() {
        let next = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        XCTAssertEqual(response(ok + "Content-Length: 2\r\n\r\nhi" + next, leftover: next.utf8.count)?.body, bytes("hi"))
        XCTAssertEqual(response(ok + "Content-Length: 0\r\n\r\n\r\n", leftover: 2)?.body, [])

        // Later calls: the same response, and all of their bytes are leftover.
        var reader = HTTPResponseReader(maxHeadBytes: 1024, maxBodyBytes: 1024, requestMethod: "GET")
        let first = bytes(ok + "Content-Length: 1\r\n\r\nx")
        guard case .complete(let response, 0) = first.withUnsafeBytes({ reader.read($0) }) else { return XCTFail() }
        XCTAssertEqual(bytes("more").withUnsafeBytes { reader.read($0) }, .complete(response, leftover: 4))
        XCTAssertEqual(reader.endOfInput(), .complete(response, leftover: 0))
    }

    // MARK: - Chunked

    func testChunkedBody() {
        let r = response(ok + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        XCTAssertEqual(r?.body, bytes("hello world"))
        XCTAssertEqual(r?.keepAlive, true)
        XCTAssertEqual(response(ok + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")?.body, [])
        XCTAssertEqual(response(ok + "transfer-encoding: Chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n")?.body, bytes("x"), "coding names are case-insensitive")
    }

    func testChunkSizesInHex() {
        let sixteen = String(repeating: "x", count: 16), twentySix = String(repeating: "y", count: 26)
        let r = response(ok + "Transfer-Encoding: chunked\r\n\r\n10\r\n\(sixteen)\r\n1A\r\n\(twentySix)\r\n00000001\r\nz\r\n000\r\n\r\n")
        XCTAssertEqual(r?.body, bytes(sixteen + twentySix + "z"))
    }

    func testChunkExtensionsAreIgnored() {
        let wire = ok + "Transfer-Encoding: chunked\r\n\r\n"
            + "5;name=value\r\nhello\r\n1 ; a=\"quoted ; \\\" value\"\t;b\r\n!\r\n0;last\r\n\r\n"
        XCTAssertEqual(response(wire)?.body, bytes("hello!"))
    }

    func testTrailersAreReadAndDropped() {
        let r = response(ok + "Transfer-Encoding: chunked\r\nX-Head: 1\r\n\r\n2\r\nhi\r\n0\r\nX-Trailer: a\r\nExpires: never\r\n\r\n")
        XCTAssertEqual(r?.body, bytes("hi"))
        XCTAssertEqual(r?.headers.map(\.name), ["transfer-encoding", "x-head"])
    }

    func testChunkedAfterAnotherCodingIsDecodedOnce() {
        // The gzip coding is the caller's to undo; the framing is chunked.
        let wire = bytes(ok + "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n") + [0x1F, 0x8B, 0x08] + bytes("\r\n0\r\n\r\n")
        guard case .complete(let r, 0) = read(wire) else { return XCTFail() }
        XCTAssertEqual(r.body, [0x1F, 0x8B, 0x08])
        XCTAssertEqual(r.keepAlive, true)
    }

    func testChunkedWinsOverContentLengthButTheConnectionIsNotReused() {
        let r = response(ok + "Content-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        XCTAssertEqual(r?.body, bytes("abc"))
        XCTAssertEqual(r?.keepAlive, false)
    }

    func testMalformedChunkedBodies() {
        let head = ok + "Transfer-Encoding: chunked\r\n\r\n"
        let cases: [(String, String)] = [
            ("5\nhello\r\n0\r\n\r\n", "bare LF after a size"),
            ("5\r\nhello\n0\r\n\r\n", "bare LF after data"),
            ("5\r\nhelloX\r\n0\r\n\r\n", "data longer than its size"),
            ("5\r\nhell\r\n0\r\n\r\n", "data shorter than its size"),
            ("5\r\rhello\r\n0\r\n\r\n", "CR without LF after a size"),
            ("5\r\nhello\r\r0\r\n\r\n", "CR without LF after data"),
            ("\r\nhello\r\n0\r\n\r\n", "no size"),
            ("g\r\n", "not hex"),
            ("0x5\r\nhello\r\n0\r\n\r\n", "0x prefix"),
            ("-5\r\n", "sign"),
            ("+5\r\n", "sign"),
            (" 5\r\nhello\r\n0\r\n\r\n", "blank before the size"),
            ("5 x\r\nhello\r\n0\r\n\r\n", "junk after the size"),
            ("5;a\u{1}b\r\nhello\r\n0\r\n\r\n", "control character in an extension"),
            ("5;a\nb\r\nhello\r\n0\r\n\r\n", "bare LF in an extension"),
            (String(repeating: "0", count: 33) + "1\r\nx\r\n0\r\n\r\n", "too many digits"),
            ("0\r\nX-T: a\nb\r\n\r\n", "bare LF in a trailer"),
            ("0\r\nX-T: a\r\r\n\r\n", "CR without LF in a trailer"),
            ("0\r\nX-T: \u{0}\r\n\r\n", "NUL in a trailer"),
            ("0\r\n\n", "bare LF at the end"),
            ("0\r\n\rx", "CR without LF at the end"),
        ]
        for (body, what) in cases {
            guard let error = failure(head + body, close: true) else { continue }
            guard case .malformedChunk = error else { XCTFail("\(what): \(error)"); continue }
        }
    }

    func testChunkExtensionsAndTrailersAreBounded() {
        let head = ok + "Transfer-Encoding: chunked\r\n\r\n"
        let longExtension = "1;" + String(repeating: "e", count: 16 * 1024 + 1) + "\r\nx\r\n0\r\n\r\n"
        XCTAssertEqual(failure(head + longExtension), .malformedChunk("chunk extensions too long"))
        // Each size line is short, but together the extensions pass the bound.
        let manyExtensions = String(repeating: "1;" + String(repeating: "e", count: 1000) + "\r\nx\r\n", count: 17) + "0\r\n\r\n"
        XCTAssertEqual(failure(head + manyExtensions, maxBody: 100), .malformedChunk("chunk extensions too long"))
        let atTheBound = "1;" + String(repeating: "e", count: 16 * 1024) + "\r\nx\r\n0\r\n\r\n"
        XCTAssertEqual(response(head + atTheBound)?.body, bytes("x"))

        // Trailers count against the head limit, CRLFs included.
        let trailer = "X: " + String(repeating: "t", count: 95) // 98 bytes + CRLF = 100
        let fits = feed([bytes(head + "0\r\n" + trailer + "\r\n\r\n")[...]], method: "GET", maxHead: 100, maxBody: 10, close: false)
        guard case .complete = fits else { return XCTFail("\(fits)") }
        XCTAssertEqual(failure(head + "0\r\n" + trailer + "t\r\n\r\n", maxHead: 100), .malformedChunk("trailer section too large"))
    }

    func testChunkedBodyOverTheLimit() {
        let head = ok + "Transfer-Encoding: chunked\r\n\r\n"
        XCTAssertEqual(response(head + "5\r\n01234\r\n5\r\n56789\r\n0\r\n\r\n", maxBody: 10)?.body.count, 10)
        XCTAssertEqual(failure(head + "5\r\n01234\r\n6\r\n", maxBody: 10), .bodyTooLarge, "known from the size, before its data")
        XCTAssertEqual(failure(head + "B\r\n", maxBody: 10), .bodyTooLarge)
        XCTAssertEqual(failure(head + "FFFFFFFFFFFFFFFFFFFF\r\n", maxBody: .max), .bodyTooLarge, "overflow")
        XCTAssertEqual(failure(head + "8000000000000000\r\n", maxBody: .max), .bodyTooLarge, "Int.max + 1")
    }

    // MARK: - Other transfer codings, and no length

    func testBodyUntilClose() {
        let r = response(ok + "Content-Type: text/plain\r\n\r\nuntil the end", close: true)
        XCTAssertEqual(r?.body, bytes("until the end"))
        XCTAssertEqual(r?.keepAlive, false)
        XCTAssertEqual(response("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nx", close: true)?.keepAlive, false)
        XCTAssertEqual(response(ok + "\r\n", close: true)?.body, [])
        XCTAssertEqual(read(ok + "\r\nmore to come"), .needMore, "no end before the close")
    }

    func testBodyUntilCloseOverTheLimit() {
        XCTAssertEqual(response(ok + "\r\n0123456789", maxBody: 10, close: true)?.body.count, 10)
        XCTAssertEqual(failure(ok + "\r\n0123456789A", maxBody: 10), .bodyTooLarge)
    }

    func testOtherFinalCodingIsReadUntilClose() {
        for codings in ["gzip", "chunked, gzip", "x-custom;q=1"] {
            let r = response(ok + "Transfer-Encoding: \(codings)\r\nContent-Length: 2\r\n\r\n5\r\nhello\r\n0\r\n\r\n", close: true)
            XCTAssertEqual(r?.body, bytes("5\r\nhello\r\n0\r\n\r\n"), codings)
            XCTAssertEqual(r?.keepAlive, false, codings)
        }
    }

    func testInvalidTransferEncodings() {
        XCTAssertEqual(failure(ok + "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"), .badTransferEncoding("chunked applied twice"))
        XCTAssertEqual(failure(ok + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"), .badTransferEncoding("chunked applied twice"))
        XCTAssertEqual(failure(ok + "Transfer-Encoding:\r\n\r\n"), .badTransferEncoding("no coding listed"))
        XCTAssertEqual(failure(ok + "Transfer-Encoding: , ,\r\n\r\n"), .badTransferEncoding("no coding listed"))
        XCTAssertEqual(failure(ok + "Transfer-Encoding: chun ked\r\n\r\n"), .badTransferEncoding("bad coding name"))
        XCTAssertEqual(failure("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), .badTransferEncoding("in HTTP/1.0"))
    }

    // MARK: - Responses without a body

    func testInterimResponsesAreSkipped() {
        let wire = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
            + ok + "Content-Length: 2\r\n\r\nok"
        let r = response(wire)
        XCTAssertEqual(r?.status, 200)
        XCTAssertEqual(r?.headers.map(\.name), ["content-length"])
        XCTAssertEqual(r?.body, bytes("ok"))
    }

    func testSwitchingProtocolsEndsTheResponse() {
        let frame: [UInt8] = [0x81, 0x02, 0x68, 0x69]
        let wire = bytes("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 5\r\n\r\n") + frame
        guard case .complete(let r, let leftover) = read(wire) else { return XCTFail() }
        XCTAssertEqual(r.status, 101)
        XCTAssertEqual(r.body, [])
        XCTAssertEqual(r.keepAlive, false)
        XCTAssertEqual(leftover, frame.count, "the new protocol's bytes")
    }

    func testConnectTunnel() {
        let r = response("HTTP/1.1 200 Connection Established\r\n\r\n", method: "CONNECT")
        XCTAssertEqual(r?.keepAlive, false)
        XCTAssertEqual(r?.body, [])
        XCTAssertEqual(response("HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 1\r\n\r\nx", method: "CONNECT")?.body, bytes("x"))
    }

    func testNoBodyForHeadRequests() {
        let r = response(ok + "Content-Length: 1000\r\n\r\n", method: "HEAD")
        XCTAssertEqual(r?.body, [])
        XCTAssertEqual(r?.keepAlive, true)
        XCTAssertEqual(response(ok + "Transfer-Encoding: chunked\r\n\r\n", method: "HEAD")?.body, [])
        XCTAssertEqual(response(ok + "\r\n", method: "HEAD")?.keepAlive, true, "no body, so none until close")
        XCTAssertEqual(response(ok + "Content-Length: 1000\r\n\r\nx", method: "HEAD", leftover: 1)?.body, [])
        XCTAssertEqual(response(ok + "Content-Length: 1\r\n\r\nx", method: "head")?.body, bytes("x"), "methods are case-sensitive")
    }

    func testNoBodyFor204And304() {
        for status in ["204 No Content", "304 Not Modified"] {
            let r = response("HTTP/1.1 \(status)\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n")
            XCTAssertEqual(r?.body, [], status)
            XCTAssertEqual(r?.keepAlive, true, status)
            XCTAssertEqual(response("HTTP/1.1 \(status)\r\n\r\n0\r\n\r\n", leftover: 5)?.body, [], status)
        }
    }

    // MARK: - Heads

    func testHeadLimit() {
        let head = ok + "X: " + String(repeating: "a", count: 40) + "\r\nContent-Length: 0\r\n\r\n"
        let size = head.utf8.count
        XCTAssertEqual(read(head, maxHead: size).isComplete, true, "exactly the limit")
        XCTAssertEqual(failure(head, maxHead: size - 1), .headTooLarge)
        XCTAssertEqual(failure(String(repeating: "x", count: 5000), maxHead: 4096), .headTooLarge, "no end in sight")
        // 1xx heads count toward the same limit.
        let interim = "HTTP/1.1 100 Continue\r\n\r\n"
        XCTAssertEqual(read(interim + head, maxHead: size + interim.utf8.count).isComplete, true)
        XCTAssertEqual(failure(interim + head, maxHead: size + interim.utf8.count - 1), .headTooLarge)
        XCTAssertEqual(failure(String(repeating: interim, count: 100), maxHead: 1000), .headTooLarge)
    }

    func testLineEndingsInTheHead() {
        XCTAssertEqual(failure("HTTP/1.1 200 OK\nContent-Length: 0\n\n"), .malformedHead("bare LF"))
        XCTAssertEqual(failure(ok + "Content-Length: 0\r\n\n"), .malformedHead("bare LF"))
        XCTAssertEqual(failure(ok + "X: a\rContent-Length: 0\r\n\r\n"), .malformedHead("CR without LF"))
        XCTAssertEqual(failure(ok + "Content-Length: 0\r\n\r\r"), .malformedHead("CR without LF"))
    }

    func testMalformedHeads() {
        XCTAssertEqual(failure("HTTP/1.1 2000 OK\r\n\r\n"), .malformedHead("bad status line"))
        XCTAssertEqual(failure("ICY 200 OK\r\n\r\n"), .malformedHead("bad HTTP version"))
        XCTAssertEqual(failure("HTTP/2.0 200 OK\r\n\r\n"), .malformedHead("unsupported version HTTP/2.0"))
        XCTAssertEqual(failure("HTTP/1.x 200 OK\r\n\r\n"), .malformedHead("unsupported version HTTP/1.x"))
        XCTAssertEqual(failure(ok + "No colon\r\n\r\n"), .malformedHead("header line without colon"))
        XCTAssertEqual(failure(ok + "X: a\r\n folded\r\n\r\n"), .malformedHead("header line without colon"))
        XCTAssertEqual(failure(bytes(ok) + [0xFF] + bytes("\r\n\r\n")), .malformedHead("response head is not UTF-8"))
    }

    // MARK: - End of input

    func testTruncation() {
        XCTAssertEqual(failure("", close: true), .closedBeforeResponse)
        XCTAssertEqual(failure("HTTP/1.1 200", close: true), .truncated)
        XCTAssertEqual(failure("HTTP/1.1 100 Continue\r\n\r\n", close: true), .truncated)
        XCTAssertEqual(failure(ok + "Content-Length: 5\r\n\r\nhell", close: true), .truncated)
        XCTAssertEqual(failure(ok + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", close: true), .truncated)
        XCTAssertEqual(failure(ok + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r", close: true), .truncated)

        // A failure is final.
        var reader = HTTPResponseReader(maxHeadBytes: 1024, maxBodyBytes: 1024, requestMethod: "GET")
        XCTAssertEqual(reader.endOfInput(), .failed(.closedBeforeResponse))
        XCTAssertEqual(bytes(ok + "Content-Length: 0\r\n\r\n").withUnsafeBytes { reader.read($0) }, .failed(.closedBeforeResponse))
    }

    func testErrorDescriptions() {
        XCTAssertEqual(HTTPFramingError.headTooLarge.description, "head too large")
        XCTAssertEqual(HTTPFramingError.bodyTooLarge.description, "body too large")
        XCTAssertEqual(HTTPFramingError.malformedChunk("x").description, "malformed chunked body: x")
        XCTAssertEqual(HTTPFramingError.truncated.description, "connection closed before the end of the message")
    }
}

extension HTTPResponseReader.Progress {
    fileprivate var isComplete: Bool {
        if case .complete = self { return true }
        return false
    }
}
