import Reactor
import Redis

/// A loop's calls to other nodes: each request is published on the target node's channel with
/// this loop's command link, and its reply comes back through loop 0's subscriber (see
/// `NodeChannel`), which hands it to this loop. Every call ends exactly once: with the reply, 504
/// after cluster.requestTimeoutMs, 503 when Redis cannot take it, or at once when nobody listens
/// on the channel (404 for a node that left the cluster, 503 for one still in it).
final class RemoteCalls {
    typealias Completion = (Result<NodeMessage, ServiceFailure>) -> Void

    private unowned let worker: Worker
    private let cluster: ClusterState
    private var nextId: UInt64 = 0
    private var waiting: [UInt64: Completion] = [:]

    init(worker: Worker, cluster: ClusterState) {
        self.worker = worker
        self.cluster = cluster
    }

    /// The node a socket id names, when it is not this one (ids are "node-loop-counter").
    func remoteNode(of socketId: String) -> String? {
        guard let dash = socketId.firstIndex(of: "-") else { return nil }
        let node = socketId[..<dash]
        return node == cluster.nodeId ? nil : String(node)
    }

    /// A request from this loop, to be filled in with what it asks; one that is not `answered`
    /// has id 0, which asks the receiver for no reply.
    func request(_ operation: NodeMessage.Operation, answered: Bool = true) -> NodeMessage {
        guard answered else { return NodeMessage(kind: .request, operation: operation, id: 0, node: cluster.nodeId, loop: UInt16(worker.index)) }
        nextId &+= 1
        return NodeMessage(kind: .request, operation: operation, id: nextId, node: cluster.nodeId, loop: UInt16(worker.index))
    }

    /// Hands an unanswered request to `node` and returns: nil once it is on its way, 404 for a
    /// node that is not in the cluster, 503 while Redis is unreachable. What the owner makes of it
    /// (a closed socket, a full send queue) is not reported; requests from one loop to one node
    /// arrive in the order they were made.
    func tell(_ request: NodeMessage, to node: String) -> ServiceFailure? {
        guard let link = worker.redis, link.isUp else { return .unavailable("Redis is unreachable (\(cluster.settings.redis))") }
        guard cluster.nodes.contains(node) else { return .notFound("node \(node) is not in the cluster") }
        link.request(request.operation.label, [Array("PUBLISH".utf8), cluster.key("node", node), request.encoded()]) { _ in }
        return nil
    }

    func call(_ request: NodeMessage, to node: String, _ done: @escaping Completion) {
        guard let link = worker.redis else { return worker.loop.post { done(.failure(.unavailable("this node is not in a cluster"))) } }
        let id = request.id
        waiting[id] = done
        let channel = cluster.key("node", node)
        link.request(request.operation.label, [Array("PUBLISH".utf8), channel, request.encoded()]) { [weak self] result in
            guard let self else { return }
            switch result {
            case .failure(let failure):
                self.finish(id, .failure(failure))
            case .success(.integer(0)):
                let gone = !self.cluster.nodes.contains(node)
                self.finish(id, .failure(gone ? .notFound("node \(node) is not in the cluster") : .unavailable("node \(node) is not listening")))
            case .success(.error(let why)):
                self.finish(id, .failure(.badGateway("Redis refused PUBLISH: \(why)")))
            case .success:
                break
            }
        }
        worker.loop.schedule(after: UInt64(cluster.settings.requestTimeoutMs) * 1_000_000) { [weak self] in
            self?.finish(id, .failure(.gatewayTimeout("node \(node) did not answer within cluster.requestTimeoutMs (\(self?.cluster.settings.requestTimeoutMs ?? 0) ms)")))
        }
    }

    /// Calls every other live node with the same request; `done` gets their replies once all
    /// have answered, or the first failure.
    func callAll(_ operation: NodeMessage.Operation, topic: String = "", _ done: @escaping (Result<[NodeMessage], ServiceFailure>) -> Void) {
        let others = cluster.nodes.filter { $0 != cluster.nodeId }
        guard !others.isEmpty else { return worker.loop.post { done(.success([])) } }
        var replies: [NodeMessage] = []
        var failed = false
        for node in others {
            var each = request(operation)
            each.topic = topic
            call(each, to: node) { result in
                guard !failed else { return }
                switch result {
                case .success(let reply):
                    replies.append(reply)
                    if replies.count == others.count { done(.success(replies)) }
                case .failure(.notFound):
                    // Left the cluster since the last heartbeat: nothing of it to gather.
                    replies.append(NodeMessage(kind: .reply, operation: operation, id: 0, node: node, loop: 0))
                    if replies.count == others.count { done(.success(replies)) }
                case .failure(let failure):
                    failed = true
                    done(.failure(failure))
                }
            }
        }
    }

    /// Publishes on the topic's channel, which every node with subscribers to it listens on
    /// (this one included: it answers 0, having delivered already). `done` gets the sum the other
    /// nodes report: PUBLISH says how many listen, and each answers with its count; a node that
    /// does not answer within cluster.requestTimeoutMs counts none, and so does Redis failing.
    func publish(_ request: NodeMessage, _ done: @escaping (Int) -> Void) {
        guard let link = worker.redis else { return worker.loop.post { done(0) } }
        let gathering = Gathering(done)
        gatherings[request.id] = gathering
        let id = request.id
        link.request("publish", [Array("PUBLISH".utf8), cluster.key("topic", request.topic), request.encoded()]) { [weak self] result in
            guard let self else { return }
            if case .success(.integer(let listening)) = result {
                gathering.expected = listening
                if gathering.replies >= listening { self.endGathering(id) }
            } else {
                self.endGathering(id)
            }
        }
        worker.loop.schedule(after: UInt64(cluster.settings.requestTimeoutMs) * 1_000_000) { [weak self] in self?.endGathering(id) }
    }

    /// Publishes an unanswered request on the topic's channel: the listening nodes deliver and
    /// answer nothing, so one publisher's messages follow each other without waiting. Redis
    /// failing loses the message for the other nodes, as it would for a counted publish.
    func publishUncounted(_ request: NodeMessage) {
        guard let link = worker.redis else { return }
        link.request("publish", [Array("PUBLISH".utf8), cluster.key("topic", request.topic), request.encoded()]) { _ in }
    }

    private final class Gathering {
        let done: (Int) -> Void
        var expected: Int?
        var replies = 0
        var delivered = 0
        init(_ done: @escaping (Int) -> Void) { self.done = done }
    }

    private var gatherings: [UInt64: Gathering] = [:]

    private func endGathering(_ id: UInt64) {
        guard let gathering = gatherings.removeValue(forKey: id) else { return }
        gathering.done(gathering.delivered)
    }

    /// A reply for this loop arrived.
    func answered(_ reply: NodeMessage) {
        if let gathering = gatherings[reply.id] {
            gathering.replies += 1
            gathering.delivered += Int(String(decoding: reply.payload, as: UTF8.self)) ?? 0
            if let expected = gathering.expected, gathering.replies >= expected { endGathering(reply.id) }
            return
        }
        finish(reply.id, .success(reply))
    }

    private func finish(_ id: UInt64, _ result: Result<NodeMessage, ServiceFailure>) {
        waiting.removeValue(forKey: id)?(result)
    }
}
