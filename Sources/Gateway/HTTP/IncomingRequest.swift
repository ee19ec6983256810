import WebSocketCodec

/// An HTTP request that is not an upgrade, on a connection that may carry more: its head, its body
/// as it arrives, and who answers it once the body is complete. A class: every socket has room for
/// a reference to one, and a struct's 200-odd bytes inline in each `Connection` were memory every
/// idle WebSocket paid for a request it never reads.
final class IncomingRequest {
    enum Handler {
        /// An HTTP endpoint script (`NAME.http.lua`) and what routing found.
        case script(EndpointScript, route: String, parameters: [(name: String, value: String)])
        /// The management API, on the admin listener.
        case admin
        /// `GET /metrics` on the main listener (`metrics.public`).
        case metrics
    }

    let head: HTTPRequestHead
    var body: HTTPRequestBodyReader
    let handler: Handler

    init(head: HTTPRequestHead, maxBodyBytes: Int, handler: Handler) {
        self.head = head
        body = HTTPRequestBodyReader(head: head, maxBodyBytes: maxBodyBytes)
        self.handler = handler
    }

    /// The client waits for "100 Continue" before it sends the body (curl does, for a second, with
    /// bodies over 1 KiB).
    var expectsContinue: Bool {
        head.versionIs("HTTP/1.1") && head.headerContainsToken("expect", "100-continue")
    }

    /// Whether the client lets the connection carry another request (RFC 9112 9.3).
    var keepAlive: Bool {
        if head.versionIs("HTTP/1.1") { return !head.headerContainsToken("connection", "close") }
        return head.headerContainsToken("connection", "keep-alive")
    }
}
