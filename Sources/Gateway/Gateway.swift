import Foundation
import LuaRuntime
import Reactor

/// A start-up failure: the message names the key or file at fault; the process exits with 2.
public struct StartupError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// The running gateway: one worker per loop, all listening on the same port, and a supervisor on
/// the main thread for signals, script hot reload and shutdown.
public final class Gateway {
    private let shared: SharedState
    private var config: GatewayConfig
    private var scripts: ScriptSet
    /// Reads the config again for SIGHUP (the file plus the command line's overrides).
    private let reloadConfig: () throws -> GatewayConfig
    public let port: Int

    /// Loads routes and scripts, compiles every script once to report errors, and binds the port.
    public init(config: GatewayConfig, reloadConfig: @escaping () throws -> GatewayConfig) throws(StartupError) {
        Log.level = config.logLevel
        Log.format = config.logFormat
        self.config = config
        self.reloadConfig = reloadConfig
        let (scripts, problems): (ScriptSet, [ScriptSet.Problem])
        do { (scripts, problems) = try ScriptSet.load(folder: config.endpoints, previous: nil) } catch { throw StartupError(message: error.message) }
        if let first = problems.first { throw StartupError(message: first.message) }
        self.scripts = scripts
        var cluster: ClusterState?
        if let settings = config.cluster {
            do {
                cluster = ClusterState(settings: settings, password: try settings.resolvedPassword(),
                                       nodeId: settings.nodeId ?? SharedState.randomNodeId())
            } catch {
                throw StartupError(message: error.message)
            }
        }
        shared = SharedState(endpointsFolder: config.endpoints, keystoreMaxBytes: config.keystoreMaxBytes, cluster: cluster)
        if let cluster {
            Log.info("cluster: node \(cluster.nodeId), Redis \(cluster.settings.redis), prefix \(cluster.settings.prefix)")
        }

        Socket.ignoreBrokenPipes()
        Gateway.checkOpenFilesLimit(config)
        var listeners: [Int32] = []
        var port = config.port
        for _ in 0..<config.effectiveWorkers {
            do {
                let fd = try Socket.listen(host: config.host, port: UInt16(port))
                port = Socket.localPort(fd)
                listeners.append(fd)
            } catch {
                throw StartupError(message: "\(error)")
            }
        }
        self.port = port
        var adminListeners: [Int32] = []
        let adminToken: String?
        do { adminToken = try config.resolvedAdminToken() } catch { throw StartupError(message: error.message) }
        if adminToken != nil {
            var adminPort = config.adminPort
            for _ in listeners {
                do {
                    let fd = try Socket.listen(host: config.adminHost, port: UInt16(adminPort))
                    adminPort = Socket.localPort(fd)
                    adminListeners.append(fd)
                } catch {
                    throw StartupError(message: "admin listener on \(config.adminHost):\(config.adminPort): \(error)")
                }
            }
            Log.info("management API on \(config.adminHost):\(adminPort)")
        }
        let tls = try Gateway.loadTLS(config)
        for (i, spec) in config.outbound.enumerated() {
            guard scripts.sources[spec.script] != nil else {
                throw StartupError(message: "config key \"outbound[\(i)].script\": \(spec.script) is not in the endpoints folder \(config.endpoints)")
            }
            if spec.url.secure {
                do {
                    _ = try shared.tlsClientContext(caFile: spec.caFile)
                } catch {
                    throw StartupError(message: "config key \"outbound[\(i)]\": \(error.message)")
                }
            }
        }
        // Signals are blocked before any loop thread exists, so only the supervisor's signalfd sees them.
        SignalWatcher.blockSignals()
        shared.workers = listeners.enumerated().map {
            Worker(index: $0.offset, shared: shared, config: config, scripts: scripts, listenFd: $0.element, tls: tls,
                   adminListenFd: adminListeners.isEmpty ? nil : adminListeners[$0.offset], adminToken: adminToken)
        }
        for route in scripts.routes { Log.info("\(route.isHTTP ? "HTTP route" : "route") \(route.pattern) -> \(route.file)") }
        if scripts.hasEventHandler { Log.info("event handler \(Router.eventHandlerFile) serves every other path") }
    }

