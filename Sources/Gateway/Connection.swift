import Reactor
import WebSocketCodec

/// One WebSocket on one loop: an accepted client socket (the HTTP upgrade, then the frame stream)
/// or, in the client role, an outbound connection a `Dialer` opened. Owned by its worker and
/// touched only on that worker's thread.
final class Connection: IOHandler {
    enum State {
        /// Waiting for the complete upgrade request.
        case handshake
        case open
        /// We sent a close frame and wait for the peer's.
        case closing
        /// Our last bytes are being flushed; then the write half is shut.
        case finishing
        /// Write half shut: input is read and discarded until the peer's EOF, so our last frame is not
        /// lost to a reset caused by unread data.
        case draining
        case closed
    }

    let fd: Int32
    /// `.server` for accepted sockets (frames in are masked); `.client` for outbound ones (frames out are).
    let role: Role
    var transport: Transport
    /// False until the TLS handshake is done (true at once without TLS).
    var transportReady: Bool
    /// A TLS read needs the socket writable first, or a TLS write needs it readable first.
    var readWaitsForWritable = false
    var writeWaitsForReadable = false
    unowned let worker: Worker
    var registration = EventLoop.Registration.none
    var state = State.handshake {
        didSet {
            // A socket that is closing is no longer open: list() leaves it out, sends to it get 404.
            if oldValue == .open, let id = info?.socketId { worker.shared.registry.remove(id) }
        }
    }
    /// Bytes read but not yet processed (a partial head or frame, or input held back by throttling).
    var input = ByteBuffer()
    /// Bytes waiting for the socket to accept them.
    var output = ByteBuffer()
    /// The fragments of the message being assembled.
    var fragments = ByteBuffer()
    var fragmentOpcode: Opcode?
    /// The message being assembled came with RSV1: it is inflated when complete.
    var fragmentCompressed = false
    var fragmentCount = 0
    var fragmentUTF8 = UTF8Validator()
    /// The rest of a message is being discarded because the rate limit dropped its first frame.
    var droppingMessage = false
    var droppedMessages = 0
    /// Bytes of script messages refused since the send queue went over half full.
    var refusedBytes = 0

    var info: ConnectionInfo?
    /// The named outbound connection this socket serves, in the client role. Held strongly: a link
    /// replaced under its name must still hear of its socket's end (until then the link holds
    /// the socket too, a cycle that `connectionEnded` breaks).
    let link: OutboundLink?
    /// The code and reason of the first close frame sent or received; nil until then (1006 for scripts).
    var closeCode: UInt16?
    var closeReason = ""
    /// The endpoint script (or event handler) this socket's events run.
    var script: EndpointScript?
    /// Set when permessage-deflate was negotiated.
    var deflate: DeflateSession?
    /// Registry reference of the Lua table holding this socket's constant websocketInfo fields.
    var luaFieldsRef: Int32 = 0
    var bucket: TokenBucket
    /// Monotonic times of the last bytes received and of our last ping, for pings and idle timeouts.
    var lastReceived: UInt64 = 0
    var lastPing: UInt64 = 0
    var readPaused = false
    var wantsWrite = false
    var inFlushList = false

    init(fd: Int32, worker: Worker, now: UInt64, tls: TLSServerContext?) {
        self.fd = fd
        role = .server
        transport = Transport(fd: fd, tls: tls.map { TLSStream(context: $0, fd: fd) })
        transportReady = tls == nil
        self.worker = worker
        link = nil
        bucket = TokenBucket(now: now)
    }

    /// An outbound connection whose opening handshake the dialer completed: open from the start.
    init(established: Dialer.Established, worker: Worker, link: OutboundLink) {
        fd = established.transport.fd
        role = .client
        transport = established.transport
        transportReady = true
        self.worker = worker
        self.link = link
        bucket = TokenBucket(now: worker.loop.now)
        state = .open
        lastReceived = worker.loop.now
        lastPing = worker.loop.now
        if !established.leftover.isEmpty { input.append(established.leftover) }
    }

