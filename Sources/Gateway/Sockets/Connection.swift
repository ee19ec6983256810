import Reactor
import WebSocketCodec

/// The socket under one WebSocket on one loop: an accepted client socket (its HTTP request, then
/// the frame stream) or, in the client role, an outbound connection a `Dialer` opened. It moves
/// bytes between the transport and a `WebSocketSession`, which owns the protocol; it applies the
/// gateway's policies on the way (rate limit, send queue bound, lingering close). Owned by its
/// worker and touched only on that worker's thread.
final class Connection: IOHandler {
    enum Phase {
        /// Waiting for a complete request head: an upgrade, or an HTTP request (again after each
        /// answer on a connection kept alive).
        case request
        /// Reading the body of an HTTP request (`incoming`).
        case requestBody
        /// The HTTP request is being answered (its script waits); input is held.
        case responding
        /// Frames flow; the session says whether it is open or closing.
        case webSocket
        /// Our last bytes are being flushed; then the socket is closed, or its write half is shut
        /// (`closesAtOnce`).
        case finishing
        /// Write half shut: input is read and discarded until the peer's EOF, so our last frame is not
        /// lost to a reset caused by unread data.
        case draining
        case closed
    }

    /// Strong, and a `let`: reading it from a method of the socket then needs no retain (an unowned
    /// reference costs one and a release per use, several per message). The worker lives as long as
    /// the process; a socket leaves it when it closes, so the cycle ends then.
    let worker: Worker
    /// The named outbound connection this socket serves, in the client role. Held strongly: a link
    /// replaced under its name must still hear of its socket's end (until then the link holds
    /// the socket too, a cycle that `connectionEnded` breaks).
    let link: OutboundLink?
    /// Set once (the upgrade, or the outbound handshake) and never replaced: the per-message paths
    /// reach it through `unmanagedSession`, without the retain and release a read of this costs
    /// around each call.
    private(set) var session: WebSocketSession? {
        didSet { unmanagedSession = session.map(Unmanaged.passUnretained) }
    }
    private var unmanagedSession: Unmanaged<WebSocketSession>?
    /// What the upgrade request established; nil for outbound connections and the health route.
    private(set) var info: ConnectionInfo?
    /// The endpoint script (or event handler) this socket's events run.
    private(set) var script: EndpointScript?
    private var transport: Transport
    private var registration = EventLoop.Registration.none
    /// Bytes read but not yet processed (a partial head or frame, or input held back by throttling).
    private var input = ByteBuffer()
    /// Bytes waiting for the socket to accept them.
    private var output = ByteBuffer()
    private var bucket: TokenBucket
    private var droppedMessages = 0
    /// Bytes of script messages refused since the send queue went over half full.
    private var refusedBytes = 0
    // The small fields together: one of these per socket.
    private(set) var phase = Phase.request
    /// False until the TLS handshake is done (true at once without TLS).
    private var transportReady: Bool
    /// A TLS read needs the socket writable first, or a TLS write needs it readable first.
    private var readWaitsForWritable = false
    private var writeWaitsForReadable = false
    /// Still in the registry: `list()` shows it and sends reach it.
    private var listed = false
    private var readPaused = false
    private var wantsWrite = false
    private var inFlushList = false
    /// The run of this socket's script that waits: the socket's input is held until it ends, so its
    /// events stay in order and its backlog stays in the kernel.
    private(set) var waitingRun: ScriptRun?
    /// The HTTP request being read or answered.
    private var incoming: IncomingRequest?
    /// Accepted on the admin listener: requests go to the management API.
    private let isAdmin: Bool
    /// This connection's place among its worker's `Deadlines` (-1: none), and what it waits for.
    var deadlineIndex = -1
    var deadline: (at: UInt64, kind: Deadlines.Kind) = (0, .request)

    /// The peer's IP address (`websocketInfo.remote_addr`, `request.remote_addr`, logs).
    let remoteAddress: String

