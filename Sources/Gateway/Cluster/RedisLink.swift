import Reactor
import Redis

/// A loop's command connection to the cluster's Redis, kept up: the name resolved off the loop,
/// AUTH and SELECT before anything else, reconnection with backoff (100 ms doubling to 5 s), and
/// every request bounded by cluster.requestTimeoutMs. While the link is down a request fails at
/// once with 503; one that gets no answer in time fails with 504. A link whose oldest request has
/// waited two heartbeats is taken for wedged (a peer that stopped without closing) and replaced.
final class RedisLink {
    /// Answers a request: the reply (an error reply included), or why there is none.
    typealias Completion = (Result<RedisReply, ServiceFailure>) -> Void

    private let loop: EventLoop
    private let settings: ClusterSettings
    private let password: String?
    private var connection: RedisConnection?
    private(set) var isUp = false
    /// Called on the loop each time the link comes up (again) and goes down.
    var onUp: (() -> Void)?
    var onDown: (() -> Void)?
    /// A subscriber link subscribes to these channels each time it comes up, and is up once Redis
    /// confirmed them all; it then carries nothing but their messages.
    var channels: [String] = []
    var onMessage: ((_ channel: [UInt8], _ payload: [UInt8]) -> Void)?
    /// Each answered request: its operation's name, how long it took, whether it failed.
    var observe: ((_ op: String, _ nanos: UInt64, _ failed: Bool) -> Void)?
    private var backoffMs = 100
    private var stopped = false
    /// Requests Redis has not answered yet (timed out ones included), oldest first from
    /// `pendingHead`, for the wedge check.
    private var pending: [Pending] = []
    private var pendingHead = 0
    /// A timer is set while any request waits (see `timeOut`).
    private var timeoutArmed = false
    private var lastFailure = ""

    private final class Pending {
        let sentAt: UInt64
        var done: Completion?
        /// Redis answered (a timed-out request stays pending until it does: the wedge check).
        var replied = false
        init(sentAt: UInt64, done: @escaping Completion) {
            self.sentAt = sentAt
            self.done = done
        }
    }

    /// Names the link in logs: "commands" or "subscriber".
    private let role: String

    init(loop: EventLoop, settings: ClusterSettings, password: String?, role: String = "commands") {
        self.loop = loop
        self.role = role
        self.settings = settings
        self.password = password
    }

    func start() {
        connect()
        scheduleWedgeCheck()
    }

    func stop() {
        stopped = true
        connection?.close()
        connection = nil
        wentDown()
    }

    private var requestTimeoutNanos: UInt64 { UInt64(settings.requestTimeoutMs) * 1_000_000 }

    /// Sends one command for operation `op` (the metrics' label). `done` runs exactly once, on the
    /// loop, never from inside this call.
    func request(_ op: String, _ args: [[UInt8]], _ done: @escaping Completion) {
        let started = EventLoop.monotonicNanos()
        let done: Completion = { [weak self] result in
            var failed = false
            if case .failure = result { failed = true } else if case .success(.error) = result { failed = true }
            self?.observe?(op, EventLoop.monotonicNanos() &- started, failed)
            done(result)
        }
        guard isUp, let connection else {
            let why = "Redis is unreachable (\(settings.redis))" + (lastFailure.isEmpty ? "" : ": \(lastFailure)")
            loop.post { done(.failure(.unavailable(why))) }
            return
        }
        let entry = Pending(sentAt: loop.now, done: done)
        let sent = connection.command(args) { [weak self] reply in
            guard let self else { return }
            entry.replied = true
            self.answered(entry, reply.map { .success($0) } ?? .failure(.unavailable("the connection to Redis was lost")))
        }
        guard sent else {
            loop.post { done(.failure(.unavailable("Redis refused the command"))) }
            return
        }
        pending.append(entry)
        // One timer serves every request: they share one timeout and Redis answers them in order,
        // so the oldest one still waiting is always the next to time out.
        if !timeoutArmed {
            timeoutArmed = true
            scheduleTimeOut(after: requestTimeoutNanos)
        }
    }

    private func scheduleTimeOut(after nanos: UInt64) {
        loop.schedule(after: nanos) { [weak self] in self?.timeOut() }
    }

