/// The head of an HTTP/1.1 request: request line and header fields.
public struct HTTPRequestHead {
    public var method: String
    public var target: String
    public var version: String
    /// Header fields in arrival order, names lower-cased, values trimmed.
    public var headers: [(name: String, value: String)]

    public init(method: String, target: String, version: String, headers: [(name: String, value: String)]) {
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
    }

    /// The first value of a header (name in lower case).
    public func header(_ name: String) -> String? { firstValue(headers, name) }

    /// The request path without the query string.
    public var path: String {
        if let q = target.firstIndex(of: "?") { return String(target[..<q]) }
        return target
    }

    /// The raw query string, without "?", or "".
    public var query: String {
        if let q = target.firstIndex(of: "?") { return String(target[target.index(after: q)...]) }
        return ""
    }

    /// Whether a comma-separated header contains `token` (case-insensitive).
    public func headerContainsToken(_ name: String, _ token: String) -> Bool { containsToken(headers, name, token) }
}

/// The shared part of `header(_:)` for requests and responses.
func firstValue(_ headers: [(name: String, value: String)], _ name: String) -> String? {
    headers.first { $0.name == name }?.value
}

/// The shared part of `headerContainsToken(_:_:)` for requests and responses.
func containsToken(_ headers: [(name: String, value: String)], _ name: String, _ token: String) -> Bool {
    let token = asciiLowercased(token)
    return headers.contains { header in
        header.name == name && header.value.split(separator: ",").contains {
            asciiLowercased($0.trimmingSpaces()) == token
        }
    }
}

public enum HTTPParseError: Error, Equatable {
    case malformed(String)
}

public enum HTTPRequestParser {
    /// The offset just past the blank line that ends the head, or nil when it has not arrived yet.
    public static func headEnd(_ bytes: UnsafeRawBufferPointer) -> Int? {
        let n = bytes.count
        guard n >= 4 else { return nil }
        var i = 3
        while i < n {
            let b = bytes[i]
            if b == 0x0A {
                if bytes[i - 1] == 0x0D && bytes[i - 2] == 0x0A && bytes[i - 3] == 0x0D { return i + 1 }
                i += 1
            } else if b == 0x0D {
                i += 1
            } else {
                i += 4 // no '\n' can end a head before this byte plus three more
            }
        }
        return nil
    }

    /// Parses a complete head (as delimited by `headEnd`).
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> Result<HTTPRequestHead, HTTPParseError> {
        headLines(bytes, of: "request").flatMap { lines in
            let parts = splitAtSpaces(lines.first)
            guard parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty else {
                return .failure(.malformed("bad request line"))
            }
            guard parts[2].hasPrefix("HTTP/") else { return .failure(.malformed("bad HTTP version")) }
            return headerFields(lines.headers).map {
                HTTPRequestHead(method: String(parts[0]), target: String(parts[1]), version: String(parts[2]), headers: $0)
            }
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

/// RFC 9110 token characters: header names are made of these only.
func isTokenByte(_ b: UInt8) -> Bool {
    switch b {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
        return true
    default:
        return "!#$%&'*+-.^_`|~".utf8.contains(b)
    }
}

/// Lower-cases ASCII letters only: Unicode case mapping would turn the Kelvin sign into "k".
func asciiLowercased<S: StringProtocol>(_ s: S) -> String {
    String(decoding: s.utf8.map { $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }, as: UTF8.self)
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

/// Percent-decoding and query-string splitting for path and query parameters.
public enum URLComponentsDecoding {
    public static func percentDecode(_ s: Substring, plusAsSpace: Bool) -> String {
        guard s.contains("%") || (plusAsSpace && s.contains("+")) else { return String(s) }
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count)
        var it = s.utf8.makeIterator()
        while let c = it.next() {
            if c == UInt8(ascii: "%") {
                guard let h = it.next(), let l = it.next(), let hv = hexValue(h), let lv = hexValue(l) else {
                    return String(s) // malformed escapes are kept literally
                }
                out.append(hv << 4 | lv)
            } else if plusAsSpace && c == UInt8(ascii: "+") {
                out.append(0x20)
            } else {
                out.append(c)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// `a=1&b=x%20y` → [("a","1"), ("b","x y")]; a key without "=" gets "".
    public static func queryItems(_ query: String) -> [(name: String, value: String)] {
        query.split(separator: "&").compactMap { item in
            let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = percentDecode(pair[0], plusAsSpace: true)
            if name.isEmpty { return nil }
            return (name, pair.count > 1 ? percentDecode(pair[1], plusAsSpace: true) : "")
        }
    }
}
