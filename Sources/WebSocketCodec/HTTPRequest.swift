import Glibc

/// The head of an HTTP/1.1 request, kept as the bytes that arrived. Parsing records where the
/// request line's parts and each field's name and value lie, and lower-cases the names in place:
/// a request costs two allocations however many fields it has, and a socket keeps its request
/// headers for scripts in one block.
public struct HTTPRequestHead {
    /// A range of `bytes`.
    public struct Span {
        public let start: UInt32
        public let end: UInt32

        public var isEmpty: Bool { start == end }
    }

    /// A header field: the name lower-cased, the value without surrounding spaces and tabs.
    public struct Field {
        public let name: Span
        public let value: Span
    }

    /// The head, request line and CRLFs included, with header names lower-cased.
    public let bytes: [UInt8]
    /// Header fields in arrival order.
    public let fields: [Field]
    private let methodSpan: Span
    private let targetSpan: Span
    private let versionSpan: Span

    fileprivate init(bytes: [UInt8], fields: [Field], method: Span, target: Span, version: Span) {
        self.bytes = bytes
        self.fields = fields
        methodSpan = method
        targetSpan = target
        versionSpan = version
    }

    public var method: String { string(methodSpan) }
    public var target: String { string(targetSpan) }
    public var version: String { string(versionSpan) }

    /// The request path, without the query string.
    public var path: String { string(Span(start: targetSpan.start, end: queryMark ?? targetSpan.end)) }

    /// The raw query string, without "?", or "".
    public var query: String { queryMark.map { string(Span(start: $0 + 1, end: targetSpan.end)) } ?? "" }

    /// Where the target's first "?" is.
    private var queryMark: UInt32? {
        bytes[Int(targetSpan.start)..<Int(targetSpan.end)].firstIndex(of: UInt8(ascii: "?")).map { UInt32($0) }
    }

    public func string(_ span: Span) -> String {
        String(decoding: bytes[Int(span.start)..<Int(span.end)], as: UTF8.self)
    }

