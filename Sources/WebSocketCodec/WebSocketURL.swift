import Glibc

/// A ws:// or wss:// URL (RFC 6455 section 3), split into what a client needs to connect and to
/// write its upgrade request.
public struct WebSocketURL: Equatable, CustomStringConvertible {
    /// wss://: TLS.
    public let secure: Bool
    /// A DNS name in lower case, an IPv4 address, or an IPv6 address without brackets.
    public let host: String
    /// The explicit port, or 80 (ws) or 443 (wss).
    public let port: UInt16
    /// Path and "?query" as given (percent-escapes kept), "/" when the URL has no path.
    public let requestTarget: String

    /// The Host header: the host ([bracketed] for IPv6), with ":port" only when not the default.
    public var hostHeader: String {
        let name = host.contains(":") ? "[\(host)]" : host
        return port == (secure ? 443 : 80) ? name : "\(name):\(port)"
    }

    /// The host is an IPv4 or IPv6 address rather than a name.
    public var isIPLiteral: Bool { host.contains(":") || isDottedQuad(host[...]) }

    public var description: String { (secure ? "wss://" : "ws://") + hostHeader + requestTarget }

    public static func parse(_ text: String) -> Result<WebSocketURL, WebSocketURLError> {
        Result { () throws(WebSocketURLError) in try parsed(text) }
    }

    private static func parsed(_ text: String) throws(WebSocketURLError) -> WebSocketURL {
        let text = text[...]
        guard let colon = text.firstIndex(of: ":"), isScheme(text[..<colon]),
              text[text.index(after: colon)...].hasPrefix("//") else {
            throw WebSocketURLError("not a ws:// or wss:// URL")
        }
        let scheme = asciiLowercased(text[..<colon])
        guard scheme == "ws" || scheme == "wss" else {
            throw WebSocketURLError("unsupported scheme \"\(text[..<colon])\": only ws:// and wss:// are allowed")
        }
        let rest = text[text.index(colon, offsetBy: 3)...]
        for byte in rest.utf8 {
            if byte <= 0x20 || byte == 0x7F { throw WebSocketURLError("the URL contains a space or a control character") }
            if byte >= 0x80 {
                throw WebSocketURLError("the URL contains non-ASCII characters: percent-encode them in the path, use the ASCII (punycode) form of host names")
            }
        }
        // RFC 6455 section 3: fragment identifiers are meaningless in WebSocket URIs and must not be used.
        if rest.contains("#") { throw WebSocketURLError("WebSocket URLs cannot have a fragment (\"#...\")") }

        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        let target = rest[authorityEnd...]
        if authority.contains("@") { throw WebSocketURLError("user information (\"user@\") is not allowed in the URL") }

        let host: String
        let portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw WebSocketURLError("the IPv6 address has no closing \"]\"")
            }
            let address = authority[authority.index(after: authority.startIndex)..<close]
            var scratch = in6_addr()
            guard inet_pton(AF_INET6, String(address), &scratch) == 1 else {
                throw WebSocketURLError("invalid IPv6 address \"\(address)\"")
            }
            host = asciiLowercased(address)
            let after = authority[authority.index(after: close)...]
            guard after.isEmpty || after.hasPrefix(":") else {
                throw WebSocketURLError("unexpected \"\(after)\" after the IPv6 address")
            }
            portText = after.isEmpty ? nil : after.dropFirst()
        } else {
            let parts = authority.split(separator: ":", omittingEmptySubsequences: false)
            if parts.count > 2 { throw WebSocketURLError("an IPv6 address must be in brackets, as in ws://[::1]:8080/") }
            host = try checkedHost(parts[0])
            portText = parts.count == 2 ? parts[1] : nil
        }
        let secure = scheme == "wss"
        let port = try portText.map { text throws(WebSocketURLError) in try checkedPort(text) } ?? (secure ? 443 : 80)
        let requestTarget = target.isEmpty ? "/" : (target.hasPrefix("?") ? "/" + target : String(target))
        return WebSocketURL(secure: secure, host: host, port: port, requestTarget: requestTarget)
    }

    /// RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
    private static func isScheme(_ s: Substring) -> Bool {
        guard let first = s.utf8.first, isLetter(first) else { return false }
        return s.utf8.allSatisfy { isLetter($0) || isDigit($0) || $0 == UInt8(ascii: "+") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") }
    }

    /// A DNS name or a dotted-quad IPv4 address, lower-cased.
    private static func checkedHost(_ host: Substring) throws(WebSocketURLError) -> String {
        if host.isEmpty { throw WebSocketURLError("the URL has no host") }
        if let bad = host.first(where: { !($0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_")) }) {
            throw WebSocketURLError("invalid character \"\(bad)\" in the host \"\(host)\"")
        }
        // Digits and dots only would otherwise go to getaddrinfo, which reads "10.1" and "010.0.0.1"
        // (octal) as addresses nobody meant.
        if host.utf8.allSatisfy({ isDigit($0) || $0 == UInt8(ascii: ".") }) && !isDottedQuad(host) {
            throw WebSocketURLError("invalid IPv4 address \"\(host)\"")
        }
        return asciiLowercased(host)
    }

    private static func checkedPort(_ text: Substring) throws(WebSocketURLError) -> UInt16 {
        if text.isEmpty { throw WebSocketURLError("no port number after \":\"") }
        guard text.utf8.allSatisfy(isDigit) else { throw WebSocketURLError("invalid port \"\(text)\"") }
        guard text.utf8.count <= 5, let port = UInt16(text), port > 0 else {
            throw WebSocketURLError("port \(text) is out of range (1-65535)")
        }
        return port
    }
}

public struct WebSocketURLError: Error, Equatable, CustomStringConvertible {
    public let message: String
    init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Four decimal numbers 0-255 without leading zeros, separated by dots.
private func isDottedQuad(_ s: Substring) -> Bool {
    let parts = s.split(separator: ".", omittingEmptySubsequences: false)
    return parts.count == 4 && parts.allSatisfy { part in
        guard (1...3).contains(part.utf8.count), part.utf8.allSatisfy(isDigit), let value = Int(part) else { return false }
        return value <= 255 && (part.utf8.count == 1 || part.utf8.first != UInt8(ascii: "0"))
    }
}

private func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }

private func isLetter(_ b: UInt8) -> Bool { (b | 0x20) >= UInt8(ascii: "a") && (b | 0x20) <= UInt8(ascii: "z") }
