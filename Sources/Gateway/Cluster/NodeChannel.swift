import Reactor
import Redis
import WebSocketCodec

/// Loop 0's subscription to this node's channel ("{prefix}:node:{id}"): requests from other
/// nodes are served here through the owner path (so they get the answers a local caller gets)
/// and answered on the asker's channel; replies to this node's calls go to the loop that waits.
/// A probe published to the channel every heartbeat must come back: a subscriber connection that
/// stops delivering without failing is replaced after two heartbeats without one.
final class NodeChannel {
    private unowned let worker: Worker
    private let cluster: ClusterState
    private let link: RedisLink
    private var lastProbe: UInt64 = 0
    private var probesSinceUp = 0

    init(worker: Worker, cluster: ClusterState) {
        self.worker = worker
        self.cluster = cluster
        link = RedisLink(loop: worker.loop, settings: cluster.settings, password: cluster.password, role: "subscriber")
        link.channels = [String(decoding: cluster.key("node", cluster.nodeId), as: UTF8.self)]
        let loop = worker.loop
        worker.shared.topics.watcher = { [weak self] topic in loop.post { self?.follow(topic) } }
    }

    /// Listens on a topic's channel while this node has subscribers to it, and only then.
    private func follow(_ topic: String) {
        if worker.shared.topics.hasSubscribers(topic) { link.subscribe(channel(of: topic)) } else { link.unsubscribe(channel(of: topic)) }
    }

    private func channel(of topic: String) -> String {
        String(decoding: cluster.key("topic", topic), as: UTF8.self)
    }

    /// Runs `then` once Redis has this node listening on the topic's channel (or cannot: Redis is
    /// unreachable), so that a subscription is not reported made while a message published on
    /// another node can still miss it. It may run at once.
    func listening(to topic: String, then: @escaping () -> Void) {
        guard worker.shared.topics.hasSubscribers(topic) else { return then() }
        link.subscribe(channel(of: topic), listening: then)
    }

    func start() {
        link.onMessage = { [weak self] _, payload in self?.received(payload) }
        link.onUp = { [weak self] in
            guard let self else { return }
            self.lastProbe = self.worker.loop.now
            self.probesSinceUp = 0
        }
        link.start()
        scheduleProbe()
    }

    private func received(_ bytes: [UInt8]) {
        guard let message = NodeMessage(decoding: bytes) else { return Log.warn("cluster: an unreadable message on this node's channel") }
        switch message.kind {
        case .reply where message.operation == .probe:
            lastProbe = worker.loop.now
        case .reply:
            let loop = Int(message.loop)
            guard loop < worker.shared.workers.count else { return }
            let owner = worker.shared.workers[loop]
            if owner === worker { worker.remoteCalls?.answered(message) } else { owner.loop.post { owner.remoteCalls?.answered(message) } }
        case .request:
            serve(message) { [weak self] result in
                guard let self, message.wantsReply else { return }
                let reply = message.reply(from: self.cluster.nodeId, result)
                self.worker.redis?.request("node_reply", [Array("PUBLISH".utf8), self.cluster.key("node", message.node), reply.encoded()]) { _ in }
            }
        }
    }

    /// What this node answers a request with, exactly what a local caller would get: at once, or
    /// for a subscription once this node listens on the topic's channel (the owner path waits).
    private func serve(_ request: NodeMessage, answer: @escaping (Result<[UInt8], ServiceFailure>) -> Void) {
        let owners = worker.owners
        let outcome = { (failure: ServiceFailure?) -> Result<[UInt8], ServiceFailure> in failure.map { .failure($0) } ?? .success([]) }
        let result: Result<[UInt8], ServiceFailure>
        switch request.operation {
        case .send:
            guard let opcode = Opcode(rawValue: request.opcode), !opcode.isControl else { return answer(.failure(.badRequest("bad opcode"))) }
            result = outcome(request.payload.withUnsafeBytes { owners.send(to: .socket(request.socket), opcode, $0) })
        case .close:
            result = outcome(owners.close(.socket(request.socket)))
        case .info:
            result = owners.info(request.socket).map { Array($0.scriptFieldsJSON.utf8) }
        case .describe:
            result = owners.info(request.socket).map { Array(AdminAPI.describe($0).utf8) }
        case .list:
            result = .success(Array(worker.shared.registry.all().map(\.info.socketId).joined(separator: "\n").utf8))
        case .closeAll:
            var closed = 0
            for entry in worker.shared.registry.all() where owners.close(.socket(entry.info.socketId)) == nil { closed += 1 }
            result = .success(Array(String(closed).utf8))
        case .probe:
            result = .success([])
        case .subscribe:
            let done = { answer(outcome($0)) }
            guard case .now(let failure) = owners.subscribe(request.socket, topic: request.topic, then: done) else { return }
            result = outcome(failure)
        case .unsubscribe:
            result = outcome(owners.unsubscribe(request.socket, topic: request.topic))
        case .subscriptions:
            result = owners.subscriptions(request.socket).map { Array($0.joined(separator: "\n").utf8) }
        case .subscribers:
            result = .success(Array(worker.shared.topics.subscribers(of: request.topic).map(\.info.socketId).joined(separator: "\n").utf8))
        case .publish:
            // Its own publication: delivered on this node already.
            guard request.node != cluster.nodeId else { return answer(.success(Array("0".utf8))) }
            guard let opcode = Opcode(rawValue: request.opcode), !opcode.isControl else { return answer(.failure(.badRequest("bad opcode"))) }
            let delivered = request.payload.withUnsafeBytes { owners.publish(request.topic, opcode, $0) }
            result = .success(Array(String(delivered).utf8))
        }
        answer(result)
    }

    private func scheduleProbe() {
        let every = UInt64(cluster.settings.heartbeatMs) * 1_000_000
        worker.loop.schedule(after: every) { [weak self] in
            guard let self else { return }
            if self.link.isUp, let commands = self.worker.redis, commands.isUp {
                if self.probesSinceUp >= 2, self.worker.loop.now &- self.lastProbe > 2 * every {
                    self.link.restart("no probe came back for \((self.worker.loop.now &- self.lastProbe) / 1_000_000) ms")
                } else {
                    self.probesSinceUp += 1
                    let probe = NodeMessage(kind: .reply, operation: .probe, id: 0, node: self.cluster.nodeId, loop: 0)
                    commands.request("probe", [Array("PUBLISH".utf8), self.cluster.key("node", self.cluster.nodeId), probe.encoded()]) { _ in }
                }
            }
            self.scheduleProbe()
        }
    }
}

extension ConnectionInfo {
    /// The fields `Websocket.info` gives scripts, as JSON, for a caller on another node.
    var scriptFieldsJSON: String {
        var headers: [String] = []
        var seen = Set<String>()
        for (name, value) in request.headers where seen.insert(name).inserted {
            headers.append(JSONText.quoted(name) + ":" + JSONText.quoted(value))
        }
        var parameters: [String] = []
        seen = []
        for (name, value) in self.parameters where seen.insert(name).inserted {
            parameters.append(JSONText.quoted(name) + ":" + JSONText.quoted(value))
        }
        return "{\"uri\":\(JSONText.quoted(uri)),\"route\":\(JSONText.quoted(route)),\"socket_id\":\(JSONText.quoted(socketId)),"
            + "\"subprotocol\":\(JSONText.quoted(subprotocol)),\"extensions\":\(JSONText.quoted(extensions)),"
            + "\"headers\":{\(headers.joined(separator: ","))},\"parameters\":{\(parameters.joined(separator: ","))},"
            + "\"claims\":\(claimsJSON),\"timestamp\":\(openedAt)}"
    }
}
