import XCTest
import WebSocketCodec

/// What reading a request's body came to, and how many bytes after the head it used.
private struct Outcome: Equatable {
    var progress: HTTPRequestBodyReader.Progress
    var consumed: Int
}

private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

final class HTTPRequestBodyReaderTests: XCTestCase {
    private static let next = "GET /next HTTP/1.1\r\nHost: a\r\n\r\n"

    /// Parses the head at the start of `wire` and reads the body from what follows it, in the
    /// given pieces of that rest (each handed over on its own, as a connection's buffer would be
    /// once the previous bytes were used).
    private func feed(_ wire: [UInt8], cuts: [Int], maxBody: Int, maxTrailer: Int, file: StaticString, line: UInt) -> Outcome? {
        guard let end = wire.withUnsafeBytes({ HTTPRequestParser.headEnd($0) }),
              case .success(let head) = wire.withUnsafeBytes({ HTTPRequestParser.parse(UnsafeRawBufferPointer(rebasing: $0[..<end])) }) else {
            XCTFail("no request head", file: file, line: line)
            return nil
        }
        var reader = HTTPRequestBodyReader(head: head, maxBodyBytes: maxBody, maxTrailerBytes: maxTrailer)
        let rest = Array(wire[end...])
        var outcome = Outcome(progress: .needMore, consumed: 0)
        var start = 0
        for stop in cuts.map({ Swift.min($0, rest.count) }) + [rest.count] where stop >= start {
            var consumed = 0
            outcome.progress = rest[start..<stop].withUnsafeBytes { reader.read($0, consumed: &consumed) }
            outcome.consumed += consumed
            if case .needMore = outcome.progress {
                XCTAssertEqual(consumed, stop - start, "a body that goes on uses all it is given", file: file, line: line)
            }
            start = stop
        }
        return outcome
    }

    /// Reads whole, split in two at every position of the body, and one byte at a time; requires the
    /// same outcome.
    private func read(_ text: String, maxBody: Int = 1024, maxTrailer: Int = 1024,
                      file: StaticString = #filePath, line: UInt = #line) -> Outcome? {
        read(bytes(text), maxBody: maxBody, maxTrailer: maxTrailer, file: file, line: line)
    }

    private func read(_ wire: [UInt8], maxBody: Int = 1024, maxTrailer: Int = 1024,
                      file: StaticString = #filePath, line: UInt = #line) -> Outcome? {
        guard let whole = feed(wire, cuts: [], maxBody: maxBody, maxTrailer: maxTrailer, file: file, line: line) else { return nil }
        for cut in 0...wire.count {
            XCTAssertEqual(feed(wire, cuts: [cut], maxBody: maxBody, maxTrailer: maxTrailer, file: file, line: line), whole,
                           "split at \(cut) of the body", file: file, line: line)
        }
        XCTAssertEqual(feed(wire, cuts: Array(0..<wire.count), maxBody: maxBody, maxTrailer: maxTrailer, file: file, line: line), whole,
                       "one byte at a time", file: file, line: line)
        return whole
    }

    /// The body of `text`, which must be followed by exactly `Self.next`.
    private func body(_ text: String, maxBody: Int = 1024, file: StaticString = #filePath, line: UInt = #line) -> [UInt8]? {
        let wire = text + Self.next
        guard let outcome = read(wire, maxBody: maxBody, file: file, line: line) else { return nil }
        guard case .complete(let body) = outcome.progress else {
            XCTFail("\(text.debugDescription): \(outcome.progress)", file: file, line: line)
            return nil
        }
        let headEnd = bytes(text).withUnsafeBytes { HTTPRequestParser.headEnd($0) } ?? 0
        XCTAssertEqual(outcome.consumed, text.utf8.count - headEnd, "the body ends where the next request starts", file: file, line: line)
        return body
    }

    private func failure(_ text: String, maxBody: Int = 1024, maxTrailer: Int = 1024,
                         file: StaticString = #filePath, line: UInt = #line) -> HTTPFramingError? {
        guard let outcome = read(text, maxBody: maxBody, maxTrailer: maxTrailer, file: file, line: line) else { return nil }
        guard case .failed(let error) = outcome.progress else {
            XCTFail("\(text.debugDescription) did not fail: \(outcome.progress)", file: file, line: line)
            return nil
        }
        return error
    }

    private let post = "POST /upload HTTP/1.1\r\nHost: a\r\n"