    /// Fails the requests that have waited cluster.requestTimeoutMs, oldest first, and sets the
    /// timer for the next one. They stay pending until Redis answers them (the wedge check). The
    /// timer counts as set until the end, so that requests made by the failed ones' callbacks do
    /// not set a second one: the loop reaches them.
    private func timeOut() {
        let limit = requestTimeoutNanos
        var index = pendingHead
        while index < pending.count {
            let entry = pending[index]
            index += 1
            guard let done = entry.done else { continue }
            let waited = loop.now &- entry.sentAt
            guard waited >= limit else { return scheduleTimeOut(after: limit - waited) }
            entry.done = nil
            done(.failure(.gatewayTimeout("no answer from Redis within cluster.requestTimeoutMs (\(settings.requestTimeoutMs) ms)")))
        }
        timeoutArmed = false
    }

    private func answered(_ entry: Pending, _ result: Result<RedisReply, ServiceFailure>) {
        if let done = entry.done {
            entry.done = nil
            done(result)
        }
        // Replies come in order: the replied ones are at the front.
        while pendingHead < pending.count, pending[pendingHead].replied { pendingHead += 1 }
        if pendingHead == pending.count {
            pending.removeAll(keepingCapacity: pending.count < 4096)
            pendingHead = 0
        } else if pendingHead > 1024, pendingHead * 2 > pending.count {
            pending.removeFirst(pendingHead)
            pendingHead = 0
        }
    }

    // MARK: Connecting

    private func connect() {
        guard !stopped else { return }
        let endpoint = settings.redis
        if isIPLiteral(endpoint.host) { return open(ip: endpoint.host) }
        Resolver.resolve(host: endpoint.host, port: UInt16(endpoint.port), on: loop) { [weak self] result in
            guard let self, !self.stopped else { return }
            switch result {
            case .success(let addresses) where !addresses.isEmpty: self.open(ip: addresses[0].host)
            case .success: self.failed("\(endpoint.host) has no address")
            case .failure(let error): self.failed("\(error)")
            }
        }
    }

