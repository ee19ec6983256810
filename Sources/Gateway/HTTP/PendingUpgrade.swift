import WebSocketCodec

/// An upgrade that passed routing, origin and subprotocol checks and negotiated its extensions:
/// what the 101 and the socket's info are made of once the connect hook lets it through.
struct PendingUpgrade {
    let socketId: String
    let uri: String
    let route: String
    let head: HTTPRequestHead
    let parameters: [(name: String, value: String)]
    let subprotocol: String
    let extensions: String
    let key: String
    let extraHeaders: [String]
    let deflate: DeflateSettings?
    let script: EndpointScript?
}

/// One run of `_connect.lua` for a pending upgrade, and what the hook decided.
final class ConnectGate {
    enum Decision {
        /// `websocketInfo.accept{claims=, expires_at=}`: claims already encoded as JSON.
        case accept(claimsJSON: String, expiresAt: Double?)
        /// `websocketInfo.reject{status=, message=}`.
        case reject(status: Int, message: String)
        /// A call with arguments that cannot be honoured: the gate fails closed.
        case invalid(String)
    }

    let connection: Connection
    let upgrade: PendingUpgrade
    var decision: Decision?

    init(connection: Connection, upgrade: PendingUpgrade) {
        self.connection = connection
        self.upgrade = upgrade
    }
}
