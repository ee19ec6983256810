import Reactor
import Redis

/// This node's place in the cluster, kept by loop 0: a heartbeat every cluster.heartbeatMs that
/// stamps the node into a sorted set with Redis's own clock (node clocks may disagree), drops the
/// nodes silent for cluster.nodeTimeoutMs, and reads who is left, in one script run. The first
/// heartbeat goes out as soon as the link is up, after Redis restarted empty too.
final class Membership {
    private let cluster: ClusterState
    private let link: RedisLink
    private let loop: EventLoop
    private var stopped = false

    /// KEYS[1] the node set; ARGV[1] this node, ARGV[2] the timeout in ms.
    private static let heartbeat = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        redis.call('ZADD', KEYS[1], now, ARGV[1])
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
        return redis.call('ZRANGE', KEYS[1], 0, -1)
        """

    init(cluster: ClusterState, link: RedisLink, loop: EventLoop) {
        self.cluster = cluster
        self.link = link
        self.loop = loop
    }

    func start() {
        link.onUp = { [weak self] in
            self?.cluster.up.store(true, ordering: .relaxed)
            self?.beat()
        }
        link.onDown = { [weak self] in self?.cluster.up.store(false, ordering: .relaxed) }
        schedule()
    }

    /// Leaves the node set at shutdown, so the others forget this node at once.
    func leave() {
        stopped = true
        link.request("leave", [Array("ZREM".utf8), cluster.key("nodes"), Array(cluster.nodeId.utf8)]) { _ in }
    }

    private func schedule() {
        loop.schedule(after: UInt64(cluster.settings.heartbeatMs) * 1_000_000) { [weak self] in
            guard let self, !self.stopped else { return }
            if self.link.isUp { self.beat() }
            self.schedule()
        }
    }

    private func beat() {
        let args: [[UInt8]] = [Array("EVAL".utf8), Array(Membership.heartbeat.utf8), Array("1".utf8), cluster.key("nodes"),
                               Array(cluster.nodeId.utf8), Array(String(cluster.settings.nodeTimeoutMs).utf8)]
        link.request("heartbeat", args) { [weak self] result in
            guard let self else { return }
            switch result {
            case .success(.array(let items)):
                self.cluster.nodes = items.compactMap(\.text)
            case .success(let other):
                Log.warn("cluster: the heartbeat got \(other)")
            case .failure(let failure):
                Log.debug("cluster: heartbeat failed: \(failure.message)")
            }
        }
    }
}
