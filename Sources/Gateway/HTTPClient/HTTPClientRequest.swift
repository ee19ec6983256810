import WebSocketCodec

/// A request for `Http.request`, checked: where it goes, the bytes to send, and how long it may take.
struct HTTPClientRequest {
    /// Where: an http:// URL is held as ws://, https:// as wss:// (same host, port and target rules).
    let url: WebSocketURL
    let method: String
    /// The request head and body, ready to write.
    let bytes: [UInt8]
    let timeoutNanos: UInt64
    let caFile: String?
    let insecure: Bool

    /// Connections that may carry this request after another: same scheme, host, port and TLS trust.
    var poolKey: String { "\(url.secure ? "https" : "http")://\(url.hostHeader)|\(caFile ?? "")|\(insecure)" }

    /// Methods that may be sent again when a reused connection turns out closed before answering.
    var isIdempotent: Bool { ["GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"].contains(method) }

    /// The longest `timeout_ms`: ten minutes (`scripts.waitTimeoutMs` usually ends a run sooner).
    static let longestTimeoutMs = 600_000

    init(url text: String, method: String, headers: [(name: String, value: String)], body: [UInt8]?, timeoutMs: Int,
         caFile: String?, insecure: Bool) throws(ServiceFailure) {
        url = try HTTPClientRequest.parseURL(text)
        guard !method.isEmpty, method.utf8.allSatisfy(HTTPClientRequest.isTokenByte) else {
            throw .badRequest("method must be an HTTP token such as \"GET\"")
        }
        self.method = method
        guard (1...HTTPClientRequest.longestTimeoutMs).contains(timeoutMs) else {
            throw .badRequest("timeout_ms must be between 1 and \(HTTPClientRequest.longestTimeoutMs)")
        }
        timeoutNanos = UInt64(timeoutMs) * 1_000_000
        self.caFile = caFile
        self.insecure = insecure

        var head = "\(method) \(url.requestTarget) HTTP/1.1\r\n"
        var given = Set<String>()
        for (name, value) in headers {
            guard !name.isEmpty, name.utf8.allSatisfy(HTTPClientRequest.isTokenByte) else {
                throw .badRequest("header name \"\(name)\" is not an HTTP token")
            }
            guard value.utf8.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
                throw .badRequest("the value of header \(name) contains a control character")
            }
            let lower = name.lowercased()
            // The framing is the gateway's to write: a script's own would disagree with the body.
            guard lower != "content-length" && lower != "transfer-encoding" else {
                throw .badRequest("header \(name) is set by the gateway from body")
            }
            given.insert(lower)
        }
        if !given.contains("host") { head += "Host: \(url.hostHeader)\r\n" }
        if !given.contains("user-agent") { head += "User-Agent: wsgate\r\n" }
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if let body {
            head += "Content-Length: \(body.count)\r\n"
        } else if ["POST", "PUT", "PATCH"].contains(method) {
            head += "Content-Length: 0\r\n"
        }
        head += "\r\n"
        bytes = Array(head.utf8) + (body ?? [])
    }

    private static func isTokenByte(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(b)
        }
    }

    /// An http:// or https:// URL, held as the ws:// or wss:// URL with the same parts; the fragment
    /// is dropped (it is not sent).
    private static func parseURL(_ text: String) throws(ServiceFailure) -> WebSocketURL {
        let lower = text.prefix(8).lowercased()
        let rest: Substring
        let secure: Bool
        if lower.hasPrefix("http://") {
            rest = text.dropFirst(7)
            secure = false
        } else if lower.hasPrefix("https://") {
            rest = text.dropFirst(8)
            secure = true
        } else {
            throw .badRequest("url must be an http:// or https:// URL")
        }
        let withoutFragment = rest.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        switch WebSocketURL.parse((secure ? "wss://" : "ws://") + withoutFragment) {
        case .success(let url): return url
        case .failure(let error): throw .badRequest("bad url: \(error.message)")
        }
    }
}