    /// Raises the open-files limit as far as it goes and says when it cannot hold
    /// limits.maxConnections: past it, new connections are refused (see Listener).
    private static func checkOpenFilesLimit(_ config: GatewayConfig) {
        guard let limit = ServiceManager.raiseOpenFilesLimit() else { return }
        // Listeners (two per loop with the admin port), epoll and eventfd per loop, outbound
        // connections, Http.request's pool, the resolver, logs and TLS files: a margin.
        let own = 4 * config.effectiveWorkers + config.outbound.count + 256
        Log.info("open files limit \(limit == Int.max ? "unlimited" : String(limit))")
        if limit < config.maxConnections + own {
            Log.warn("the open files limit (\(limit)) cannot hold limits.maxConnections (\(config.maxConnections)) and the gateway's own descriptors (about \(own)): connections past it are refused; raise it (LimitNOFILE= in the systemd unit, ulimit -n) or lower limits.maxConnections")
        }
    }

    private static func loadTLS(_ config: GatewayConfig) throws(StartupError) -> TLSServerContext? {
        guard let certificate = config.tlsCertificate, let key = config.tlsPrivateKey else { return nil }
        do {
            return try TLSServerContext.load(certificateFile: certificate, privateKeyFile: key)
        } catch {
            throw StartupError(message: error.message)
        }
    }

    /// Starts the loops and runs the supervisor until shutdown; returns the exit code.
    public func run() -> Int32 {
        for worker in shared.workers { worker.start() }
        for (i, spec) in config.outbound.enumerated() {
            let worker = shared.workers[i % shared.workers.count]
            worker.loop.post {
                if let failure = worker.connectOutbound(spec) { Log.error("outbound \(spec.name): \(failure.message)") }
            }
        }
        Log.info("wsgate listening on \(config.host):\(port) (\(config.tlsCertificate == nil ? "ws" : "wss")) with \(shared.workers.count) loops")
        ServiceManager.notify("READY=1\nSTATUS=listening on \(config.host):\(port)")
        let supervisor = Supervisor(gateway: self)
        supervisor.run()
        return 0
    }

    // MARK: Supervisor actions (main thread)

    /// Rescans the endpoints folder; changed scripts reach every loop through its mailbox.
    fileprivate func reloadScripts() {
        let next: ScriptSet
        let problems: [ScriptSet.Problem]
        do {
            (next, problems) = try ScriptSet.load(folder: config.endpoints, previous: scripts)
        } catch {
            Log.error("cannot reload scripts: \(error.message)")
            return
        }
        for problem in problems { Log.error("\(problem.message); the previous version stays in service") }
        let before = Set(scripts.sources.keys), after = Set(next.sources.keys)
        let changed = after.intersection(before).filter { scripts.sources[$0] != next.sources[$0] }
        guard before != after || !changed.isEmpty else { return }
        for file in after.subtracting(before).sorted() { Log.info("script added: \(file)") }
        for file in changed.sorted() { Log.info("script changed: \(file)") }
        for file in before.subtracting(after).sorted() { Log.info("script removed: \(file); its sockets are closed with 1001") }
        scripts = next
        for worker in shared.workers { worker.loop.post { worker.apply(next) } }
    }