    var socketId: String { info?.socketId ?? link.map { "outbound:\($0.name)" } ?? "-" }

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
                if state == .closed { return }
            }
            flush()
            if state == .closed { return }
        }
        if readPaused {
            // Level-triggered hang-ups keep firing while reading is off: nothing more can arrive.
            if events & (IOEvents.hangup | IOEvents.error) != 0 { closeSocket() }
            return
        }
        if events & (IOEvents.readable | IOEvents.hangup | IOEvents.error) != 0 {
            readOnce()
            if writeWaitsForReadable && state != .closed {
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
        if transport.hasBufferedInput && state != .closed { readOnce() }
    }

    /// Reads until the socket has nothing more for now. With TLS, decrypted bytes buffered inside
    /// OpenSSL do not wake epoll, so reading goes on while there are any.
    private func readOnce() {
        while readAvailable() && transport.hasBufferedInput && !readPaused && state != .closed {}
    }

    /// One read; false when nothing more can be read now.
    private func readAvailable() -> Bool {
        let result: Transport.Result
        if input.isEmpty {
            let scratch = worker.readBuffer
            result = transport.read(into: scratch.baseAddress!, count: scratch.count)
            if case .bytes(let n) = result {
                lastReceived = worker.loop.now
                let bytes = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<n])
                let used = process(bytes)
                if used < n && state != .closed {
                    input.append(UnsafeRawBufferPointer(rebasing: bytes[used...]))
                }
                return true
            }
        } else {
            let room = max(16 * 1024, min(pendingFrameBytes - input.count, 4 << 20))
            let p = input.reserveWritable(room)
            result = transport.read(into: p, count: room)
            if case .bytes(let n) = result {
                lastReceived = worker.loop.now
                input.didWrite(n)
                processInput()
                return true
            }
        }
        switch result {
        case .bytes, .wouldBlock, .wantRead:
            break
        case .wantWrite:
            readWaitsForWritable = true
            setWantsWrite(true)
        case .closed:
            if state == .open { Log.debug("socket \(socketId) closed by peer without a close frame") }
            closeSocket()
        case .failed(let why):
            Log.debug("read failed on socket \(socketId): \(why)")
            closeSocket()
        }
        return false
    }

    /// How many bytes the frame at the start of `input` needs in all (0 when unknown).
    private var pendingFrameBytes: Int {
        guard state == .open || state == .closing else { return 0 }
        if case .header(let h) = FrameDecoder.parseHeader(UnsafeRawBufferPointer(input.readable), role: role, allowedRSV: allowedRSV, maxPayload: worker.config.maxMessageBytes) {
            return h.frameLength
        }
        return 0
    }

    /// Processes the buffered input, keeping whatever is still incomplete.
    func processInput() {
        let used = process(input.readable)
        if state != .closed { input.consume(used) }
        if input.isEmpty { input.clear(keepingUpTo: 0) }
    }

    /// Handles as much of `bytes` as forms complete units; returns how many bytes were used.
    private func process(_ bytes: UnsafeMutableRawBufferPointer) -> Int {
        switch state {
        case .handshake:
            // A TLS handshake record (0x16) where HTTP was expected: a wss:// client on the plain
            // port. It would wait for the handshake timeout while holding a socket; drop it now.
            if transport.tls == nil, bytes.first == 0x16 {
                Log.info("TLS handshake on the plain port \(worker.listenPort): closed (use ws://, or configure tls)")
                closeSocket()
                return bytes.count
            }
            guard let end = HTTPRequestParser.headEnd(UnsafeRawBufferPointer(bytes)) else {
                if bytes.count > worker.config.maxRequestHeaderBytes {
                    respondAndClose(HTTPResponse.make(status: 431, reason: "Request Header Fields Too Large"))
                }
                return bytes.count > worker.config.maxRequestHeaderBytes ? bytes.count : 0
            }
            if end > worker.config.maxRequestHeaderBytes {
                respondAndClose(HTTPResponse.make(status: 431, reason: "Request Header Fields Too Large"))
                return bytes.count
            }
            worker.handleRequest(self, head: UnsafeRawBufferPointer(rebasing: bytes[0..<end]))
            guard state == .open else { return bytes.count }
            return end + processFrames(UnsafeMutableRawBufferPointer(rebasing: bytes[end...]))
        case .open, .closing:
            return processFrames(bytes)
        case .finishing, .draining, .closed:
            return bytes.count
        }
    }

    private func processFrames(_ bytes: UnsafeMutableRawBufferPointer) -> Int {
        var offset = 0
        let limit = worker.config.maxMessageBytes
        while offset < bytes.count && (state == .open || state == .closing) && !readPaused {
            let rest = UnsafeMutableRawBufferPointer(rebasing: bytes[offset...])
            switch FrameDecoder.parseHeader(UnsafeRawBufferPointer(rest), role: role, allowedRSV: allowedRSV, maxPayload: limit) {
            case .needMore:
                return offset
            case .failure(let code, let reason):
                fail(code, reason)
                return bytes.count
            case .header(let header):
                guard rest.count >= header.frameLength else { return offset }
                switch admit(header) {
                case .hold:
                    return readPaused ? offset : bytes.count
                case .discard:
                    offset += header.frameLength
                case .handle:
                    let payload = UnsafeMutableRawBufferPointer(rebasing: rest[header.headerLength..<header.frameLength])
                    if let key = header.maskKey { Masking.apply(key, to: payload) }
                    offset += header.frameLength
                    handleFrame(header, payload)
                }
            }
        }
        return state == .open || state == .closing ? offset : bytes.count
    }

    /// RSV1 marks a compressed message once permessage-deflate is negotiated.
    private var allowedRSV: UInt8 { deflate == nil ? 0 : 0b100 }

    private enum Admission {
        case handle
        /// Consume the frame without acting on it (a message the rate limit dropped).
        case discard
        /// Leave the frame unread: reading is throttled, or the connection was closed.
        case hold
    }

    /// Applies the rate limit to the first frame of each data message, before it is unmasked, so a
    /// held frame can be parsed again when reading resumes.
    private func admit(_ header: FrameHeader) -> Admission {
        if droppingMessage && header.opcode == .continuation {
            if header.fin { droppingMessage = false }
            return .discard
        }
        let config = worker.config
        // Outbound connections are the gateway's own: the per-client rate limit is not theirs.
        guard role == .server, state == .open, header.opcode == .text || header.opcode == .binary,
              config.messagesPerSecond > 0, fragmentOpcode == nil else { return .handle }
        let now = worker.loop.now
        if bucket.take(now: now, rate: config.messagesPerSecond, burst: config.burst) { return .handle }
        switch config.onExceed {
        case .throttle:
            pauseReading(for: bucket.nanosUntilToken(now: now, rate: config.messagesPerSecond, burst: config.burst))
            return .hold
        case .drop:
            droppedMessages += 1
            if droppedMessages == 1 { Log.warn("rate limit: dropping messages on socket \(socketId) route=\(info?.route ?? "-")") }
            droppingMessage = !header.fin
            return .discard
        case .close:
            fail(.policyViolation, "rate limit exceeded")
            return .hold
        }
    }

    private func handleFrame(_ header: FrameHeader, _ payload: UnsafeMutableRawBufferPointer) {
        let compressed = header.rsv & 0b100 != 0
        if compressed && header.opcode != .text && header.opcode != .binary {
            fail(.protocolError, "RSV1 set on a control or continuation frame")
            return
        }
        switch header.opcode {
        case .ping:
            if state == .open { sendFrame(.pong, UnsafeRawBufferPointer(payload)) }
        case .pong:
            break
        case .close:
            handleClose(UnsafeRawBufferPointer(payload))
        case .text, .binary:
            guard state == .open else { return }
            if fragmentOpcode != nil {
                fail(.protocolError, "new message before the previous one finished")
                return
            }
            if header.fin {
                if compressed {
                    deliverCompressed(UnsafeRawBufferPointer(payload), opcode: header.opcode)
                    return
                }
                if header.opcode == .text && !UTF8Validator.isValid(UnsafeRawBufferPointer(payload)) {
                    fail(.invalidPayload, "text message is not UTF-8")
                    return
                }
                worker.dispatchData(self, UnsafeRawBufferPointer(payload), binary: header.opcode == .binary)
            } else {
                fragmentOpcode = header.opcode
                fragmentCompressed = compressed
                fragmentCount = 0
                fragmentUTF8 = UTF8Validator()
                appendFragment(payload)
            }
        case .continuation:
            guard state == .open else { return }
            guard let opcode = fragmentOpcode else {
                fail(.protocolError, "continuation frame without a message")
                return
            }
            appendFragment(payload)
            guard state == .open, header.fin else { return }
            if fragmentCompressed {
                deliverCompressed(UnsafeRawBufferPointer(fragments.readable), opcode: opcode)
                fragmentOpcode = nil
                fragmentCount = 0
                fragments.clear(keepingUpTo: 0)
                return
            }
            if opcode == .text && !fragmentUTF8.isComplete {
                fail(.invalidPayload, "text message ends inside a UTF-8 sequence")
                return
            }
            worker.dispatchData(self, UnsafeRawBufferPointer(fragments.readable), binary: opcode == .binary)
            fragmentOpcode = nil
            fragmentCount = 0
            fragments.clear(keepingUpTo: 0)
        }
    }
}

