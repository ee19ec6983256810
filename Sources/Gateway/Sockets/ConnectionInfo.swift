import WebSocketCodec

/// What a connection's upgrade request established; immutable (but for the send-queue gauge it
/// is too, which saves an allocation per socket), so any loop may read it.
final class ConnectionInfo: SendQueueGauge {
    let socketId: String
    let uri: String
    /// The route pattern, or the request path for sockets served by the event handler.
    let route: String
    /// The upgrade request as it arrived: its headers stay in this one block for scripts.
    let request: HTTPRequestHead
    /// Path parameters first, then query parameters whose names no path parameter took.
    let parameters: [(name: String, value: String)]
    /// The negotiated subprotocol, or "".
    let subprotocol: String
    /// The negotiated Sec-WebSocket-Extensions value, or "".
    let extensions: String
    /// Milliseconds since the Unix epoch when the upgrade was accepted.
    let openedAt: Int64

    init(socketId: String, uri: String, route: String, request: HTTPRequestHead, parameters: [(name: String, value: String)], subprotocol: String, extensions: String, openedAt: Int64) {
        self.socketId = socketId
        self.uri = uri
        self.route = route
        self.request = request
        self.parameters = parameters
        self.subprotocol = subprotocol
        self.extensions = extensions
        self.openedAt = openedAt
    }

    var sendQueue: SendQueueGauge { self }
}
