import COpenSSL

/// Server side of the RFC 6455 opening handshake.
public enum Handshake {
    public static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    public enum Verdict: Equatable {
        /// A valid upgrade; the value is the client's key.
        case upgrade(key: String)
        /// Not an upgrade request at all (a plain HTTP request).
        case notUpgrade
        case badRequest(String)
        /// Wrong Sec-WebSocket-Version.
        case upgradeRequired
    }

    public static func evaluate(_ head: HTTPRequestHead) -> Verdict {
        let wantsUpgrade = head.headerContainsToken("upgrade", "websocket")
        if !wantsUpgrade && head.header("sec-websocket-key") == nil {
            return .notUpgrade
        }
        guard head.method == "GET" else { return .badRequest("method \(head.method) is not GET") }
        guard head.version == "HTTP/1.1" else { return .badRequest("version \(head.version) is not HTTP/1.1") }
        guard wantsUpgrade else { return .badRequest("missing Upgrade: websocket") }
        guard head.headerContainsToken("connection", "upgrade") else { return .badRequest("missing Connection: upgrade") }
        guard head.header("sec-websocket-version") == "13" else { return .upgradeRequired }
        guard let key = head.header("sec-websocket-key"), Base64.decode(key)?.count == 16 else {
            return .badRequest("Sec-WebSocket-Key is not 16 bytes in base64")
        }
        return .upgrade(key: key)
    }

    /// Sec-WebSocket-Accept for a client key: base64(SHA-1(key + GUID)).
    public static func acceptValue(forKey key: String) -> String {
        let input = Array((key + guid).utf8)
        var digest = [UInt8](repeating: 0, count: Int(SHA_DIGEST_LENGTH))
        _ = input.withUnsafeBufferPointer { i in
            digest.withUnsafeMutableBufferPointer { d in SHA1(i.baseAddress, i.count, d.baseAddress) }
        }
        return Base64.encode(digest)
    }

    /// The 101 response; `extraHeaders` are complete lines without CRLF.
    public static func switchingProtocols(key: String, extraHeaders: [String] = []) -> [UInt8] {
        var text = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \(acceptValue(forKey: key))\r\n"
        for line in extraHeaders { text += line + "\r\n" }
        text += "\r\n"
        return Array(text.utf8)
    }
}

/// Minimal HTTP responses for everything that is not an upgrade; the connection closes after them.
public enum HTTPResponse {
    public static func make(status: Int, reason: String, body: String = "", headers: [String] = []) -> [UInt8] {
        let payload = body.isEmpty ? reason + "\n" : body
        var text = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \(payload.utf8.count)\r\nConnection: close\r\n"
        for line in headers { text += line + "\r\n" }
        text += "\r\n" + payload
        return Array(text.utf8)
    }
}
