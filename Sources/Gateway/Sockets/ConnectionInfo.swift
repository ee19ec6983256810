/// What a connection's upgrade request established; immutable, so any loop may read it.
public final class ConnectionInfo {
    public let socketId: String
    public let uri: String
    /// The route pattern, or the request path for sockets served by the event handler.
    public let route: String
    public let headers: [(name: String, value: String)]
    /// Path parameters first, then query parameters whose names no path parameter took.
    public let parameters: [(name: String, value: String)]
    /// The negotiated subprotocol, or "".
    public let subprotocol: String
    /// The negotiated Sec-WebSocket-Extensions value, or "".
    public let extensions: String
    /// Milliseconds since the Unix epoch when the upgrade was accepted.
    public let openedAt: Int64
    let sendQueue = SendQueueGauge()

    init(socketId: String, uri: String, route: String, headers: [(name: String, value: String)], parameters: [(name: String, value: String)], subprotocol: String, extensions: String, openedAt: Int64) {
        self.socketId = socketId
        self.uri = uri
        self.route = route
        self.headers = headers
        self.parameters = parameters
        self.subprotocol = subprotocol
        self.extensions = extensions
        self.openedAt = openedAt
    }
}
