import Reactor
import WebSocketCodec

/// What an outbound connection's script runs for.
enum OutboundEvent {
    case open
    case data
    case close(code: UInt16, reason: String)
    /// An attempt to connect failed.
    case error(String)

    var name: String {
        switch self {
        case .open: return "open"
        case .data: return "data"
        case .close: return "close"
        case .error: return "error"
        }
    }
}

/// One named outbound connection, owned by the loop it was opened on: it dials, hands the socket to a
/// client-role `Connection`, runs its script for every event, and dials again with exponential backoff
/// and jitter when the connection drops or an attempt fails, until `disconnect`.
final class OutboundLink {
    let id: Int
    let name: String
    private(set) var spec: OutboundSpec
    unowned let worker: Worker
    private(set) var connection: Connection?
    private var dialer: Dialer?
    /// Consecutive failed attempts (a drop counts as one): the backoff's exponent.
    private var failures = 0
    /// Attempts since the last open (or reset), for the log.
    private var attempts = 0
    /// `disconnect` was called: no more attempts until `reset`.
    private(set) var stopped = false
    /// Dial as soon as the current connection has closed (a `reset` while open).
    private var redialOnClose = false
    /// Bumped by `disconnect` and `reset` so a scheduled reconnect of before does nothing.
    private var generation = 0

    /// The run of the script that waits, and the events that came meanwhile (its connection's
    /// input is held), run in order once it has ended.
    private(set) var waitingRun: ScriptRun?
    var deferredEvents: [OutboundEvent] = []

    /// Published in the outbound registry: senders on other loops see a slow upstream.
    let sendQueue: SendQueueGauge

    init(id: Int, spec: OutboundSpec, worker: Worker, sendQueue: SendQueueGauge) {
        self.id = id
        self.sendQueue = sendQueue
        name = spec.name
        self.spec = spec
        self.worker = worker
    }

    var scriptFile: String { spec.script }

    func scriptWaits(_ run: ScriptRun) {
        waitingRun = run
        connection?.scriptWaits(run)
    }

    /// The waiting run ended; the runner runs the deferred events, then lets the input flow.
    func scriptEnded() {
        waitingRun = nil
    }

    func start() {
        dial()
    }

    private func dial() {
        attempts += 1
        publish { $0.state = .connecting; $0.reconnecting = false; $0.url = self.spec.url.description }
        Log.info("outbound \(name): connecting to \(spec.url) (attempt \(attempts))")
        var tls: TLSClientContext?
        if spec.url.secure {
            do {
                tls = try worker.shared.tlsClientContext(caFile: spec.caFile)
            } catch {
                // Reported from the loop, not from inside the script that called connect or reset.
                let attempt = generation
                worker.loop.schedule(after: 0) { [weak self] in
                    guard let self, self.generation == attempt, !self.stopped else { return }
                    self.dialed(.failure(DialError(error.message)))
                }
                return
            }
        }
        let config = worker.config
        let target = Dialer.Target(url: spec.url, headers: spec.headers, tls: tls, verify: !spec.insecure,
                                   deflate: config.compressionEnabled ? config.deflatePolicy : nil)
        let timeout = UInt64(config.handshakeTimeoutMs) * 1_000_000
        dialer = Dialer(loop: worker.loop, target: target, timeoutNanos: timeout) { [weak self] result in
            self?.dialed(result)
        }
    }

    private func dialed(_ result: Result<Dialer.Established, DialError>) {
        dialer = nil
        switch result {
        case .success(let established):
            guard let connection = Connection.adopt(established, worker: worker, link: self) else {
                dialed(.failure(DialError("cannot watch the socket (epoll)")))
                return
            }
            Log.info("outbound \(name): open to \(spec.url)")
            failures = 0
            attempts = 0
            self.connection = connection
            if let waitingRun { connection.scriptWaits(waitingRun) }
            // Shutdown waits for its close handshake as for inbound sockets.
            worker.shared.liveSockets.add(1, ordering: .relaxed)
            publish { $0.state = .open }
            worker.runner.runOutboundScript(self, event: .open, message: nil, binary: false)
            connection.begin()
        case .failure(let error):
            Log.warn("outbound \(name): connecting to \(spec.url) failed: \(error.message)")
            publish { $0.state = .closed }
            worker.runner.runOutboundScript(self, event: .error(error.message), message: nil, binary: false)
            scheduleReconnect()
        }
    }

    /// The connection closed, whoever closed it.
    func connectionEnded(_ ended: Connection) {
        guard ended === connection else { return }
        connection = nil
        worker.shared.liveSockets.subtract(1, ordering: .relaxed)
        let code = ended.closeCode ?? 1006
        Log.info("outbound \(name): closed with \(code)\(ended.closeReason.isEmpty ? "" : " (\(ended.closeReason))")")
        publish { $0.state = .closed }
        worker.runner.runOutboundScript(self, event: .close(code: code, reason: ended.closeReason), message: nil, binary: false)
        if redialOnClose {
            redialOnClose = false
            if !stopped { dial() }
        } else {
            scheduleReconnect()
        }
    }

    private func scheduleReconnect() {
        // The script may have called reset or disconnect from its close or error event.
        guard !stopped, connection == nil, dialer == nil, !redialOnClose else { return }
        failures += 1
        let config = worker.config
        let delay = OutboundLink.backoff(failures: failures, initialMs: config.outboundInitialDelayMs, maxMs: config.outboundMaxDelayMs,
                                         random: Double.random(in: 0...1))
        Log.info("outbound \(name): reconnecting in \(delay) ms")
        publish { $0.reconnecting = true }
        let scheduled = generation
        worker.loop.schedule(after: UInt64(delay) * 1_000_000) { [weak self] in
            guard let self, self.generation == scheduled, !self.stopped, self.connection == nil, self.dialer == nil else { return }
            self.dial()
        }
    }

    /// The delay before attempt `failures` + 1: doubling from `initialMs`, capped at `maxMs`, with
    /// "equal jitter" (a uniformly random point in the upper half) so that many links dropped by one
    /// upstream restart do not all come back at the same instant. `random` is in 0...1.
    static func backoff(failures: Int, initialMs: Int, maxMs: Int, random: Double) -> Int {
        let exponent = min(max(failures - 1, 0), 30)
        let ceiling = min(Double(initialMs) * Double(1 << exponent), Double(maxMs))
        return Int((ceiling / 2 + ceiling / 2 * random).rounded())
    }

    /// Closes with `code` and stops reconnecting.
    func disconnect(_ code: CloseCode = .normal) {
        stopped = true
        redialOnClose = false
        generation += 1
        dialer?.cancel()
        dialer = nil
        publish { $0.disconnected = true; $0.reconnecting = false; if self.connection == nil { $0.state = .closed } }
        connection?.startClose(code)
    }

    /// Reconnects now, to `url` when given; the current connection (if any) is closed first.
    func reset(to url: WebSocketURL?) {
        if let url { spec.url = url }
        stopped = false
        failures = 0
        attempts = 0
        generation += 1
        dialer?.cancel()
        dialer = nil
        publish { $0.disconnected = false; $0.url = self.spec.url.description }
        if let connection, !connection.isClosed {
            redialOnClose = true
            publish { $0.state = .connecting; $0.reconnecting = false }
            connection.startClose(.normal, reason: "reset")
        } else {
            dial()
        }
    }

    private func publish(_ change: (inout OutboundRegistry.Entry) -> Void) {
        worker.shared.outbound.update(name, id: id, change)
    }
}
