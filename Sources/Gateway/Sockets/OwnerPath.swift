import Reactor
import WebSocketCodec

/// A socket as a caller names it: an accepted socket by id, or an outbound connection by name.
enum SocketRef {
    case socket(String)
    case outbound(String)
}

/// The one path from any loop to the owner of a socket. Every operation on a socket by id or name
/// goes through it, so every caller gets the same answers: unknown or closing → 404, a send queue
/// over half of limits.sendQueueBytes → 429, an outbound connection that is not open → 503.
///
/// The owner is this loop (act at once), another loop of this process (through its mailbox, where
/// the socket is looked up again: it may have closed meanwhile), or, in a cluster, another node
/// (the socket id names it). The calls by socket id that take a `then` answer `.now` for a socket
/// of this node and `.later`, through `then` on this loop, for another node's; the calls without
/// one act on this node's sockets only.
struct OwnerPath {
    /// The calling loop.
    let worker: Worker

    /// Where a socket lives, as seen from the calling loop.
    private enum Owner {
        case here(Connection)
        case loop(Worker, LocalKey, SendQueueGauge)
    }

    /// How the owning loop finds its socket again when a posted operation arrives.
    enum LocalKey {
        case socket(String)
        /// A link is its name plus the id of that connection, so a newer one of the same name is not hit.
        case link(String, id: Int)
    }

    private func owner(of ref: SocketRef) -> Result<Owner, ServiceFailure> {
        let shared = worker.shared
        switch ref {
        case .socket(let id):
            if let connection = worker.connections[id] {
                return connection.isOpen ? .success(.here(connection)) : .failure(.notFound("socket \(id) is closed"))
            }
            guard let entry = shared.registry.lookup(id) else { return .failure(.notFound("socket \(id) is not open")) }
            return .success(.loop(shared.workers[entry.worker], .socket(id), entry.info.sendQueue))
        case .outbound(let name):
            guard let entry = shared.outbound.lookup(name) else { return .failure(.notFound("no outbound connection named \(name)")) }
            guard entry.state == .open else {
                let why = entry.disconnected ? "disconnected" : (entry.state == .connecting ? "connecting" : "reconnecting")
                return .failure(.unavailable("outbound connection \(name) is \(why)"))
            }
            guard entry.worker == worker.index else {
                return .success(.loop(shared.workers[entry.worker], .link(name, id: entry.id), entry.sendQueue))
            }
            guard let connection = worker.link(name, id: entry.id)?.connection, connection.isOpen else {
                return .failure(.unavailable("outbound connection \(name) is closing"))
            }
            return .success(.here(connection))
        }
    }

    /// Queues a message on the socket; bytes for another loop are copied into its mailbox.
    func send(to ref: SocketRef, _ opcode: Opcode, _ payload: UnsafeRawBufferPointer) -> ServiceFailure? {
        switch owner(of: ref) {
        case .failure(let failure):
            return failure
        case .success(.here(let connection)):
            return connection.offer(opcode, payload) ? nil : OwnerPath.slowReader(ref)
        case .success(.loop(let owner, let key, let gauge)):
            let count = payload.count
            // Count the message into the gauge now: the owner publishes its real queue only when it
            // gets to its mailbox, and a script sending in a loop must see 429 before then.
            if gauge.bytes.wrappingAdd(count, ordering: .relaxed).oldValue > worker.config.sendQueueBytes / 2 {
                owner.loop.post { owner.connection(key)?.refuse(count) }
                return OwnerPath.slowReader(ref)
            }
            let bytes = Array(payload)
            owner.loop.post {
                guard let connection = owner.connection(key) else {
                    if case .link(let name, _) = key { Log.warn("outbound \(name): a message from another loop arrived after the connection closed; it was not sent") }
                    return
                }
                _ = bytes.withUnsafeBytes { connection.offer(opcode, $0) }
            }
            return nil
        }
    }

    /// Queues a message on every subscriber of `topic`: the frame is built once (and compressed
    /// once per window size for the sockets without context takeover) and one mailbox job per other
    /// loop carries it. A subscriber whose send queue is past half of limits.sendQueueBytes is
    /// skipped, as `send` would answer it 429, and the slow-reader rules go on for it. Returns how
    /// many sockets the message was queued to.
    func publish(_ topic: String, _ opcode: Opcode, _ payload: UnsafeRawBufferPointer) -> Int {
        let subscribers = worker.shared.topics.subscribers(of: topic)
        guard !subscribers.isEmpty else { return 0 }
        let message = PreparedMessage(opcode, payload)
        let half = worker.config.sendQueueBytes / 2
        let count = payload.count
        var delivered = 0
        var elsewhere = [[String]](repeating: [], count: worker.shared.workers.count)
        for subscriber in subscribers {
            if subscriber.worker == worker.index {
                if let connection = worker.connection(.socket(subscriber.info.socketId)), connection.offer(message) { delivered += 1 }
                continue
            }
            let owner = worker.shared.workers[subscriber.worker]
            let id = subscriber.info.socketId
            if subscriber.info.bytes.wrappingAdd(count, ordering: .relaxed).oldValue > half {
                owner.loop.post { owner.connection(.socket(id))?.refuse(count) }
                continue
            }
            elsewhere[subscriber.worker].append(id)
            delivered += 1
        }
        for (index, ids) in elsewhere.enumerated() where !ids.isEmpty {
            let owner = worker.shared.workers[index]
            owner.loop.post {
                for id in ids { _ = owner.connection(.socket(id))?.offer(message) }
            }
        }
        return delivered
    }