    private init(transport: Transport, peer: String, worker: Worker, link: OutboundLink?, isAdmin: Bool = false) {
        self.transport = transport
        remoteAddress = peer
        self.isAdmin = isAdmin
        transportReady = transport.tls == nil || link != nil
        self.worker = worker
        self.link = link
        bucket = TokenBucket(now: worker.loop.now)
    }

    /// Watches an accepted socket for its first request, within limits.handshakeTimeoutMs. The
    /// admin listener's sockets speak plain HTTP to the management API.
    static func accept(fd: Int32, peer: String, worker: Worker, admin: Bool = false) {
        let tls = admin ? nil : worker.tlsContext.map { TLSStream(context: $0, fd: fd) }
        let connection = Connection(transport: Transport(fd: fd, tls: tls), peer: peer, worker: worker, link: nil, isAdmin: admin)
        connection.registration = worker.loop.register(fd: fd, events: IOEvents.readable | connection.triggering, handler: connection)
        guard connection.registration != .none else {
            Socket.close(fd)
            return
        }
        worker.deadlines.set(connection, .request, after: UInt64(worker.config.handshakeTimeoutMs) * 1_000_000)
    }

    func deadlinePassed(_ kind: Deadlines.Kind) {
        switch kind {
        case .request:
            guard phase == .request || phase == .requestBody else { return }
            Log.debug("dropping a connection that sent no complete request within \(worker.config.handshakeTimeoutMs) ms")
            closeSocket()
        case .closeHandshake:
            tick(ping: 0, idle: 0)
        case .linger:
            guard phase == .draining || phase == .finishing else { return }
            closeSocket()
        }
    }

    /// An outbound connection whose opening handshake the dialer completed; nil when the loop cannot
    /// watch its socket (the socket is closed then).
    static func adopt(_ established: Dialer.Established, worker: Worker, link: OutboundLink) -> Connection? {
        let fd = established.transport.fd
        let connection = Connection(transport: established.transport, peer: Socket.peerAddress(fd), worker: worker, link: link)
        connection.registration = worker.loop.register(fd: fd, events: IOEvents.readable | connection.triggering, handler: connection)
        guard connection.registration != .none else {
            var transport = established.transport
            transport.tls = nil
            Socket.close(fd)
            return nil
        }
        connection.session = WebSocketSession(role: .client, deflate: established.deflate.map { DeflateSession(settings: $0, role: .client) },
                                              shared: worker.sessions, now: worker.loop.now)
        connection.phase = .webSocket
        if !established.leftover.isEmpty { connection.input.append(established.leftover) }
        return connection
    }

    /// Completes an upgrade: queues the 101 `response` and hands the frame stream to `session`.
    /// `info` and `script` are nil for the health route's socket.
    func open(response: [UInt8], session: WebSocketSession, info: ConnectionInfo?, script: EndpointScript?) {
        self.session = session
        self.info = info
        self.script = script
        listed = info != nil
        phase = .webSocket
        worker.deadlines.clear(self)
        // The 101 goes straight to the socket, whose send buffer is empty now: an idle socket then
        // never holds an output block. Only what the kernel does not take waits in `output`.
        var written = 0
        if output.isEmpty, case .bytes(let n) = response.withUnsafeBytes({ transport.write(from: $0.baseAddress!, count: $0.count) }) {
            written = n
        }
        guard written < response.count else { return }
        response.withUnsafeBytes { output.append(UnsafeRawBufferPointer(rebasing: $0[written...])) }
        scheduleFlush()
    }

    var fd: Int32 { transport.fd }
    var isTLS: Bool { transport.tls != nil }
    /// A plain socket is edge-triggered: `readOnce` reads until a read comes up short. A TLS socket
    /// stays level-triggered: OpenSSL reads what a record needs, which can leave bytes in the socket.
    private var triggering: UInt32 { transport.tls == nil ? IOEvents.edgeTriggered : 0 }
    /// Where this socket's queue size is published for senders on other loops.
    private var sendQueue: SendQueueGauge? { info ?? link?.sendQueue }
    var isOpen: Bool { phase == .webSocket && session?.state == .open }
    var isClosed: Bool { phase == .closed }
    var socketId: String { info?.socketId ?? link.map { "outbound:\($0.name)" } ?? "-" }
    /// The first close code sent or received (nil until then: 1006 for scripts) and its reason.
    var closeCode: UInt16? { session?.closeCode }
    var closeReason: String { session?.closeReason ?? "" }

