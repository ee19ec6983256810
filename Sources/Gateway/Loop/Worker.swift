import Foundation
import Reactor
import WebSocketCodec

/// One event loop and what it owns: its listening socket and HTTP front, its Lua state and scripts,
/// its sockets and outbound connections. Everything here is touched only on the loop's thread;
/// other threads reach it through `loop.post` (see `OwnerPath`).
final class Worker {
    let index: Int
    let loop: EventLoop
    let shared: SharedState
    private(set) var config: GatewayConfig
    let listenPort: Int
    private(set) lazy var front = HTTPFront(worker: self, config: config)
    /// Unchecked, like `Connection.worker`: read several times per message, where a lazy or checked
    /// property costs a retain and a release per read. `ownedRunner` holds it; `withRunner` lends
    /// it without a retain.
    var runner: ScriptRunner { unmanagedRunner.unsafelyUnwrapped.takeUnretainedValue() }
    private var unmanagedRunner: Unmanaged<ScriptRunner>?
    private var ownedRunner: ScriptRunner?
    private var listener: Listener?
    private var adminListener: Listener?
    /// The management API, when the admin listener is on.
    private(set) var admin: AdminAPI?
    /// Set by `beginShutdown`: upgrades and the health route answer 503.
    private(set) var shuttingDown = false
    /// This loop's command connection to the cluster's Redis.
    private(set) var redis: RedisLink?
    /// Loop 0 keeps the node in the cluster and listens on its channel.
    private var membership: Membership?
    private var nodeChannel: NodeChannel?
    /// This loop's calls to other nodes.
    private(set) var remoteCalls: RemoteCalls?

    /// Upgraded sockets by id.
    private(set) var connections: [String: Connection] = [:]
    /// The outbound connections opened on this loop, by name.
    private(set) var links: [String: OutboundLink] = [:]
    /// This loop's counters for /metrics.
    var metrics = LoopMetrics()
    /// Connections with output queued during this loop iteration.
    var flushList: [Connection] = []
    /// The list `flushAll` is going through.
    private var flushing: [Connection] = []
    private(set) lazy var deadlines = Deadlines(loop: loop)
    /// Idle keep-alive connections of this loop's `Http.request` calls.
    private(set) lazy var httpPool = HTTPConnectionPool(loop: loop)
    /// Every socket reads into this one buffer first; only leftovers are copied per connection.
    let readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
    /// The limits and zlib streams this loop's WebSocket sessions share.
    let sessions: SessionShared
    /// Set when the port speaks TLS; replaced on SIGHUP, used by connections accepted afterwards.
    var tlsContext: TLSServerContext?

    init(index: Int, shared: SharedState, config: GatewayConfig, scripts: ScriptSet, listenFd: Int32, tls: TLSServerContext?,
         adminListenFd: Int32? = nil, adminToken: String? = nil) {
        self.index = index
        tlsContext = tls
        self.shared = shared
        self.config = config
        listenPort = Socket.localPort(listenFd)
        loop = EventLoop(index: index)
        sessions = SessionShared(maxMessageBytes: config.maxMessageBytes, compressionMinBytes: config.compressionMinBytes)
        ownedRunner = ScriptRunner(worker: self, config: config)
        unmanagedRunner = Unmanaged.passUnretained(ownedRunner!)
        apply(scripts)
        loop.afterIteration = { [unowned self] in self.flushAll() }
        listener = Listener(worker: self, fd: listenFd)
        if let adminListenFd, let adminToken {
            admin = AdminAPI(worker: self, token: adminToken)
            adminListener = Listener(worker: self, fd: adminListenFd, admin: true)
        }
        scheduleSweep()
        if index == 0 { scheduleKeystoreSweep() }
        if let cluster = shared.cluster {
            let link = RedisLink(loop: loop, settings: cluster.settings, password: cluster.password)
            link.observe = { [unowned self] op, nanos, failed in
                self.metrics.clusterRequests[op, default: 0] += 1
                if failed { self.metrics.clusterErrors[op, default: 0] += 1 }
                self.metrics.clusterDuration.observe(nanos: nanos)
            }
            redis = link
            remoteCalls = RemoteCalls(worker: self, cluster: cluster)
            if index == 0 {
                membership = Membership(cluster: cluster, link: link, loop: loop)
                nodeChannel = NodeChannel(worker: self, cluster: cluster)
            }
        }
    }