    /// Subscribes an open socket of this node to `topic`.
    func subscribe(_ socketId: String, topic: String) -> ServiceFailure? {
        let shared = worker.shared
        guard let entry = shared.registry.lookup(socketId) else { return .notFound("socket \(socketId) is not open") }
        return shared.topics.subscribe(entry, topic: topic, registry: shared.registry) ? nil : .notFound("socket \(socketId) is closed")
    }

    func unsubscribe(_ socketId: String, topic: String) -> ServiceFailure? {
        guard worker.shared.registry.lookup(socketId) != nil else { return .notFound("socket \(socketId) is not open") }
        worker.shared.topics.unsubscribe(socketId, topic: topic)
        return nil
    }

    func subscriptions(_ socketId: String) -> Result<[String], ServiceFailure> {
        guard worker.shared.registry.lookup(socketId) != nil else { return .failure(.notFound("socket \(socketId) is not open")) }
        return .success(worker.shared.topics.topics(of: socketId))
    }

    /// Starts the socket's closing handshake.
    func close(_ ref: SocketRef, code: CloseCode = .normal) -> ServiceFailure? {
        switch owner(of: ref) {
        case .failure(let failure):
            return failure
        case .success(.here(let connection)):
            connection.startClose(code)
        case .success(.loop(let owner, let key, _)):
            owner.loop.post { owner.connection(key)?.startClose(code) }
        }
        return nil
    }

    /// What the socket's upgrade established.
    func info(_ socketId: String) -> Result<ConnectionInfo, ServiceFailure> {
        guard let entry = worker.shared.registry.lookup(socketId) else { return .failure(.notFound("socket \(socketId) is not open")) }
        return .success(entry.info)
    }

    /// Runs `action` on the named outbound link where it lives, whatever its state (disconnect and
    /// reset apply to a link that is reconnecting too).
    func withLink(_ name: String, _ action: @escaping (OutboundLink) -> Void) -> ServiceFailure? {
        guard let entry = worker.shared.outbound.lookup(name) else { return .notFound("no outbound connection named \(name)") }
        let owner = worker.shared.workers[entry.worker]
        if owner === worker {
            if let link = worker.link(name, id: entry.id) { action(link) }
        } else {
            owner.loop.post { if let link = owner.link(name, id: entry.id) { action(link) } }
        }
        return nil
    }

    static func slowReader(_ ref: SocketRef) -> ServiceFailure {
        switch ref {
        case .socket(let id): return .tooManyRequests("socket \(id) is not reading: its send queue is over half of limits.sendQueueBytes")
        case .outbound(let name): return .tooManyRequests("outbound connection \(name) is not reading: its send queue is over half of limits.sendQueueBytes")
        }
    }
}

extension Worker {
    /// The open connection a posted operation is for, if it is still open on this loop.
    func connection(_ key: OwnerPath.LocalKey) -> Connection? {
        let connection: Connection?
        switch key {
        case .socket(let id): connection = connections[id]
        case .link(let name, let id): connection = link(name, id: id)?.connection
        }
        return connection?.isOpen == true ? connection : nil
    }

    var owners: OwnerPath { OwnerPath(worker: self) }
}

/// How an operation on a socket is answered: at once, or later through the caller's `then`.
enum OwnerAnswer<T> {
    case now(T)
    case later
}

/// The calls that reach a socket on whichever node owns it. A nil `then` means the caller cannot
/// wait: nothing is sent to another node, and the answer is `.later` (the caller raises its error).
extension OwnerPath {
    /// The node that owns the socket, when it is another node of the cluster.
    private func remoteNode(of socketId: String) -> String? {
        worker.remoteCalls?.remoteNode(of: socketId)
    }

    /// Asks `node` for `operation` on `socketId`; `done` gets the owner's answer.
    private func ask(_ node: String, _ operation: NodeMessage.Operation, socket socketId: String,
                     _ fill: (inout NodeMessage) -> Void = { _ in }, _ done: @escaping (Result<[UInt8], ServiceFailure>) -> Void) {
        guard let calls = worker.remoteCalls else { return }
        var request = calls.request(operation)
        request.socket = socketId
        fill(&request)
        calls.call(request, to: node) { done($0.flatMap(\.outcome)) }
    }

