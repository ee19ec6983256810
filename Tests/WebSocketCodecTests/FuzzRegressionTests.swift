import XCTest
import WebSocketCodec

/// Minimized inputs found by the libFuzzer targets in Fuzz/ (run with Fuzz/run.sh), one test per bug.
/// The raw inputs are kept in Fuzz/corpus/regressions/, and Fuzz/run.sh replays them before fuzzing.
final class FuzzRegressionTests: XCTestCase {
    /// Fuzz/corpus/regressions/frames-base64-noncanonical-padding is the 4 bytes "44==", found by
    /// FrameDecoderFuzzer's property encode(decode(x)) == x.
    ///
    /// Base64.decode ignores the unused low bits of the last character before the padding (4 bits
    /// with "==", 2 bits with "="), so it accepts non-canonical encodings and several strings decode
    /// to the same bytes: "44==" decodes to [0xE3], which encodes as "4w==". A strict decoder
    /// (RFC 4648 section 3.5) rejects those inputs, which makes the round trip hold.
    func testBase64DecodeAcceptsOnlyCanonicalEncodings() {
        let nonCanonical = [
            "44==", // the fuzzer's input: [0xE3] is "4w=="
            "AB==", // [0x00] is "AA=="
            "AAB=", // [0x00, 0x00] is "AAA="
            "Zm9=", // "fo" is "Zm8="
            "dGhlIHNhbXBsZSBub25jZR==", // the RFC 6455 sample nonce is "...ZQ=="
        ]
        for input in nonCanonical {
            if let decoded = Base64.decode(input) {
                XCTAssertEqual(Base64.encode(decoded), input, "\(input) decodes to \(decoded)")
            }
        }
    }

    // MARK: - ClientHandshakeFuzzer

    private static let key = "dGhlIHNhbXBsZSBub25jZQ=="
    private static let switching = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"