    // MARK: I/O readiness

    func ioReady(_ events: UInt32) {
        if !transportReady {
            continueTLSHandshake()
            return
        }
        if events & IOEvents.writable != 0 {
            if readWaitsForWritable {
                readWaitsForWritable = false
                readOnce()
                if phase == .closed { return }
            }
            flush()
            if phase == .closed { return }
        }
        if inputStopped {
            // Level-triggered hang-ups keep firing while reading is off: nothing more can arrive.
            if events & (IOEvents.hangup | IOEvents.error) != 0 { closeSocket() }
            return
        }
        if events & (IOEvents.readable | IOEvents.hangup | IOEvents.error) != 0 {
            readOnce()
            if writeWaitsForReadable && phase != .closed {
                writeWaitsForReadable = false
                flush()
            }
        }
    }

    private func continueTLSHandshake() {
        guard let tls = transport.tls else { return }
        switch tls.handshake() {
        case .done:
            transportReady = true
            setWantsWrite(false)
            readOnce()
        case .wantRead:
            setWantsWrite(false)
        case .wantWrite:
            setWantsWrite(true)
        case .closed:
            closeSocket()
        case .failed(let why):
            worker.metrics.reject(.tls)
            Log.info("TLS handshake failed on port \(worker.listenPort): \(why)")
            if why.contains("http request") {
                // A plain HTTP client: tell it in its own language, best effort, before closing.
                let response = HTTPResponse.make(status: 400, reason: "Bad Request", body: "This port speaks TLS: use https:// or wss://.\n")
                _ = response.withUnsafeBytes { Socket.write(fd, from: $0.baseAddress!, count: $0.count) }
            }
            closeSocket()
        }
    }

    /// Starts an outbound connection: the frames that came with the 101 response, then whatever
    /// TLS already decrypted (epoll will not report it).
    func begin() {
        if !input.isEmpty { processInput() }
        if transport.hasBufferedInput && phase != .closed { readOnce() }
    }

    /// Reads until the socket has nothing more for now (`triggering`), or input stops. With TLS,
    /// decrypted bytes buffered inside OpenSSL do not wake epoll, so reading goes on while there are any.
    private func readOnce() {
        while readAvailable() && !inputStopped && phase != .closed {}
    }

