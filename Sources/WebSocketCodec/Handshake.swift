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
        let keyField = head.field("sec-websocket-key")
        if !wantsUpgrade && keyField == nil {
            return .notUpgrade
        }
        guard head.methodIs("GET") else { return .badRequest("method \(head.method) is not GET") }
        guard head.versionIs("HTTP/1.1") else { return .badRequest("version \(head.version) is not HTTP/1.1") }
        guard wantsUpgrade else { return .badRequest("missing Upgrade: websocket") }
        guard head.headerContainsToken("connection", "upgrade") else { return .badRequest("missing Connection: upgrade") }
        guard let version = head.field("sec-websocket-version"), head.value(of: version, is: "13") else { return .upgradeRequired }
        // A 16-byte nonce is 24 characters of base64.
        guard let keyField, keyField.value.end - keyField.value.start == 24, head.withBytes(keyField.value, { key in
            withUnsafeTemporaryAllocation(byteCount: 18, alignment: 1) { Base64.decode(key, into: $0.baseAddress!) == 16 }
        }) else {
            return .badRequest("Sec-WebSocket-Key is not 16 bytes in base64")
        }
        return .upgrade(key: head.string(keyField.value))
    }

    /// Sec-WebSocket-Accept for a client key: base64(SHA-1(key + GUID)).
    public static func acceptValue(forKey key: String) -> String {
        withUnsafeTemporaryAllocation(byteCount: 28, alignment: 1) { accept in
            writeAcceptValue(forKey: key, into: accept.baseAddress!)
            return String(decoding: UnsafeRawBufferPointer(accept), as: UTF8.self)
        }
    }

    /// Writes the 28 characters of Sec-WebSocket-Accept for `key` at `out`, without allocating.
    /// SHA-1, fetched once: OpenSSL 3's `SHA1()` looks the algorithm up in its providers on every
    /// call, which cost more than hashing the key.
    private static let sha1 = EVP_MD_fetch(nil, "SHA1", nil)

    private static func writeAcceptValue(forKey key: String, into out: UnsafeMutableRawPointer) {
        var key = key, guid = guid
        key.withUTF8 { key in
            guid.withUTF8 { guid in
                // key + GUID and the digest, in one stack buffer (a valid key is 24 bytes; any fits).
                withUnsafeTemporaryAllocation(byteCount: key.count + guid.count + Int(SHA_DIGEST_LENGTH), alignment: 1) { buffer in
                    let input = buffer.baseAddress!
                    if let k = key.baseAddress { input.copyMemory(from: k, byteCount: key.count) }
                    (input + key.count).copyMemory(from: guid.baseAddress!, byteCount: guid.count)
                    let digest = input + key.count + guid.count
                    _ = EVP_Digest(input, key.count + guid.count, digest.assumingMemoryBound(to: UInt8.self), nil, sha1, nil)
                    Base64.encode(UnsafeRawBufferPointer(start: digest, count: Int(SHA_DIGEST_LENGTH)), into: out)
                }
            }
        }
    }

    /// The 101 response; `extraHeaders` are complete lines without CRLF.
    public static func switchingProtocols(key: String, extraHeaders: [String] = []) -> [UInt8] {
        let start = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
        var response: [UInt8] = []
        response.reserveCapacity(start.utf8.count + 28 + 4 + extraHeaders.reduce(0) { $0 + $1.utf8.count + 2 })
        response.append(contentsOf: start.utf8)
        response.append(contentsOf: repeatElement(0, count: 28))
        response.withUnsafeMutableBytes { writeAcceptValue(forKey: key, into: $0.baseAddress! + start.utf8.count) }
        response.append(contentsOf: "\r\n".utf8)
        for line in extraHeaders {
            response.append(contentsOf: line.utf8)
            response.append(contentsOf: "\r\n".utf8)
        }
        response.append(contentsOf: "\r\n".utf8)
        return response
    }
}

/// Minimal HTTP responses for everything that is not an upgrade; the connection closes after them.
public enum HTTPResponse {
    /// A response with `body` as is: `headers` (name, value) in order, then Content-Length, and
    /// `Connection: close` unless the connection stays open for another request. The caller has
    /// checked the header names and values.
    public static func make(status: Int, headers: [(name: String, value: String)], body: [UInt8], keepAlive: Bool) -> [UInt8] {
        var text = "HTTP/1.1 \(status) \(reason(status))\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        // RFC 9110 8.6: never for 1xx and 204.
        if status >= 200 && status != 204 { text += "Content-Length: \(body.count)\r\n" }
        if !keepAlive { text += "Connection: close\r\n" }
        text += "\r\n"
        var bytes = Array(text.utf8)
        bytes.append(contentsOf: body)
        return bytes
    }

    /// The reason phrase of the statuses scripts and the management API answer with, else "".
    public static func reason(_ status: Int) -> String {
        switch status {
        case 100: return "Continue"
        case 200: return "OK"
        case 201: return "Created"
        case 202: return "Accepted"
        case 204: return "No Content"
        case 301: return "Moved Permanently"
        case 302: return "Found"
        case 303: return "See Other"
        case 304: return "Not Modified"
        case 307: return "Temporary Redirect"
        case 308: return "Permanent Redirect"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 409: return "Conflict"
        case 410: return "Gone"
        case 413: return "Content Too Large"
        case 415: return "Unsupported Media Type"
        case 422: return "Unprocessable Content"
        case 429: return "Too Many Requests"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Timeout"
        default: return ""
        }
    }

    public static func make(status: Int, reason: String, body: String = "", headers: [String] = []) -> [UInt8] {
        let payload = body.isEmpty ? reason + "\n" : body
        var text = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \(payload.utf8.count)\r\nConnection: close\r\n"
        for line in headers { text += line + "\r\n" }
        text += "\r\n" + payload
        return Array(text.utf8)
    }
}
