import Reactor

/// Every outbound connection of every loop by name: which loop owns it and its state, so a script on
/// any loop can send to it, list it or get a 503 while it reconnects. The lock is held only for
/// dictionary operations.
final class OutboundRegistry {
    enum State: String {
        case connecting, open, closed
    }

    struct Entry {
        /// Tells a connection apart from an earlier one of the same name.
        let id: Int
        let worker: Int
        let contentType: OutboundContentType
        let sendQueue: SendQueueGauge
        var url: String
        var state = State.connecting
        /// Milliseconds since the Unix epoch when the state last changed.
        var since: Int64
        /// A reconnect is scheduled (false once disconnected).
        var reconnecting = false
        /// `Websocket.disconnect` was called: the name can be taken by a new connect.
        var disconnected = false
    }

    private var entries: [String: Entry] = [:]
    private var lastId = 0
    private let lock = Lock()

    enum Claim {
        case claimed(id: Int)
        /// The name serves a live connection.
        case inUse
    }

    /// Takes `name` for a new connection on `worker`; a disconnected one of that name is replaced
    /// (`replaced` gives its owner and id, to drop it there).
    func claim(_ name: String, worker: Int, url: String, contentType: OutboundContentType, sendQueue: SendQueueGauge) -> (Claim, replaced: Entry?) {
        lock.locked {
            let previous = entries[name]
            if let previous, !previous.disconnected { return (.inUse, nil) }
            lastId += 1
            entries[name] = Entry(id: lastId, worker: worker, contentType: contentType, sendQueue: sendQueue, url: url, since: EventLoop.wallMillis())
            return (.claimed(id: lastId), previous)
        }
    }

    /// Changes the entry of connection `id`, if the name still belongs to it.
    func update(_ name: String, id: Int, _ change: (inout Entry) -> Void) {
        lock.locked {
            guard var entry = entries[name], entry.id == id else { return }
            let before = entry.state
            change(&entry)
            if entry.state != before { entry.since = EventLoop.wallMillis() }
            entries[name] = entry
        }
    }

    func lookup(_ name: String) -> Entry? {
        lock.locked { entries[name] }
    }

    /// Entries sorted by name.
    func all() -> [(name: String, entry: Entry)] {
        lock.locked { entries.map { ($0.key, $0.value) } }.sorted { $0.name < $1.name }
    }
}