    /// One read; true when another may find more now: this one filled its buffer, or TLS holds
    /// decrypted bytes.
    private func readAvailable() -> Bool {
        let result: Transport.Result
        if input.isEmpty {
            let scratch = worker.readBuffer
            result = transport.read(into: scratch.baseAddress!, count: scratch.count)
            if case .bytes(let n) = result {
                session?.received(at: worker.loop.now)
                info?.lastActive.store(worker.loop.now, ordering: .relaxed)
                let bytes = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<n])
                let used = process(bytes)
                if used < n && phase != .closed {
                    input.append(UnsafeRawBufferPointer(rebasing: bytes[used...]))
                }
                return n == scratch.count || transport.hasBufferedInput
            }
        } else {
            let pending = session?.pendingFrameLength(UnsafeRawBufferPointer(input.readable)) ?? 0
            let room = max(16 * 1024, min(pending - input.count, 4 << 20))
            let p = input.reserveWritable(room)
            result = transport.read(into: p, count: room)
            if case .bytes(let n) = result {
                session?.received(at: worker.loop.now)
                info?.lastActive.store(worker.loop.now, ordering: .relaxed)
                input.didWrite(n)
                processInput()
                return n == room || transport.hasBufferedInput
            }
        }
        switch result {
        case .bytes, .wouldBlock, .wantRead:
            break
        case .wantWrite:
            readWaitsForWritable = true
            setWantsWrite(true)
        case .closed:
            if isOpen { Log.debug("closed by peer without a close frame", socket: socketId) }
            closeSocket()
        case .failed(let why):
            Log.debug("read failed: \(why)", socket: socketId)
            closeSocket()
        }
        return false
    }

    /// Processes the buffered input, keeping whatever is still incomplete.
    private func processInput() {
        let used = process(input.readable)
        if phase != .closed { input.consume(used) }
        if input.isEmpty { input.clear(keepingUpTo: 0) }
    }

    /// Handles as much of `bytes` as forms complete units; returns how many bytes were used.
    private func process(_ bytes: UnsafeMutableRawBufferPointer) -> Int {
        var used = 0
        while true {
            switch phase {
            case .request:
                let rest = UnsafeMutableRawBufferPointer(rebasing: bytes[used...])
                // A TLS handshake record (0x16) where HTTP was expected: a wss:// client on the plain
                // port. It would wait for the handshake timeout while holding a socket; drop it now.
                if transport.tls == nil, used == 0, rest.first == 0x16, !isAdmin {
                    Log.info("TLS handshake on the plain port \(worker.listenPort): closed (use ws://, or configure tls)")
                    closeSocket()
                    return bytes.count
                }
                let limit = worker.config.maxRequestHeaderBytes
                guard let end = HTTPRequestParser.headEnd(UnsafeRawBufferPointer(rest)), end <= limit else {
                    guard rest.count > limit else { return used }
                    if !isAdmin { worker.metrics.reject(.handshake) }
                    respondAndClose(HTTPResponse.make(status: 431, reason: "Request Header Fields Too Large"))
                    return bytes.count
                }
                let head = UnsafeRawBufferPointer(rebasing: rest[0..<end])
                used += end
                if isAdmin { worker.admin!.handleRequest(self, head: head) } else { worker.front.handleRequest(self, head: head) }
                switch phase {
                case .webSocket: return used + processFrames(UnsafeMutableRawBufferPointer(rebasing: bytes[used...]))
                case .requestBody: continue
                // The connect hook waits: what came behind the request waits for its decision.
                case .responding: return used
                default: return bytes.count
                }
            case .requestBody:
                var consumed = used
                switch incoming!.body.read(UnsafeRawBufferPointer(bytes), consumed: &consumed) {
                case .needMore:
                    return consumed
                case .complete(let body):
                    used = consumed
                    phase = .responding
                    worker.deadlines.clear(self)
                    let request = incoming!
                    switch request.handler {
                    case .script(let script, let route, let parameters):
                        worker.runner.runHTTPScript(self, script: script, request: request, route: route, parameters: parameters, body: body)
                    case .admin:
                        worker.admin!.handleBody(self, request: request, body: body)
                    case .metrics:
                        MetricsScrape.answer(self, keepAlive: request.keepAlive, on: worker)
                    }
                    // Answered at once, or the script waits (input is held until it answers).
                    if phase != .request { return phase == .responding ? used : bytes.count }
                case .failed(let error):
                    Log.debug("bad request body: \(error)")
                    respondAndClose(HTTPResponse.make(status: error.responseStatus, reason: HTTPResponse.reason(error.responseStatus),
                                                      body: "\(error)\n"))
                    return bytes.count
                }
            case .responding:
                return used
            case .webSocket:
                return used + processFrames(UnsafeMutableRawBufferPointer(rebasing: bytes[used...]))
            case .finishing, .draining, .closed:
                return bytes.count
            }
        }
    }

    /// The upgrade waits for the connect hook: nothing is read meanwhile.
    func awaitGate() {
        phase = .responding
    }

    /// The connect hook let the upgrade through after waiting: what the client sent meanwhile is
    /// processed, unless the socket's open event waits in turn.
    func gateOpened() {
        guard phase == .webSocket, waitingRun == nil else { return }
        updateInterest()
        resumeInput()
    }

    /// Reads the body of an HTTP request the front or the management API accepted, then hands it on.
    func readRequest(_ request: IncomingRequest) {
        incoming = request
        phase = .requestBody
        if request.expectsContinue {
            output.append(Connection.continueResponse)
            scheduleFlush()
        }
    }

    private static let continueResponse = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)

    /// Answers the HTTP request being handled; a connection kept alive waits for the next request.
    func respond(_ response: [UInt8], keepAlive: Bool) {
        guard phase == .responding else { return }
        incoming = nil
        output.append(response)
        if keepAlive {
            phase = .request
            worker.deadlines.set(self, .request, after: UInt64(worker.config.handshakeTimeoutMs) * 1_000_000)
            scheduleFlush()
        } else {
            phase = .finishing
            scheduleFlush()
        }
    }

    private func processFrames(_ bytes: UnsafeMutableRawBufferPointer) -> Int {
        guard let session = unmanagedSession else { return bytes.count }
        return session._withUnsafeGuaranteedRef { processFrames(bytes, session: $0) }
    }

    private func processFrames(_ bytes: UnsafeMutableRawBufferPointer, session: WebSocketSession) -> Int {
        var consumed = 0
        // Once the bytes are used up, one more call lets the session release a delivered message's buffer.
        // In the .webSocket phase input stops for throttling or for a waiting run (`inputStopped`).
        while phase == .webSocket && !readPaused && waitingRun == nil && (consumed < bytes.count || session.holdsMessage) {
            let queuedBefore = output.count
            let event = session.next(bytes, consumed: &consumed, output: &output, admit: { self.admit($0) })
            // The session queued a pong or a close, or changed state (a script's sends are handled as they happen).
            if output.count != queuedBefore || session.state != .open { sessionChanged() }
            switch event {
            case .message(let payload, let binary):
                worker.dispatchData(self, payload, binary: binary)
            case .needMore, .held:
                return consumed
            case .closed:
                return bytes.count
            case .failed(let failure):
                Log.info("closing with \(failure.code.rawValue): \(failure.reason)", socket: socketId, route: info?.route)
                return bytes.count
            }
        }
        return phase == .webSocket ? consumed : bytes.count
    }

    /// Applies the rate limit to the first frame of each data message. Outbound connections are the
    /// gateway's own: the per-client rate limit is not theirs.
    private func admit(_ header: FrameHeader) -> WebSocketSession.Admission {
        let config = worker.config
        guard link == nil, config.messagesPerSecond > 0 else { return .accept }
        let now = worker.loop.now
        if bucket.take(now: now, rate: config.messagesPerSecond, burst: config.burst) { return .accept }
        switch config.onExceed {
        case .throttle:
            worker.metrics.rateLimited[LoopMetrics.RateLimitAction.throttle.rawValue] += 1
            pauseReading(for: bucket.nanosUntilToken(now: now, rate: config.messagesPerSecond, burst: config.burst))
            return .hold
        case .drop:
            worker.metrics.rateLimited[LoopMetrics.RateLimitAction.drop.rawValue] += 1
            droppedMessages += 1
            if droppedMessages == 1 { Log.warn("rate limit: dropping messages", socket: socketId, route: info?.route) }
            return .discard
        case .close:
            worker.metrics.rateLimited[LoopMetrics.RateLimitAction.close.rawValue] += 1
            return .fail(.policyViolation, "rate limit exceeded")
        }
    }

    /// Follows the session after anything that may have queued bytes or changed its state: a socket
    /// that is no longer open leaves the registry, a closed session finishes the socket, and the
    /// send queue is bounded and published.
    private func sessionChanged() {
        guard phase == .webSocket, let session else { return }
        switch session.state {
        case .open:
            queued()
        case .closing:
            unlist()
            if !output.isEmpty { scheduleFlush() }
        case .closed:
            unlist()
            phase = .finishing
            // Flushing, even an empty queue, is what shuts the write half.
            scheduleFlush()
        }
    }

    /// Bounds and publishes the send queue of an open socket after bytes were queued.
    private func queued() {
        guard !output.isEmpty else { return }
        if output.count > worker.config.sendQueueBytes {
            abandonSlowReader()
            return
        }
        sendQueue?.bytes.store(output.count, ordering: .relaxed)
        scheduleFlush()
    }

    /// Takes the socket out of the registry once: from then on `list()` leaves it out and sends get 404.
    private func unlist() {
        guard listed, let info else { return }
        listed = false
        worker.shared.registry.remove(info.socketId)
        if info.subscribed.load(ordering: .relaxed) { worker.shared.topics.removeAll(info.socketId) }
    }

    // MARK: Sending

    /// Queues a script's message unless the peer has stopped reading: past half of
    /// limits.sendQueueBytes the message is refused (false, the caller answers 429), and once queued
    /// plus refused bytes pass the limit the connection is closed with 1008.
    func offer(_ opcode: Opcode, _ payload: UnsafeRawBufferPointer) -> Bool {
        guard admits(payload.count) else { return false }
        if unmanagedSession?._withUnsafeGuaranteedRef({ $0.send(opcode, payload, output: &output) }) == true { queued() }
        countSent(payload.count)
        return true
    }

    /// The same for a message encoded once for many sockets (a topic's).
    func offer(_ message: PreparedMessage) -> Bool {
        guard admits(message.payloadCount) else { return false }
        if session?.send(message, output: &output) == true { queued() }
        countSent(message.payloadCount)
        return true
    }

    private func admits(_ bytes: Int) -> Bool {
        guard output.count > worker.config.sendQueueBytes / 2 else { return true }
        refuse(bytes)
        return false
    }

    private func countSent(_ bytes: Int) {
        info?.lastActive.store(worker.loop.now, ordering: .relaxed)
        worker.metrics.messagesSent += 1
        worker.metrics.bytesSent += bytes
    }

    func refuse(_ bytes: Int) {
        worker.metrics.sendQueueRejections += 1
        refusedBytes += bytes
        if output.count + refusedBytes > worker.config.sendQueueBytes { abandonSlowReader() }
    }

    /// The peer stopped reading while messages for it piled up: drop the queue and close with 1008,
    /// giving the close frame a second to get out.
    private func abandonSlowReader() {
        guard let session, phase == .webSocket else { return }
        Log.warn("closing: send queue over limits.sendQueueBytes (\(worker.config.sendQueueBytes)); the client is not reading", socket: socketId, route: info?.route)
        session.abandon(.policyViolation, reason: "send queue full", output: &output)
        unlist()
        sendQueue?.bytes.store(0, ordering: .relaxed)
        phase = .finishing
        scheduleFlush()
        worker.deadlines.set(self, .linger, after: 1_000_000_000)
    }

    private func scheduleFlush() {
        if !inFlushList {
            inFlushList = true
            worker.flushList.append(self)
        }
    }

    /// Starts the closing handshake (websocketInfo.close, Websocket.close, shutdown, idle timeout).
    func startClose(_ code: CloseCode, reason: String = "") {
        guard phase == .webSocket, let session, session.close(code, reason: reason, now: worker.loop.now, output: &output) else { return }
        sessionChanged()
        worker.deadlines.set(self, .closeHandshake, after: WebSocketSession.closeTimeoutNanos)
    }

    /// Pings and idle timeouts (the worker's sweep), and the end of the wait for the peer's close.
    func tick(ping: UInt64, idle: UInt64) {
        guard phase == .webSocket, let session else { return }
        switch session.tick(now: worker.loop.now, pingEvery: ping, idleAfter: idle, output: &output) {
        case .nothing:
            break
        case .wrote:
            sessionChanged()
        case .expired:
            Log.debug("no answer to our close frame", socket: socketId)
            closeSocket()
        }
    }

    /// Sends an HTTP response to a request that is not upgraded, then closes.
    func respondAndClose(_ response: [UInt8]) {
        output.append(response)
        phase = .finishing
        scheduleFlush()
    }

    /// Writes queued output. Called once per loop iteration for connections with output, and when
    /// the socket becomes writable again.
    func flush() {
        inFlushList = false
        while !output.isEmpty {
            switch transport.write(from: output.readable.baseAddress!, count: output.count) {
            case .bytes(let n):
                output.consume(n)
            case .wouldBlock, .wantWrite:
                sendQueue?.bytes.store(output.count, ordering: .relaxed)
                setWantsWrite(true)
                return
            case .wantRead:
                sendQueue?.bytes.store(output.count, ordering: .relaxed)
                writeWaitsForReadable = true
                return
            case .closed, .failed:
                closeSocket()
                return
            }
        }
        output.clear(keepingUpTo: 4096)
        refusedBytes = 0
        sendQueue?.bytes.store(0, ordering: .relaxed)
        setWantsWrite(false)
        guard phase == .finishing else { return }
        if closesAtOnce { closeSocket() } else { linger() }
    }

    /// After our last bytes, an accepted plain socket whose peer sent its close frame is closed at
    /// once: the server closes first (RFC 6455 7.1.1), and nothing follows the peer's close frame
    /// that, left unread, would turn our close into a reset. Every other socket lingers: an HTTP
    /// client may still be sending, a TLS peer answers our close_notify, a peer whose connection
    /// we failed may be mid-message, and in the client role the server is the one to close.
    private var closesAtOnce: Bool {
        transport.tls == nil && link == nil && session?.peerSentClose == true
    }

    private func linger() {
        let wasStopped = inputStopped
        phase = .draining
        transport.shutdownWrite()
        readPaused = false
        if wasStopped { updateInterest() }
        worker.deadlines.set(self, .linger, after: 2_000_000_000)
    }

    private func setWantsWrite(_ wants: Bool) {
        let wants = wants || readWaitsForWritable
        guard wants != wantsWrite, phase != .closed else { return }
        wantsWrite = wants
        updateInterest()
    }

    private func updateInterest() {
        var events = triggering
        if !inputStopped { events |= IOEvents.readable }
        if wantsWrite { events |= IOEvents.writable }
        worker.loop.modify(fd: fd, events: events, registration: registration)
    }

    /// Input is neither read nor processed: throttled, or a run of the script waits (a socket
    /// that is closing still reads, to see the peer's end).
    private var inputStopped: Bool { readPaused || phase == .responding || (waitingRun != nil && phase == .webSocket) }

    /// A run of this socket's script waits: its later events wait for it.
    func scriptWaits(_ run: ScriptRun) {
        waitingRun = run
        if phase == .webSocket || phase == .responding { updateInterest() }
    }

    /// The waiting run ended (an HTTP request's script answered first): buffered input is processed
    /// and reading goes on.
    func scriptEnded() {
        waitingRun = nil
        guard phase == .webSocket || phase == .request else { return }
        updateInterest()
        resumeInput()
    }

    /// Processes what was held back, then reads what TLS decrypted meanwhile (epoll will not say).
    private func resumeInput() {
        if !input.isEmpty { processInput() }
        if transport.hasBufferedInput && !inputStopped && phase != .closed { readOnce() }
    }

    /// Stops reading for a while (a rate-limit token is due, or the script overran its time);
    /// buffered input is processed on resume.
    func pauseReading(for nanos: UInt64) {
        readPaused = true
        updateInterest()
        worker.loop.schedule(after: max(nanos, 1_000_000)) { [weak self] in
            guard let self, self.phase != .closed, self.readPaused else { return }
            self.readPaused = false
            self.updateInterest()
            if !self.inputStopped { self.resumeInput() }
        }
    }

    /// Closes the socket now and tells the worker, which runs the script's close event if the
    /// script saw the socket open.
    func closeSocket() {
        guard phase != .closed else { return }
        unlist()
        phase = .closed
        worker.deadlines.clear(self)
        worker.loop.deregisterForClose(fd: fd, registration: registration)
        transport.tls = nil // freed before the descriptor can be reused
        Socket.close(fd)
        input.release()
        output.release()
        if droppedMessages > 0 {
            Log.info("dropped \(droppedMessages) messages over the rate limit", socket: socketId, route: info?.route)
        }
        worker.connectionClosed(self)
    }
}