    func send(to socketId: String, _ opcode: Opcode, _ payload: UnsafeRawBufferPointer,
              then: ((ServiceFailure?) -> Void)?) -> OwnerAnswer<ServiceFailure?> {
        guard let node = remoteNode(of: socketId) else { return .now(send(to: .socket(socketId), opcode, payload)) }
        guard let then else { return .later }
        let bytes = Array(payload)
        ask(node, .send, socket: socketId, { ($0.opcode, $0.payload) = (opcode.rawValue, bytes) }) { then($0.failure) }
        return .later
    }

    /// `send` for a caller that does not wait for another node: a socket of this node answers as
    /// above; a message for another node's socket is put on its way and answers nil (404 when that
    /// node is not in the cluster, 503 while Redis is unreachable), whatever the owner finds.
    func sendUnanswered(to socketId: String, _ opcode: Opcode, _ payload: UnsafeRawBufferPointer) -> ServiceFailure? {
        guard let node = remoteNode(of: socketId), let calls = worker.remoteCalls else { return send(to: .socket(socketId), opcode, payload) }
        var request = calls.request(.send, answered: false)
        (request.socket, request.opcode, request.payload) = (socketId, opcode.rawValue, Array(payload))
        return calls.tell(request, to: node)
    }

    /// `publish` on every node: this node's subscribers at once, then the topic's channel for the
    /// others. Waiting, the answer is the total, later (a node that does not answer in time counts
    /// none); with `wait` false, or while Redis is unreachable, it is this node's count, now.
    func publish(_ topic: String, _ opcode: Opcode, _ payload: UnsafeRawBufferPointer, wait: Bool,
                 then: ((Int) -> Void)?) -> OwnerAnswer<Int> {
        guard let calls = worker.remoteCalls, worker.redis?.isUp == true else { return .now(publish(topic, opcode, payload)) }
        // A caller that cannot wait gets nothing done, not even here (it raises its error).
        if wait && then == nil { return .later }
        let delivered = publish(topic, opcode, payload)
        var request = calls.request(.publish, answered: wait)
        (request.topic, request.opcode, request.payload) = (topic, opcode.rawValue, Array(payload))
        guard wait, let then else {
            calls.publishUncounted(request)
            return .now(delivered)
        }
        calls.publish(request) { then(delivered + $0) }
        return .later
    }

    func close(_ socketId: String, then: ((ServiceFailure?) -> Void)?) -> OwnerAnswer<ServiceFailure?> {
        guard let node = remoteNode(of: socketId) else { return .now(close(.socket(socketId))) }
        guard let then else { return .later }
        ask(node, .close, socket: socketId) { then($0.failure) }
        return .later
    }

    /// What a socket's upgrade established: its `ConnectionInfo` here, or the JSON another node
    /// sent (the fields scripts get, or with `forAdmin` the management API's description).
    enum Description {
        case here(ConnectionInfo)
        case json([UInt8])
    }

    func describe(_ socketId: String, forAdmin: Bool,
                  then: ((Result<Description, ServiceFailure>) -> Void)?) -> OwnerAnswer<Result<Description, ServiceFailure>> {
        guard let node = remoteNode(of: socketId) else { return .now(info(socketId).map { .here($0) }) }
        guard let then else { return .later }
        ask(node, forAdmin ? .describe : .info, socket: socketId) { then($0.map { .json($0) }) }
        return .later
    }

    /// In a cluster the answer waits until this node (or the socket's) listens on the topic's
    /// channel: from then on a message published on any node reaches the socket.
    func subscribe(_ socketId: String, topic: String, then: ((ServiceFailure?) -> Void)?) -> OwnerAnswer<ServiceFailure?> {
        guard let node = remoteNode(of: socketId) else {
            let failure = subscribe(socketId, topic: topic)
            guard failure == nil, worker.shared.cluster != nil, let then else { return .now(failure) }
            worker.listening(to: topic) { then(nil) }
            return .later
        }
        guard let then else { return .later }
        ask(node, .subscribe, socket: socketId, { $0.topic = topic }) { then($0.failure) }
        return .later
    }

    func unsubscribe(_ socketId: String, topic: String, then: ((ServiceFailure?) -> Void)?) -> OwnerAnswer<ServiceFailure?> {
        guard let node = remoteNode(of: socketId) else { return .now(unsubscribe(socketId, topic: topic)) }
        guard let then else { return .later }
        ask(node, .unsubscribe, socket: socketId, { $0.topic = topic }) { then($0.failure) }
        return .later
    }

    func subscriptions(_ socketId: String,
                       then: ((Result<[String], ServiceFailure>) -> Void)?) -> OwnerAnswer<Result<[String], ServiceFailure>> {
        guard let node = remoteNode(of: socketId) else { return .now(subscriptions(socketId)) }
        guard let then else { return .later }
        ask(node, .subscriptions, socket: socketId) { then($0.map(NodeMessage.lines)) }
        return .later
    }
}

extension Result where Failure == ServiceFailure {
    var failure: ServiceFailure? {
        if case .failure(let failure) = self { return failure }
        return nil
    }
}