extension Connection {
    /// Each fragment also costs this much of limits.maxMessageBytes, so a message of endless empty
    /// fragments is bounded too.
    static let fragmentOverhead = 8

    private func appendFragment(_ payload: UnsafeMutableRawBufferPointer) {
        fragmentCount += 1
        if fragments.count + payload.count + fragmentCount * Connection.fragmentOverhead > worker.config.maxMessageBytes {
            fail(.messageTooBig, "message over \(worker.config.maxMessageBytes) bytes")
            return
        }
        if fragmentOpcode == .text && !fragmentCompressed && !fragmentUTF8.feed(UnsafeRawBufferPointer(payload)) {
            fail(.invalidPayload, "text message is not UTF-8")
            return
        }
        fragments.append(UnsafeRawBufferPointer(payload))
    }

    /// Inflates a whole compressed message (a zip bomb stops at limits.maxMessageBytes) and hands
    /// it to the script.
    private func deliverCompressed(_ payload: UnsafeRawBufferPointer, opcode: Opcode) {
        let zlib = worker.zlib
        zlib.inflated.removeAll(keepingCapacity: true)
        defer { if zlib.inflated.capacity > 1 << 20 { zlib.inflated = [] } }
        switch deflate!.inflate(payload, into: &zlib.inflated, limit: worker.config.maxMessageBytes, shared: zlib) {
        case .ok:
            let valid = opcode == .binary || zlib.inflated.withUnsafeBytes { UTF8Validator.isValid($0) }
            guard valid else {
                fail(.invalidPayload, "text message is not UTF-8")
                return
            }
            zlib.inflated.withUnsafeBytes { worker.dispatchData(self, $0, binary: opcode == .binary) }
        case .tooBig:
            fail(.messageTooBig, "message inflates past \(worker.config.maxMessageBytes) bytes")
        case .corrupt(let why):
            fail(.invalidPayload, "compressed message is corrupt: \(why)")
        }
    }

