@testable import Gateway
import XCTest

/// The bytes `Http.request` writes, and the arguments it refuses before any connection is made.
final class HTTPClientRequestTests: XCTestCase {
    private func text(_ request: HTTPClientRequest) -> String { String(decoding: request.bytes, as: UTF8.self) }

    func testAGetCarriesHostAndUserAgentAndNoBody() throws {
        let request = try HTTPClientRequest(url: "http://api.example:8080/v1/x?q=1#frag", method: "GET", headers: [("Accept", "a/b")],
                                            body: nil, timeoutMs: 1000, caFile: nil, insecure: false)
        XCTAssertEqual(text(request), "GET /v1/x?q=1 HTTP/1.1\r\nHost: api.example:8080\r\nUser-Agent: wsgate\r\nAccept: a/b\r\n\r\n")
        XCTAssertEqual(request.poolKey, "http://api.example:8080||false")
        XCTAssertEqual(request.timeoutNanos, 1_000_000_000)
        XCTAssertTrue(request.isIdempotent)
    }

    func testABodyGetsItsLengthAndGivenHostAndAgentWin() throws {
        let request = try HTTPClientRequest(url: "https://[::1]/p", method: "POST", headers: [("Host", "h"), ("User-Agent", "me")],
                                            body: Array("abc".utf8), timeoutMs: 5, caFile: "/ca.pem", insecure: true)
        XCTAssertEqual(text(request), "POST /p HTTP/1.1\r\nHost: h\r\nUser-Agent: me\r\nContent-Length: 3\r\n\r\nabc")
        XCTAssertTrue(request.url.secure)
        XCTAssertEqual(request.poolKey, "https://[::1]|/ca.pem|true")
        XCTAssertFalse(request.isIdempotent)
        let empty = try HTTPClientRequest(url: "http://h/", method: "PUT", headers: [], body: nil, timeoutMs: 5, caFile: nil, insecure: false)
        XCTAssertTrue(text(empty).hasSuffix("Content-Length: 0\r\n\r\n"))
    }

    func testBadArgumentsAreRefused() {
        func problem(_ url: String, method: String = "GET", headers: [(name: String, value: String)] = [], timeoutMs: Int = 10) -> String? {
            do {
                _ = try HTTPClientRequest(url: url, method: method, headers: headers, body: nil, timeoutMs: timeoutMs, caFile: nil, insecure: false)
                return nil
            } catch {
                return error.message
            }
        }
        XCTAssertEqual(problem("ws://h/"), "url must be an http:// or https:// URL")
        XCTAssertTrue(problem("http://h h/")?.hasPrefix("bad url") == true)
        XCTAssertTrue(problem("http://user@h/")?.hasPrefix("bad url") == true)
        XCTAssertTrue(problem("http://h/", method: "G T")?.contains("method") == true)
        XCTAssertTrue(problem("http://h/", headers: [("X", "a\r\nB: c")])?.contains("control character") == true)
        XCTAssertTrue(problem("http://h/", headers: [("Bad Name", "v")])?.contains("not an HTTP token") == true)
        XCTAssertTrue(problem("http://h/", headers: [("transfer-encoding", "chunked")])?.contains("set by the gateway") == true)
        XCTAssertTrue(problem("http://h/", timeoutMs: 0)?.contains("timeout_ms") == true)
        XCTAssertTrue(problem("http://h/", timeoutMs: 600_001)?.contains("timeout_ms") == true)
        XCTAssertNil(problem("HTTPS://H:443/"))
    }

    func testTheManagementAPIsJSONAndTimes() {
        XCTAssertEqual(JSONText.quoted("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"")
        XCTAssertEqual(AdminAPI.iso8601(millis: 1_764_756_000_123), "2025-12-03T10:00:00.123Z")
        XCTAssertEqual(AdminAPI.iso8601(millis: 0), "1970-01-01T00:00:00.000Z")
    }
}
