/// The head of an HTTP/1.1 response: status line and header fields. What a client reads back
/// after its upgrade request.
public struct HTTPResponseHead {
    public var version: String
    public var status: Int
    /// The reason phrase, possibly empty.
    public var reason: String
    /// Header fields in arrival order, names lower-cased, values trimmed.
    public var headers: [(name: String, value: String)]

    public init(version: String, status: Int, reason: String, headers: [(name: String, value: String)]) {
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
    }

    /// The first value of a header (name in lower case).
    public func header(_ name: String) -> String? { firstValue(headers, name) }

    /// Whether a comma-separated header contains `token` (case-insensitive).
    public func headerContainsToken(_ name: String, _ token: String) -> Bool { containsToken(headers, name, token) }
}

public enum HTTPResponseParser {
    /// Parses a complete head, as delimited by `HTTPRequestParser.headEnd`.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> Result<HTTPResponseHead, HTTPParseError> {
        headLines(bytes, of: "response").flatMap { lines in
            // status-line = HTTP-version SP status-code SP [ reason-phrase ]; the second space is
            // sometimes left out along with the reason, and nothing depends on it.
            let parts = splitAtSpaces(lines.first, maxSplits: 2)
            guard parts[0].hasPrefix("HTTP/") else { return .failure(.malformed("bad HTTP version")) }
            // status-code = 3DIGIT, 100-999: the first digit is the class (RFC 9110 15), and "041" is no
            // status at all (regression: Fuzz/corpus/regressions/client-status-leading-zero).
            guard parts.count >= 2, parts[1].utf8.count == 3, parts[1].utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                  parts[1].utf8.first != 0x30, let status = Int(parts[1]) else {
                return .failure(.malformed("bad status line"))
            }
            return headerFields(lines.headers).map {
                HTTPResponseHead(version: String(parts[0]), status: status, reason: parts.count == 3 ? String(parts[2]) : "", headers: $0)
            }
        }
    }
}

/// The first value of header `name` among `headers`.
func firstValue(_ headers: [(name: String, value: String)], _ name: String) -> String? {
    headers.first { $0.name == name }?.value
}

/// Whether a comma-separated header among `headers` contains `token` (case-insensitive).
func containsToken(_ headers: [(name: String, value: String)], _ name: String, _ token: String) -> Bool {
    let token = asciiLowercased(token)
    return headers.contains { header in
        header.name == name && header.value.split(separator: ",").contains {
            asciiLowercased($0.trimmingSpaces()) == token
        }
    }
}

/// A head's lines without their CRLFs: the request or status line, and the header lines after it.
/// `kind` ("request" or "response") names the head in errors.
func headLines(_ bytes: UnsafeRawBufferPointer, of kind: String) -> Result<(first: Substring, headers: ArraySlice<Substring>), HTTPParseError> {
    guard let text = String(validating: bytes, as: UTF8.self) else {
        return .failure(.malformed("\(kind) head is not UTF-8"))
    }
    // Splitting without omitting empty pieces always yields at least one piece.
    let lines = text.split(separator: "\r\n", omittingEmptySubsequences: false)
    return .success((lines[0], lines.dropFirst()))
}

/// Splits a request or status line at its space bytes. Not `split(separator: " ")`, which works on
/// Characters: a space followed by a combining mark (" \u{301}") is one Character, so that space did
/// not separate anything and "GET /a \u{301}b HTTP/1.1" gave a target with a space in it
/// (regression: Fuzz/corpus/regressions/client-combining-mark-after-space-in-status-line).
func splitAtSpaces(_ line: Substring, maxSplits: Int = .max) -> [String] {
    line.utf8.split(separator: 0x20, maxSplits: maxSplits, omittingEmptySubsequences: false)
        .map { String(decoding: $0, as: UTF8.self) } // cut at ASCII bytes: always whole scalars
}

/// Header lines as fields: names lower-cased, values trimmed; empty lines (the end of the head) skipped.
func headerFields(_ lines: ArraySlice<Substring>) -> Result<[(name: String, value: String)], HTTPParseError> {
    var headers: [(name: String, value: String)] = []
    for line in lines where !line.isEmpty {
        guard let colon = line.firstIndex(of: ":") else {
            return .failure(.malformed("header line without colon"))
        }
        let name = line[..<colon]
        guard !name.isEmpty, name.utf8.allSatisfy(isTokenByte) else {
            return .failure(.malformed("bad header name"))
        }
        headers.append((asciiLowercased(name), line[line.index(after: colon)...].trimmingSpaces()))
    }
    return .success(headers)
}

extension Substring {
    /// Strips OWS (RFC 9110 5.6.3: spaces and tabs) from both ends. Works on UTF-8 bytes, not on
    /// Characters: a space followed by a combining mark (" \u{301}") is one Character that is not
    /// " ", so a Character-wise trim left that space in place (regression:
    /// Fuzz/corpus/regressions/client-combining-mark-after-ows). Cutting at ASCII bytes always
    /// lands on scalar boundaries, so the decoding below never repairs anything.
    func trimmingSpaces() -> String {
        let bytes = utf8
        let isBlank = { (b: UInt8) in b == 0x20 || b == 0x09 }
        guard let first = bytes.firstIndex(where: { !isBlank($0) }) else { return "" }
        let last = bytes.lastIndex(where: { !isBlank($0) })!
        return String(decoding: bytes[first...last], as: UTF8.self)
    }
}