    public func withBytes<R>(_ span: Span, _ body: (UnsafeRawBufferPointer) -> R) -> R {
        bytes.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[Int(span.start)..<Int(span.end)])) }
    }

    public func methodIs(_ name: StaticString) -> Bool { matches(methodSpan, name) }
    public func versionIs(_ name: StaticString) -> Bool { matches(versionSpan, name) }

    /// Header fields as strings, in arrival order.
    public var headers: [(name: String, value: String)] { fields.map { (string($0.name), string($0.value)) } }

    /// The first field named `name` (lower case).
    public func field(_ name: StaticString) -> Field? { fields.first { matches($0.name, name) } }

    /// Whether `field` is named `name` (lower case).
    public func isName(_ field: Field, _ name: StaticString) -> Bool { matches(field.name, name) }

    /// The first value of a header (name in lower case).
    public func header(_ name: StaticString) -> String? { field(name).map { string($0.value) } }

    /// The first value of a header (name in lower case), for names known only at run time.
    public func header(named name: String) -> String? {
        let wanted = Array(name.utf8)
        return fields.first { bytes[Int($0.name.start)..<Int($0.name.end)].elementsEqual(wanted) }.map { string($0.value) }
    }

    /// Whether the value of `field` is `value` exactly.
    public func value(of field: Field, is value: StaticString) -> Bool { matches(field.value, value) }

    /// Whether a comma-separated header contains `token` (case-insensitive; `token` in lower case).
    public func headerContainsToken(_ name: StaticString, _ token: StaticString) -> Bool {
        token.withUTF8Buffer { token in
            fields.contains { field in
                guard matches(field.name, name) else { return false }
                var found = false
                forEachListItem(field.value) { item in
                    if !found, item.count == token.count, zip(item, token).allSatisfy({ asciiLower($0) == $1 }) { found = true }
                }
                return found
            }
        }
    }

    /// Calls `body` with each item of a comma-separated value, spaces and tabs trimmed, empty items skipped.
    public func forEachListItem(_ span: Span, _ body: (ArraySlice<UInt8>) -> Void) {
        var start = Int(span.start)
        let end = Int(span.end)
        while start <= end {
            var stop = start
            while stop < end && bytes[stop] != UInt8(ascii: ",") { stop += 1 }
            let item = trimmed(start, stop)
            if !item.isEmpty { body(bytes[item]) }
            start = stop + 1
        }
    }

    private func trimmed(_ start: Int, _ end: Int) -> Range<Int> {
        var a = start, b = end
        while a < b && isBlank(bytes[a]) { a += 1 }
        while b > a && isBlank(bytes[b - 1]) { b -= 1 }
        return a..<b
    }

    private func matches(_ span: Span, _ name: StaticString) -> Bool {
        let count = Int(span.end - span.start)
        guard count == name.utf8CodeUnitCount else { return false }
        return bytes.withUnsafeBytes { memcmp($0.baseAddress! + Int(span.start), name.utf8Start, count) == 0 }
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

    /// Parses a complete head (as delimited by `headEnd`), over its bytes: lines end at CRLF, the
    /// request line splits at its spaces into exactly three parts, a field's name is the token
    /// before the line's first colon, its value what follows without surrounding blanks.
    public static func parse(_ input: UnsafeRawBufferPointer) -> Result<HTTPRequestHead, HTTPParseError> {
        guard input.count <= Int(UInt32.max) else { return .failure(.malformed("request head too large")) }
        guard UTF8Validator.isValid(input) else { return .failure(.malformed("request head is not UTF-8")) }
        var bytes = [UInt8](input)
        var fields: [HTTPRequestHead.Field] = []
        // Room for a field per line but the request line and the blank one, reserved once: growing
        // the array as fields come cost an allocation per doubling, and the socket keeps it.
        var lines = 0
        for b in input where b == 0x0A { lines += 1 }
        fields.reserveCapacity(max(lines - 2, 0))
        var spaces = (0, 0)
        var firstEnd = 0
        let failure: String? = bytes.withUnsafeMutableBufferPointer { bytes in
            let n = bytes.count
            /// The end of the line starting at `start` (the offset of its CR), or `n` for a last line without CRLF.
            func lineEnd(_ start: Int) -> Int {
                var i = start
                while i + 1 < n {
                    if bytes[i] == 0x0D && bytes[i + 1] == 0x0A { return i }
                    i += 1
                }
                return n
            }
            firstEnd = lineEnd(0)
            var spaceCount = 0
            for i in 0..<firstEnd where bytes[i] == 0x20 {
                spaceCount += 1
                if spaceCount == 1 { spaces.0 = i } else if spaceCount == 2 { spaces.1 = i }
            }
            guard spaceCount == 2, spaces.0 > 0, spaces.1 > spaces.0 + 1 else { return "bad request line" }
            guard firstEnd - spaces.1 - 1 >= 5, bytes[spaces.1 + 1..<spaces.1 + 6].elementsEqual("HTTP/".utf8) else {
                return "bad HTTP version"
            }
            var start = firstEnd + 2
            while start < n {
                let end = lineEnd(start)
                defer { start = end + 2 }
                if end == start { continue }
                var colon = start
                while colon < end && bytes[colon] != UInt8(ascii: ":") { colon += 1 }
                guard colon < end else { return "header line without colon" }
                guard colon > start else { return "bad header name" }
                for i in start..<colon {
                    let b = bytes[i]
                    guard isTokenByte(b) else { return "bad header name" }
                    bytes[i] = asciiLower(b)
                }
                var a = colon + 1, b = end
                while a < b && isBlank(bytes[a]) { a += 1 }
                while b > a && isBlank(bytes[b - 1]) { b -= 1 }
                fields.append(.init(name: .init(start: UInt32(start), end: UInt32(colon)), value: .init(start: UInt32(a), end: UInt32(b))))
            }
            return nil
        }
        if let failure { return .failure(.malformed(failure)) }
        return .success(HTTPRequestHead(bytes: bytes, fields: fields,
                                        method: .init(start: 0, end: UInt32(spaces.0)),
                                        target: .init(start: UInt32(spaces.0 + 1), end: UInt32(spaces.1)),
                                        version: .init(start: UInt32(spaces.1 + 1), end: UInt32(firstEnd))))
    }
}

@inline(__always) private func isBlank(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 }
@inline(__always) func asciiLower(_ b: UInt8) -> UInt8 { b >= 65 && b <= 90 ? b + 32 : b }

/// RFC 9110 token characters: header names are made of these only.
func isTokenByte(_ b: UInt8) -> Bool {
    switch b {
    case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
         UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"),
         UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "^"),
         UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
        return true
    default:
        return false
    }
}

/// Lower-cases ASCII letters only: Unicode case mapping would turn the Kelvin sign into "k".
func asciiLowercased<S: StringProtocol>(_ s: S) -> String {
    String(decoding: s.utf8.map(asciiLower), as: UTF8.self)
}

/// Percent-decoding and query-string splitting for path and query parameters.
public enum URLComponentsDecoding {
    public static func percentDecode(_ s: Substring, plusAsSpace: Bool) -> String {
        // Searched as bytes: a search by Characters costs several times the rest of routing.
        guard s.utf8.contains(where: { $0 == UInt8(ascii: "%") || (plusAsSpace && $0 == UInt8(ascii: "+")) }) else { return String(s) }
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