    private func handleClose(_ payload: UnsafeRawBufferPointer) {
        switch state {
        case .open:
            switch ClosePayload.validate(payload) {
            case .success(let code):
                noteClose(code?.rawValue ?? 1005, payload.count > 2 ? String(decoding: payload[2...], as: UTF8.self) : "")
                // Echo the peer's code, then close the TCP connection ourselves (RFC 6455 7.1.1).
                let reply = code.map { FrameEncoder.closePayload($0) } ?? []
                reply.withUnsafeBytes { sendFrame(.close, $0) }
                state = .finishing
                scheduleFlush()
            case .failure(let failure):
                fail(failure.code, failure.reason)
            }
        case .closing:
            // Our close (startClose) was noted already: the peer's answer changes nothing.
            state = .finishing
            scheduleFlush()
        case .handshake, .finishing, .draining, .closed:
            break
        }
    }

    /// Keeps the first close of the connection for the outbound script's `close` event.
    private func noteClose(_ code: UInt16, _ reason: String) {
        if closeCode == nil {
            closeCode = code
            closeReason = reason
        }
    }

    // MARK: Sending

    /// Queues one unfragmented frame; it is written when the loop flushes.
    func sendFrame(_ opcode: Opcode, _ payload: UnsafeRawBufferPointer) {
        if let deflate, !opcode.isControl, payload.count >= worker.config.compressionMinBytes {
            let zlib = worker.zlib
            zlib.compressed.removeAll(keepingCapacity: true)
            deflate.compress(payload, into: &zlib.compressed, shared: zlib)
            zlib.compressed.withUnsafeBytes { writeFrame(opcode, $0, compressed: true) }
            if zlib.compressed.capacity > 1 << 20 { zlib.compressed = [] }
        } else {
            writeFrame(opcode, payload, compressed: false)
        }
    }

    private func writeFrame(_ opcode: Opcode, _ payload: UnsafeRawBufferPointer, compressed: Bool) {
        let maskKey = role == .client ? Masking.randomKey() : nil
        let length = FrameEncoder.headerLength(payloadLength: payload.count, masked: maskKey != nil) + payload.count
        FrameEncoder.writeFrame(to: output.reserveWritable(length), opcode: opcode, rsv1: compressed, payload: payload, maskKey: maskKey)
        output.didWrite(length)
        if output.count > worker.config.sendQueueBytes && state == .open {
            abandonSlowReader()
            return
        }
        info?.queuedBytes.store(output.count, ordering: .relaxed)
        scheduleFlush()
    }

    /// Queues a script's message unless the peer has stopped reading: past half of
    /// limits.sendQueueBytes the message is refused (false, the caller answers 429), and once queued
    /// plus refused bytes pass the limit the connection is closed with 1008.
    func offer(_ opcode: Opcode, _ payload: UnsafeRawBufferPointer) -> Bool {
        if output.count > worker.config.sendQueueBytes / 2 {
            refuse(payload.count)
            return false
        }
        sendFrame(opcode, payload)
        return true
    }

    func refuse(_ bytes: Int) {
        refusedBytes += bytes
        if output.count + refusedBytes > worker.config.sendQueueBytes { abandonSlowReader() }
    }