    func testNoBodyWithoutContentLengthOrTransferEncoding() {
        XCTAssertEqual(body("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), [])
        XCTAssertEqual(body(post + "\r\n"), [], "a POST without either has no body either")
        XCTAssertEqual(body("GET / HTTP/1.0\r\n\r\n"), [])
    }

    func testContentLength() {
        XCTAssertEqual(body(post + "Content-Length: 5\r\n\r\nhello"), bytes("hello"))
        XCTAssertEqual(body(post + "Content-Length: 0\r\n\r\n"), [])
        XCTAssertEqual(body(post + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"), bytes("hello"))
        XCTAssertEqual(body(post + "Content-Length: 5,05\r\n\r\nhello"), bytes("hello"))
        XCTAssertEqual(body("POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi"), bytes("hi"))
    }

    func testInvalidContentLength() {
        for value in ["5, 6", "", "-1", "5x", "0x5", "1e3", "5 5"] {
            XCTAssertEqual(failure(post + "Content-Length: \(value)\r\n\r\nhello"), .badContentLength, value)
        }
        XCTAssertEqual(failure(post + "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello"), .badContentLength)
        XCTAssertEqual(HTTPFramingError.badContentLength.responseStatus, 400)
    }

    func testContentLengthOverTheLimitFailsBeforeTheBody() {
        XCTAssertEqual(body(post + "Content-Length: 10\r\n\r\n0123456789", maxBody: 10)?.count, 10)
        XCTAssertEqual(failure(post + "Content-Length: 11\r\n\r\n", maxBody: 10), .bodyTooLarge)
        XCTAssertEqual(failure(post + "Content-Length: 184467440737095516150\r\n\r\n"), .bodyTooLarge)
        XCTAssertEqual(HTTPFramingError.bodyTooLarge.responseStatus, 413)
    }

    func testChunked() {
        XCTAssertEqual(body(post + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), bytes("hello world"))
        XCTAssertEqual(body(post + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), [])
        XCTAssertEqual(body(post + "Transfer-Encoding: CHUNKED\r\n\r\na;ext=1\r\n0123456789\r\n0;x\r\nTrailer: t\r\nX: y\r\n\r\n"),
                       bytes("0123456789"))
    }

    func testChunkedOverTheLimit() {
        let head = post + "Transfer-Encoding: chunked\r\n\r\n"
        XCTAssertEqual(body(head + "4\r\nabcd\r\n4\r\nefgh\r\n0\r\n\r\n", maxBody: 8)?.count, 8)
        XCTAssertEqual(failure(head + "4\r\nabcd\r\n5\r\n", maxBody: 8), .bodyTooLarge, "known from the size")
        XCTAssertEqual(failure(head + "FFFFFFFFFFFFFFFFF\r\n", maxBody: .max), .bodyTooLarge)
    }

    func testMalformedChunks() {
        let head = post + "Transfer-Encoding: chunked\r\n\r\n"
        for wire in ["5\nhello\r\n0\r\n\r\n", "5\r\nhello0\r\n\r\n", "x\r\n", "5\r\nhello\r\n0\r\n\n", "0\r\nX: a\n\r\n",
                     "5;\u{7F}\r\n"] {
            guard let error = failure(head + wire) else { continue }
            guard case .malformedChunk = error else { XCTFail("\(wire.debugDescription): \(error)"); continue }
            XCTAssertEqual(error.responseStatus, 400)
        }
    }

    func testTrailerLimit() {
        let head = post + "Transfer-Encoding: chunked\r\n\r\n"
        XCTAssertEqual(read(head + "0\r\nX: 123\r\n\r\n", maxTrailer: 8)?.progress, .complete([]))
        XCTAssertEqual(failure(head + "0\r\nX: 1234\r\n\r\n", maxTrailer: 8), .malformedChunk("trailer section too large"))
    }

    func testTransferCodingsOtherThanChunked() {
        XCTAssertEqual(failure(post + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"), .unsupportedTransferEncoding)
        XCTAssertEqual(HTTPFramingError.unsupportedTransferEncoding.responseStatus, 501)
        for codings in ["gzip", "chunked, gzip", "identity"] {
            XCTAssertEqual(failure(post + "Transfer-Encoding: \(codings)\r\n\r\n0\r\n\r\n"),
                           .badTransferEncoding("chunked is not the last coding"), codings)
        }
        XCTAssertEqual(failure(post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
                       .badTransferEncoding("chunked applied twice"))
        XCTAssertEqual(failure(post + "Transfer-Encoding: \r\n\r\n"), .badTransferEncoding("no coding listed"))
        XCTAssertEqual(failure("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), .badTransferEncoding("in HTTP/1.0"))
    }

    func testContentLengthWithTransferEncodingIsRefused() {
        XCTAssertEqual(failure(post + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), .contentLengthWithTransferEncoding)
        XCTAssertEqual(failure(post + "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n"), .contentLengthWithTransferEncoding)
        XCTAssertEqual(HTTPFramingError.contentLengthWithTransferEncoding.responseStatus, 400)
    }

    func testFailureIsKnownBeforeAnyBodyByte() {
        let wire = bytes(post + "Content-Length: 11\r\n\r\n")
        guard case .success(let head) = wire.withUnsafeBytes({ HTTPRequestParser.parse($0) }) else { return XCTFail() }
        var reader = HTTPRequestBodyReader(head: head, maxBodyBytes: 10)
        var consumed = 0
        XCTAssertEqual([UInt8]().withUnsafeBytes { reader.read($0, consumed: &consumed) }, .failed(.bodyTooLarge))
        XCTAssertEqual(consumed, 0)
    }

    func testCompleteIsFinalAndConsumesNothingMore() {
        let wire = bytes(post + "Content-Length: 2\r\n\r\n")
        guard case .success(let head) = wire.withUnsafeBytes({ HTTPRequestParser.parse($0) }) else { return XCTFail() }
        var reader = HTTPRequestBodyReader(head: head, maxBodyBytes: 10)
        var consumed = 1 // reading starts at `consumed`
        let buffer = bytes("xhiGET")
        XCTAssertEqual(buffer.withUnsafeBytes { reader.read($0, consumed: &consumed) }, .complete(bytes("hi")))
        XCTAssertEqual(consumed, 3)
        XCTAssertEqual(buffer.withUnsafeBytes { reader.read($0, consumed: &consumed) }, .complete(bytes("hi")))
        XCTAssertEqual(consumed, 3)
    }
}