    private func isIPLiteral(_ host: String) -> Bool {
        host.contains(":") || host.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2E }
    }

    private func open(ip: String) {
        let fresh = RedisConnection(loop: loop)
        connection = fresh
        fresh.connect(ip: ip, port: settings.redis.port, timeoutNanos: 2 * requestTimeoutNanos + 1_000_000_000) { [weak self, weak fresh] failure in
            guard let self, let fresh, self.connection === fresh else { return }
            if let failure { return self.failed(failure) }
            fresh.onClose = { [weak self, weak fresh] why in
                guard let self, self.connection === fresh else { return }
                self.failed(why)
            }
            self.handshake(fresh)
        }
    }

    /// AUTH and SELECT, pipelined, then up; a refusal (a wrong password) is logged without the
    /// password and retried like any failure.
    private func handshake(_ fresh: RedisConnection) {
        var steps: [[[UInt8]]] = []
        if let password { steps.append([Array("AUTH".utf8), Array(password.utf8)]) }
        if settings.redis.database != 0 { steps.append([Array("SELECT".utf8), Array(String(settings.redis.database).utf8)]) }
        steps.append([Array("PING".utf8)])
        var remaining = steps.count
        var refused: String?
        // A server that accepted the connection but does not answer (stopped, partitioned).
        loop.schedule(after: 2 * requestTimeoutNanos + 1_000_000_000) { [weak self, weak fresh] in
            guard let self, let fresh, self.connection === fresh, !self.isUp, remaining > 0 else { return }
            self.failed("no answer to \(steps.map { String(decoding: $0[0], as: UTF8.self) }.joined(separator: ", "))")
        }
        for step in steps {
            let verb = String(decoding: step[0], as: UTF8.self)
            fresh.command(step) { [weak self, weak fresh] reply in
                guard let self, let fresh, self.connection === fresh else { return }
                if case .error(let why)? = reply, refused == nil { refused = "\(verb) refused: \(why)" }
                remaining -= 1
                guard remaining == 0 else { return }
                if let refused {
                    fresh.close()
                    return self.failed(refused)
                }
                if reply == nil { return }
                self.subscribeAll(fresh)
            }
        }
    }

    /// Adds a channel to a subscriber link (subscribed at once when connected, and on every
    /// reconnection). `listening` runs on the loop, maybe at once, when Redis has confirmed the
    /// subscription (a message published from then on reaches this node), or when it cannot: the
    /// link is down or goes down first.
    func subscribe(_ channel: String, listening: (() -> Void)? = nil) {
        if !channels.contains(channel) {
            channels.append(channel)
            if subscribed, let connection { send(subscribeTo: channel, on: connection) }
        }
        guard let listening else { return }
        if unconfirmed[channel] != nil { unconfirmed[channel]!.waiting.append(listening) } else { listening() }
    }

    func unsubscribe(_ channel: String) {
        guard let index = channels.firstIndex(of: channel) else { return }
        channels.remove(at: index)
        if subscribed { _ = connection?.unsubscribe(channel) }
    }

    /// A channel's SUBSCRIBEs Redis has not confirmed yet on this connection, and who waits for
    /// them: after SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBE the channel is listened on at the second
    /// confirmation, not the first.
    private struct Unconfirmed {
        var outstanding = 0
        var waiting: [() -> Void] = []
    }

    private var unconfirmed: [String: Unconfirmed] = [:]
    /// The connection is in subscribed mode: channels added now are subscribed to at once.
    private var subscribed = false

    private func send(subscribeTo channel: String, on fresh: RedisConnection, then: (() -> Void)? = nil) {
        unconfirmed[channel, default: Unconfirmed()].outstanding += 1
        let sent = fresh.subscribe(channel) { [weak self, weak fresh] confirmed in
            guard let self, let fresh, self.connection === fresh else { return }
            self.confirmed(channel)
            if confirmed { then?() }
        }
        // Refused: the connection is ending, and its end answers whoever waits.
        if !sent { confirmed(channel) }
    }

    private func confirmed(_ channel: String) {
        guard var entry = unconfirmed[channel] else { return }
        entry.outstanding -= 1
        guard entry.outstanding == 0 else {
            unconfirmed[channel] = entry
            return
        }
        unconfirmed[channel] = nil
        for listening in entry.waiting { listening() }
    }

    private func subscribeAll(_ fresh: RedisConnection) {
        guard !channels.isEmpty else { return cameUp() }
        fresh.onMessage = { [weak self] channel, payload in self?.onMessage?(channel, payload) }
        subscribed = true
        var remaining = channels.count
        for channel in channels {
            send(subscribeTo: channel, on: fresh) { [weak self] in
                remaining -= 1
                if remaining == 0 { self?.cameUp() }
            }
        }
    }

    /// Replaces the connection (a subscriber link whose probes stopped coming back).
    func restart(_ why: String) {
        guard connection != nil else { return }
        failed(why)
    }

    private func cameUp() {
        backoffMs = 100
        lastFailure = ""
        isUp = true
        Log.info("cluster: \(role) connection to \(settings.redis) up on loop \(loop.index)")
        onUp?()
    }

    private func failed(_ why: String) {
        connection?.close()
        connection = nil
        if isUp || lastFailure.isEmpty { Log.warn("cluster: Redis \(settings.redis) unreachable (\(role), loop \(loop.index)): \(why); retrying") }
        lastFailure = why
        wentDown()
        guard !stopped else { return }
        let delay = backoffMs
        backoffMs = min(backoffMs * 2, 5000)
        loop.schedule(after: UInt64(delay) * 1_000_000) { [weak self] in self?.connect() }
    }

    private func wentDown() {
        let was = isUp
        isUp = false
        subscribed = false
        let stillWaiting = unconfirmed.values.flatMap(\.waiting)
        unconfirmed = [:]
        for listening in stillWaiting { listening() }
        let waiting = pending[pendingHead...]
        pending = []
        pendingHead = 0
        for entry in waiting {
            entry.replied = true
            answered(entry, .failure(.unavailable("the connection to Redis was lost")))
        }
        if was { onDown?() }
    }

    private func scheduleWedgeCheck() {
        let every = UInt64(settings.heartbeatMs) * 1_000_000
        loop.schedule(after: every) { [weak self] in
            guard let self, !self.stopped else { return }
            if self.isUp, self.pendingHead < self.pending.count, case let oldest = self.pending[self.pendingHead],
               self.loop.now &- oldest.sentAt > 2 * every {
                self.failed("no reply for \((self.loop.now &- oldest.sentAt) / 1_000_000) ms")
            }
            self.scheduleWedgeCheck()
        }
    }
}
