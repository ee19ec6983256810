import Reactor
import Synchronization
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
    /// The client's IP address.
    let remoteAddress: String
    /// The `route` label of its metrics: the route pattern, or the event handler's file for the
    /// sockets it serves (whose `route` is their path, as many as there are paths).
    let metricsRoute: String
    /// The claims the connect hook accepted the socket with, as a JSON object ("{}" for none).
    let claimsJSON: String
    /// When a message last went in or out, in the owning loop's monotonic nanoseconds.
    let lastActive: Atomic<UInt64>
    /// Set by a first subscription: only then does closing the socket clear its topics.
    let subscribed = Atomic<Bool>(false)

    /// `lastActive` in milliseconds since the Unix epoch.
    var lastActiveMillis: Int64 {
        let ago = EventLoop.monotonicNanos() &- lastActive.load(ordering: .relaxed)
        return EventLoop.wallMillis() - Int64(ago / 1_000_000)
    }

    init(socketId: String, uri: String, route: String, request: HTTPRequestHead, parameters: [(name: String, value: String)], subprotocol: String,
         extensions: String, openedAt: Int64, remoteAddress: String, metricsRoute: String, claimsJSON: String = "{}", now: UInt64) {
        self.metricsRoute = metricsRoute
        self.remoteAddress = remoteAddress
        self.claimsJSON = claimsJSON
        lastActive = Atomic(now)
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
