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