    private func response(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> HTTPResponseHead? {
        switch Array(text.utf8).withUnsafeBytes({ HTTPResponseParser.parse($0) }) {
        case .success(let head): return head
        case .failure(let error):
            XCTFail("\(text.debugDescription): \(error)", file: file, line: line)
            return nil
        }
    }

    private func problem(_ text: String, offering protocols: [String] = [], file: StaticString = #filePath, line: UInt = #line) -> String? {
        guard let head = response(text, file: file, line: line) else { return "unparsable" }
        return ClientHandshake.problem(with: head, key: Self.key, offeredProtocols: protocols)
    }

    /// Fuzz/corpus/regressions/client-second-extensions-field: problem(with:key:) read only the first
    /// Sec-WebSocket-Extensions field, so an empty one followed by "Sec-WebSocket-Extensions: x"
    /// accepted an extension that was never offered. Repeated fields are one comma-joined list
    /// (RFC 9110 5.3), so every field is checked now.
    func testEveryExtensionsFieldIsChecked() {
        XCTAssertNil(problem(Self.switching + "\r\n"))
        XCTAssertNil(problem(Self.switching + "Sec-WebSocket-Extensions:\r\n\r\n"), "an empty field names no extension")
        XCTAssertNotNil(problem(Self.switching + "Sec-WebSocket-Extensions:\r\nSec-WebSocket-Extensions: x\r\n\r\n"))
        XCTAssertNotNil(problem(Self.switching + "Sec-WebSocket-Extensions: x\r\nSec-WebSocket-Extensions:\r\n\r\n"))
    }

    /// Fuzz/corpus/regressions/client-second-protocol-field: likewise only the first
    /// Sec-WebSocket-Protocol field was checked, so "chat" then "x" passed when "chat" was offered.
    /// Two different subprotocols, even both offered, are no single choice either.
    func testEveryProtocolFieldIsChecked() {
        let chat = Self.switching + "Sec-WebSocket-Protocol: chat\r\n"
        XCTAssertNil(problem(chat + "\r\n", offering: ["chat"]))
        XCTAssertNil(problem(chat + "Sec-WebSocket-Protocol: chat\r\n\r\n", offering: ["chat"]), "the same choice twice")
        XCTAssertNotNil(problem(chat + "Sec-WebSocket-Protocol: x\r\n\r\n", offering: ["chat"]))
        XCTAssertNotNil(problem(chat + "Sec-WebSocket-Protocol: superchat\r\n\r\n", offering: ["chat", "superchat"]))
        XCTAssertNotNil(problem(chat + "\r\n"), "nothing was offered")
    }

    /// Fuzz/corpus/regressions/client-kelvin-sign-in-accept (found by reading the code; the fuzzer's
    /// byte-wise invariant reproduces it): the accept value was compared with String ==, which is
    /// Unicode canonical equivalence, and U+212A KELVIN SIGN is canonically equivalent to "K", so
    /// "s3pPLMBiTxaQ9kYGzzhZRb\u{212A}+xOo=" matched. A second, wrong Sec-WebSocket-Accept field is refused too.
    func testAcceptIsComparedAsBytes() {
        let base = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        XCTAssertNotNil(problem(base + "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRb\u{212A}+xOo=\r\n\r\n"))
        XCTAssertNotNil(problem(Self.switching + "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo\r\n\r\n"))
        XCTAssertNil(problem(Self.switching + "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"))
        XCTAssertNil(problem(Self.switching + "Sec-WebSocket-Protocol: Kafka\r\n\r\n", offering: ["Kafka"]))
        XCTAssertNotNil(problem(Self.switching + "Sec-WebSocket-Protocol: \u{212A}afka\r\n\r\n", offering: ["Kafka"]))
    }

    /// Fuzz/corpus/regressions/client-combining-mark-after-ows: header values were trimmed
    /// Character by Character, and a space followed by a combining mark (" \u{301}") is one Character
    /// that is not " ", so "X: \u{301}" kept its leading space. OWS is spaces and tabs as bytes
    /// (RFC 9110 5.6.3). The same code trims request header values on the server.
    func testHeaderValuesAreTrimmedAsBytes() {
        XCTAssertEqual(response("HTTP/1.1 101\r\nX: \u{301}\r\nY:\t \u{301}e \u{301}\t \r\n\r\n")?.headers.map(\.value),
                       ["\u{301}", "\u{301}e \u{301}"])
        let url = try! WebSocketURL.parse("ws://h/").get()
        let request = ClientHandshake.request(url: url, key: Self.key, headers: [("X-Unicode", "\u{301}\u{2713}")])
        guard case .success(let head) = request.withUnsafeBytes({ HTTPRequestParser.parse($0) }) else {
            return XCTFail("the request does not parse")
        }
        XCTAssertEqual(head.header("x-unicode").map { Array($0.utf8) }, Array("\u{301}\u{2713}".utf8))
    }

    /// Fuzz/corpus/regressions/client-combining-mark-after-space-in-status-line: the status and request
    /// lines were split with split(separator: " "), on Characters, so the space of " \u{301}" separated
    /// nothing: "HTTP/1.1 \u{301}x 101 ..." parsed as version "HTTP/1.1 \u{301}x" and status 101, and
    /// passed the client's check. They are split at space bytes now.
    func testStartLinesAreSplitAtSpaceBytes() {
        let status = "HTTP/1.1 \u{301}x 101 Switching Protocols\r\n\r\n"
        XCTAssertNotNil(Array(status.utf8).withUnsafeBytes { raw -> HTTPParseError? in
            if case .failure(let error) = HTTPResponseParser.parse(raw) { return error }
            return nil
        })
        let requestLine = "GET /a \u{301}b HTTP/1.1\r\nHost: h\r\n\r\n"
        XCTAssertNotNil(Array(requestLine.utf8).withUnsafeBytes { raw -> HTTPParseError? in
            if case .failure(let error) = HTTPRequestParser.parse(raw) { return error }
            return nil
        })
        XCTAssertEqual(response("HTTP/1.1 101 Schaltet \u{301}um\r\n\r\n")?.reason, "Schaltet \u{301}um")
    }

    /// Fuzz/corpus/regressions/client-status-leading-zero: "HTTP/1.1 041 ..." parsed as status 41.
    /// A status code is three digits from 100 (RFC 9110 15).
    func testStatusCodeHasNoLeadingZero() {
        for code in ["000", "041", "099"] {
            XCTAssertNotNil(Array("HTTP/1.1 \(code) X\r\n\r\n".utf8).withUnsafeBytes { raw -> HTTPParseError? in
                if case .failure(let error) = HTTPResponseParser.parse(raw) { return error }
                return nil
            }, code)
        }
        XCTAssertEqual(response("HTTP/1.1 100 Continue\r\n\r\n")?.status, 100)
        XCTAssertEqual(response("HTTP/1.1 999\r\n\r\n")?.status, 999)
    }
}
