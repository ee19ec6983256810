import Reactor
import Synchronization

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

/// Bytes queued for a socket and not yet written, published by the owning loop so senders on other
/// loops can see a slow reader before the owner's mailbox runs.
final class SendQueueGauge {
    let bytes = Atomic<Int>(0)
}

/// Every open socket of every loop: which loop owns it and its info. The lock is held only for
/// dictionary operations, never while a script runs.
final class Registry {
    struct Entry {
        let worker: Int
        let info: ConnectionInfo
    }

    private var entries: [String: Entry] = [:]
    private let lock = Lock()

    func add(_ info: ConnectionInfo, worker: Int) {
        lock.locked { entries[info.socketId] = Entry(worker: worker, info: info) }
    }

    func remove(_ socketId: String) {
        lock.locked { _ = entries.removeValue(forKey: socketId) }
    }

    func lookup(_ socketId: String) -> Entry? {
        lock.locked { entries[socketId] }
    }

    func all() -> [Entry] {
        lock.locked { Array(entries.values) }
    }

    var count: Int { lock.locked { entries.count } }
}