    /// Runs `then` on this loop, later, once this node of a cluster listens on the topic's channel
    /// in Redis or cannot (loop 0 holds that subscription).
    func listening(to topic: String, then: @escaping () -> Void) {
        let caller = loop
        let first = shared.workers[0]
        first.loop.post {
            guard let channel = first.nodeChannel else { return caller.post(then) }
            channel.listening(to: topic) { caller.post(then) }
        }
    }

    /// Why the health route answers 503, or nil when it answers 200: shutting down, or Redis
    /// unreachable while cluster.required.
    var unhealthy: String? {
        if shuttingDown { return "shutting down\n" }
        if let cluster = shared.cluster, cluster.settings.required, !cluster.up.load(ordering: .relaxed) { return "Redis unreachable\n" }
        return nil
    }

    /// Expired keys leave the shared keystore on time; one loop does it for all.
    private func scheduleKeystoreSweep() {
        loop.schedule(after: Keystore.sweepNanos) { [unowned self] in
            self.shared.keystore.sweep(now: EventLoop.monotonicNanos())
            self.scheduleKeystoreSweep()
        }
    }

    func start() {
        let thread = Thread { [self] in
            membership?.start()
            redis?.start()
            nodeChannel?.start()
            loop.run()
        }
        thread.name = "wsgate-loop-\(index)"
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// Flushes until no connection has output left: a flush can close a socket, whose close script
    /// may queue output for others.
    private func flushAll() {
        while !flushList.isEmpty {
            // Swapped with a spare rather than copied: emptying a list still referenced elsewhere
            // would allocate a new buffer every loop iteration.
            swap(&flushList, &flushing)
            // The list holds each socket for the call: no retain per socket.
            flushing.withUnsafeBufferPointer { list in
                for connection in list {
                    Unmanaged.passUnretained(connection)._withUnsafeGuaranteedRef { if !$0.isClosed { $0.flush() } }
                }
            }
            flushing.removeAll(keepingCapacity: true)
        }
    }

    // MARK: Live changes (run on this loop through its mailbox)

    /// Compiles new and changed scripts; sockets of a removed route are closed with 1001.
    func apply(_ set: ScriptSet) {
        runner.apply(set)
        front.routesChanged(set.routes, scripts: runner.scripts)
        for connection in connections.values where connection.script?.removed == true {
            connection.startClose(.goingAway, reason: "endpoint removed")
        }
        for link in links.values where runner.scripts[link.scriptFile] == nil && !link.stopped {
            Log.warn("outbound \(link.name): script \(link.scriptFile) was removed; disconnecting")
            link.disconnect(.goingAway)
        }
    }

    func update(_ newConfig: GatewayConfig) {
        config = newConfig
        front.configChanged(newConfig)
        runner.configChanged(newConfig)
        sessions.maxMessageBytes = newConfig.maxMessageBytes
        sessions.compressionMinBytes = newConfig.compressionMinBytes
    }

    func beginShutdown() {
        shuttingDown = true
        membership?.leave()
        for connection in connections.values { connection.startClose(.goingAway, reason: "server shutting down") }
        for link in links.values where !link.stopped { link.disconnect(.goingAway) }
    }

    // MARK: Pings and idle timeouts

    private func scheduleSweep() {
        let periods = [config.pingIntervalMs, config.idleTimeoutMs].filter { $0 > 0 }
        let every = min(max((periods.min() ?? 1000) / 4, 50), 1000)
        loop.schedule(after: UInt64(every) * 1_000_000) { [unowned self] in
            self.sweep()
            self.scheduleSweep()
        }
    }

    private func sweep() {
        let ping = UInt64(config.pingIntervalMs) * 1_000_000
        let idle = UInt64(config.idleTimeoutMs) * 1_000_000
        guard ping > 0 || idle > 0 else { return }
        for connection in connections.values { connection.tick(ping: ping, idle: idle) }
        // Outbound connections too: a server that stopped answering is found and dialled again.
        for link in links.values { link.connection?.tick(ping: ping, idle: idle) }
    }

    // MARK: Socket lifecycle

    /// An upgraded socket of a route: listed everywhere, then its script's `open` event.
    func opened(_ connection: Connection, info: ConnectionInfo) {
        connections[info.socketId] = connection
        metrics.accepted += 1
        shared.registry.add(info, worker: index)
        shared.liveSockets.add(1, ordering: .relaxed)
        Log.debug("socket opened", socket: info.socketId, route: info.route)
        runner.runScript(connection, event: .open, message: nil, binary: false)
    }

    func dispatchData(_ connection: Connection, _ payload: UnsafeRawBufferPointer, binary: Bool) {
        metrics.messagesReceived += 1
        metrics.bytesReceived += payload.count
        if let link = connection.link {
            runner.runOutboundScript(link, event: .data, message: payload, binary: binary)
        } else {
            withRunner { $0.runScript(connection, event: .data, message: payload, binary: binary) }
        }
    }

    @inline(__always)
    func withRunner<R>(_ body: (ScriptRunner) -> R) -> R {
        unmanagedRunner.unsafelyUnwrapped._withUnsafeGuaranteedRef(body)
    }

    func connectionClosed(_ connection: Connection) {
        if let link = connection.link {
            link.connectionEnded(connection)
            return
        }
        guard let info = connection.info else { return }
        connections.removeValue(forKey: info.socketId)
        metrics.disconnections[connection.closeCode ?? 1006, default: 0] += 1
        shared.liveSockets.subtract(1, ordering: .relaxed)
        Log.debug("socket closed", socket: info.socketId, route: info.route)
        runner.runScript(connection, event: .close, message: nil, binary: false)
    }

    // MARK: Outbound connections

    /// Opens a named outbound connection on this loop; the failure is what `Websocket.connect` returns.
    func connectOutbound(_ spec: OutboundSpec) -> ServiceFailure? {
        guard runner.scripts[spec.script] != nil else {
            return .badRequest("script \(spec.script) is not in the endpoints folder (or does not compile)")
        }
        if spec.url.secure {
            // A CA file that cannot serve is the caller's mistake: say so now, not in an error event.
            do {
                _ = try shared.tlsClientContext(caFile: spec.caFile)
            } catch {
                return .badRequest(error.message)
            }
        }
        let sendQueue = SendQueueGauge()
        let (claim, replaced) = shared.outbound.claim(spec.name, worker: index, url: spec.url.description, contentType: spec.contentType,
                                                      sendQueue: sendQueue)
        guard case .claimed(let id) = claim else {
            return .conflict("an outbound connection named \(spec.name) exists; disconnect it first")
        }
        if let replaced, replaced.worker != index {
            let owner = shared.workers[replaced.worker]
            owner.loop.post { owner.dropLink(spec.name, id: replaced.id) }
        }
        let link = OutboundLink(id: id, spec: spec, worker: self, sendQueue: sendQueue)
        links[spec.name] = link
        link.start()
        return nil
    }

    /// What /metrics gathers from this loop.
    func metricsSnapshot() -> MetricsScrape.Snapshot {
        MetricsScrape.Snapshot(metrics: metrics, scripts: runner.scripts.values.map { ($0.metricsRoute, $0.runs, $0.errors) })
    }

    /// Forgets a disconnected link whose name a new connection took.
    private func dropLink(_ name: String, id: Int) {
        if links[name]?.id == id { links[name] = nil }
    }

    /// The link of `name` on this loop, if it is still connection `id`.
    func link(_ name: String, id: Int) -> OutboundLink? {
        guard let link = links[name], link.id == id else { return nil }
        return link
    }
}