    /// The peer stopped reading while messages for it piled up: drop the queue and close with 1008,
    /// giving the close frame a second to get out.
    private func abandonSlowReader() {
        Log.warn("closing socket \(socketId): send queue over limits.sendQueueBytes (\(worker.config.sendQueueBytes)); the client is not reading")
        output.release()
        info?.queuedBytes.store(0, ordering: .relaxed)
        noteClose(CloseCode.policyViolation.rawValue, "send queue full")
        FrameEncoder.closePayload(.policyViolation, reason: "send queue full").withUnsafeBytes { writeFrame(.close, $0, compressed: false) }
        state = .finishing
        scheduleFlush()
        worker.loop.schedule(after: 1_000_000_000) { [weak self] in self?.closeSocket() }
    }

    func scheduleFlush() {
        if !inFlushList {
            inFlushList = true
            worker.flushList.append(self)
        }
    }

    /// Starts the closing handshake (websocketInfo.close, Websocket.close).
    func startClose(_ code: CloseCode, reason: String = "") {
        guard state == .open else { return }
        noteClose(code.rawValue, reason)
        FrameEncoder.closePayload(code, reason: reason).withUnsafeBytes { sendFrame(.close, $0) }
        state = .closing
        worker.loop.schedule(after: 5_000_000_000) { [weak self] in
            guard let self, self.state == .closing else { return }
            Log.debug("socket \(self.socketId) did not answer our close frame")
            self.closeSocket()
        }
    }

    /// Fails the connection: a close frame with `code` where the protocol allows one, then close.
    func fail(_ code: CloseCode, _ reason: String) {
        Log.info("closing socket \(socketId) with \(code.rawValue): \(reason)")
        noteClose(code.rawValue, reason)
        if state == .open || state == .closing {
            FrameEncoder.closePayload(code).withUnsafeBytes { sendFrame(.close, $0) }
        }
        state = .finishing
        scheduleFlush()
    }

    /// Sends an HTTP response to a request that is not upgraded, then closes.
    func respondAndClose(_ response: [UInt8]) {
        output.append(response)
        state = .finishing
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
                info?.queuedBytes.store(output.count, ordering: .relaxed)
                setWantsWrite(true)
                return
            case .wantRead:
                info?.queuedBytes.store(output.count, ordering: .relaxed)
                writeWaitsForReadable = true
                return
            case .closed, .failed:
                closeSocket()
                return
            }
        }
        output.clear(keepingUpTo: 4096)
        refusedBytes = 0
        info?.queuedBytes.store(0, ordering: .relaxed)
        setWantsWrite(false)
        if state == .finishing { linger() }
    }

    private func linger() {
        state = .draining
        transport.shutdownWrite()
        if readPaused {
            readPaused = false
            updateInterest()
        }
        worker.loop.schedule(after: 2_000_000_000) { [weak self] in
            guard let self, self.state == .draining else { return }
            self.closeSocket()
        }
    }

    private func setWantsWrite(_ wants: Bool) {
        let wants = wants || readWaitsForWritable
        guard wants != wantsWrite, state != .closed else { return }
        wantsWrite = wants
        updateInterest()
    }

    func updateInterest() {
        var events: UInt32 = 0
        if !readPaused { events |= IOEvents.readable }
        if wantsWrite { events |= IOEvents.writable }
        worker.loop.modify(fd: fd, events: events, registration: registration)
    }

    /// Stops reading for a while (a rate-limit token is due, or the script overran its time);
    /// buffered input is processed on resume.
    func pauseReading(for nanos: UInt64) {
        readPaused = true
        updateInterest()
        worker.loop.schedule(after: max(nanos, 1_000_000)) { [weak self] in
            guard let self, self.state != .closed, self.readPaused else { return }
            self.readPaused = false
            self.updateInterest()
            if !self.input.isEmpty { self.processInput() }
            if self.transport.hasBufferedInput && !self.readPaused && self.state != .closed { self.readOnce() }
        }
    }

    /// Closes the socket now and tells the script, if it saw the socket open.
    func closeSocket() {
        guard state != .closed else { return }
        let wasUpgraded = info != nil
        state = .closed
        worker.loop.deregister(fd: fd, registration: registration)
        transport.tls = nil // freed before the descriptor can be reused
        Socket.close(fd)
        input.release()
        output.release()
        fragments.release()
        if droppedMessages > 0 {
            Log.info("socket \(socketId) dropped \(droppedMessages) messages over the rate limit")
        }
        worker.connectionClosed(self, wasUpgraded: wasUpgraded)
    }
}