    /// SIGHUP: scripts, plus the config keys that can change live.
    fileprivate func reloadConfiguration() {
        reloadScripts()
        let next: GatewayConfig
        do {
            next = try reloadConfig()
        } catch {
            Log.error("config not reloaded, the current one stays in service: \(error)")
            return
        }
        for (old, new) in zip(config.restartOnlySettings, next.restartOnlySettings) where old.value != new.value {
            Log.warn("config key \(old.key) changed from \(old.value) to \(new.value): it takes effect after a restart")
        }
        if config.tlsCertificate != nil && next.tlsCertificate != nil {
            // The certificate and key are read again: new connections use them, open ones go on.
            do {
                let tls = try Gateway.loadTLS(next)
                for worker in shared.workers { worker.loop.post { worker.tlsContext = tls } }
                Log.info("TLS certificate \(next.tlsCertificate ?? "-") reloaded")
            } catch {
                Log.error("TLS certificate not reloaded, the current one stays in service: \(error.message)")
            }
        }
        var live = next
        live.host = config.host
        live.tlsCertificate = config.tlsCertificate
        live.tlsPrivateKey = config.tlsPrivateKey
        live.port = config.port
        live.endpoints = config.endpoints
        live.workers = config.workers
        live.scriptMemoryBytes = config.scriptMemoryBytes
        (live.adminHost, live.adminPort, live.adminToken, live.adminTokenFile) = (config.adminHost, config.adminPort, config.adminToken, config.adminTokenFile)
        config = live
        shared.keystore.maxBytes = live.keystoreMaxBytes
        Log.level = live.logLevel
        Log.format = live.logFormat
        for worker in shared.workers { worker.loop.post { worker.update(live) } }
        Log.info("config reloaded")
    }

    fileprivate func beginShutdown() {
        ServiceManager.notify("STOPPING=1")
        for worker in shared.workers { worker.loop.post { worker.beginShutdown() } }
    }

    fileprivate var openSockets: Int { shared.liveSockets.load(ordering: .relaxed) }
    fileprivate var endpointsFolder: String { config.endpoints }
    fileprivate var shutdownTimeoutMs: Int { config.shutdownTimeoutMs }
}

/// The main thread's own event loop: signals, and changes to the endpoints folder.
private final class Supervisor {
    private let gateway: Gateway
    private let loop = EventLoop(index: -1)
    private var signals: SignalWatcher?
    private var watcher: FolderWatcher?
    private var reloadPending = false
    private var stopping = false
    private var done = false

    init(gateway: Gateway) {
        self.gateway = gateway
    }

    func run() {
        signals = SignalWatcher(loop: loop) { [unowned self] in self.received($0) }
        watcher = FolderWatcher(folder: gateway.endpointsFolder, loop: loop) { [unowned self] in self.scriptsChanged() }
        if watcher == nil { Log.warn("inotify is not available: scripts reload on SIGHUP only") }
        while !done { loop.runOnce() }
    }

    private func received(_ signal: Int32) {
        if signal == SIGHUP {
            Log.info("SIGHUP: reloading scripts and config")
            gateway.reloadConfiguration()
        } else if !stopping {
            stop(signal)
        } else {
            Log.warn("second stop signal: exiting now")
            done = true
        }
    }

    private func scriptsChanged() {
        // Editors write a file in several steps: wait for the burst to settle.
        guard !reloadPending else { return }
        reloadPending = true
        loop.schedule(after: 200_000_000) { [unowned self] in
            self.reloadPending = false
            self.watcher?.watchTree()
            self.gateway.reloadScripts()
        }
    }

    private func stop(_ signal: Int32) {
        stopping = true
        let timeout = UInt64(gateway.shutdownTimeoutMs) * 1_000_000
        Log.info("signal \(signal): closing \(gateway.openSockets) sockets with 1001, waiting up to \(timeout / 1_000_000) ms")
        gateway.beginShutdown()
        let deadline = loop.now + timeout
        func check() {
            let open = gateway.openSockets
            if open == 0 || loop.now >= deadline {
                if open > 0 { Log.warn("shutdown timeout: \(open) sockets did not finish their close handshake") }
                Log.info("stopped")
                done = true
            } else {
                loop.schedule(after: 20_000_000, check)
            }
        }
        loop.schedule(after: 10_000_000, check)
    }
}
