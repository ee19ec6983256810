/// One WebSocket connection after its opening handshake, without I/O: bytes from the peer go in,
/// messages come out, and every frame to send is appended to the caller's output buffer. It owns
/// the open/closing/closed states, fragment assembly, UTF-8 validation that fails as soon as a bad
/// byte arrives (even inside a frame still in flight), pings and pongs, the close handshake and
/// permessage-deflate in both directions. The same machine serves accepted sockets (`.server`),
/// outbound connections and `wsgate probe` (`.client`).
///
/// The caller owns the bytes: it passes what it has read, keeps the bytes from `consumed` on for
/// the next call (they may have been partly unmasked in place), and flushes `output`.
public final class WebSocketSession {
    public enum State: Equatable {
        case open
        /// Our close frame is queued; the peer's answer is awaited.
        case closing
        /// The close handshake is over or the connection failed: flush the output, then end the connection.
        case closed
    }

    /// What to do with the first frame of a data message (the caller's rate limit).
    public enum Admission: Equatable {
        case accept
        /// Skip the whole message.
        case discard
        /// Leave the frame unread for now: `next` returns `.held`.
        case hold
        case fail(CloseCode, String)
    }

    public enum Event {
        /// A whole message. The bytes stay valid until the next call into the session.
        case message(UnsafeRawBufferPointer, binary: Bool)
        /// Everything complete was handled; keep the bytes from `consumed` on.
        case needMore
        /// Admission said hold: the frame at `consumed` is left unread.
        case held
        /// The close handshake is over (see `closeCode`); `output` has its last bytes.
        case closed
        /// The peer broke the protocol (or admission failed it): `output` has our close frame with
        /// the failure's code, and the session is `.closed`.
        case failed(CloseFailure)
    }

    /// What a timer tick did.
    public enum Tick: Equatable {
        case nothing
        /// A ping or a close frame (idle timeout) was queued: flush.
        case wrote
        /// Our close frame went unanswered for `closeTimeoutNanos`: drop the connection.
        case expired
    }

    /// How long the peer has to answer our close frame.
    public static let closeTimeoutNanos: UInt64 = 5_000_000_000
    /// Each fragment also costs this much of `maxMessageBytes`, so a message of endless empty
    /// fragments is bounded too.
    public static let fragmentOverhead = 8

    public let role: Role
    /// Set when permessage-deflate was negotiated.
    public let deflate: DeflateSession?
    /// The thread's limits and zlib streams.
    private let shared: SessionShared
    /// Stored properties are private and read through accessors: the optimizer can then prove that
    /// no two accesses overlap and drop the run-time exclusivity checks on the frame path. The
    /// small ones sit together so the object stays small (one per connection).
    private var _state = State.open
    private var fragmentOpcode: Opcode?
    private var fragmentCompressed = false
    /// The rest of a message is skipped because admission discarded its first frame.
    private var droppingMessage = false
    /// Whether admission accepted, or discarded, the frame at the start of the unconsumed bytes
    /// (a frame in flight is asked about once, not again when the rest arrives).
    private var frameAdmitted = false
    private var frameDiscarded = false
    /// A delivered message lives in `fragments` or in the shared inflate buffer until the next call.
    private var releaseDelivered = false
    private var _peerSentClose = false
    /// Runs over the whole text message being received, frame after frame.
    private var utf8 = UTF8Validator()
    private var _closeCode: UInt16?
    private var fragmentCount: Int32 = 0
    /// Payload bytes of the frame at the start of the unconsumed bytes already unmasked (and
    /// validated, for text).
    private var framePayloadDone = 0
    private var _closeReason = ""
    /// Monotonic time of the last bytes from the peer, for pings and the idle timeout.
    private var lastReceived: UInt64
    /// Our last ping while open; once closing, when the peer's close is due.
    private var timer: UInt64
    /// The message being assembled from fragments.
    private var fragments = ByteBuffer()

    public var state: State { _state }
    /// The code and reason of the first close frame sent or received; nil until then.
    public var closeCode: UInt16? { _closeCode }
    public var closeReason: String { _closeReason }
    /// A delivered message still occupies a buffer, which the next call to `next` releases.
    public var holdsMessage: Bool { releaseDelivered }
    /// The peer's close frame arrived: by RFC 6455 5.5.1 nothing follows it.
    public var peerSentClose: Bool { _peerSentClose }

    /// The caller read bytes from the peer at `now`.
    public func received(at now: UInt64) {
        lastReceived = now
    }

    /// `shared` is the calling thread's: sessions run on one thread only.
    public init(role: Role, deflate: DeflateSession? = nil, shared: SessionShared, now: UInt64) {
        self.role = role
        self.deflate = deflate
        self.shared = shared
        lastReceived = now
        timer = now
    }

    /// RSV1 marks a compressed message once permessage-deflate is negotiated.
    private var allowedRSV: UInt8 { deflate == nil ? 0 : 0b100 }

    /// The size of the whole frame starting `bytes`, once its header is there (for read sizing).
    public func pendingFrameLength(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard _state != .closed,
              case .header(let h) = FrameDecoder.parseHeader(bytes, role: role, allowedRSV: allowedRSV, maxPayload: shared.maxMessageBytes)
        else { return nil }
        return h.frameLength
    }

    // MARK: Receiving

    /// Handles frames from `bytes[consumed...]` until a message is complete, more bytes are needed,
    /// admission holds a frame, or the session closes. Frames the protocol answers (ping, close)
    /// queue their answers in `output`. `admit` sees the first frame of each data message once,
    /// before any of it is unmasked.
    public func next(_ bytes: UnsafeMutableRawBufferPointer, consumed: inout Int, output: inout ByteBuffer,
                     admit: (FrameHeader) -> Admission = { _ in .accept }) -> Event {
        if releaseDelivered {
            releaseDelivered = false
            fragments.clear(keepingUpTo: 0)
            if shared.inflated.capacity > 1 << 20 { shared.inflated = [] }
        }
        let maxMessageBytes = shared.maxMessageBytes
        while _state != .closed {
            let rest = UnsafeMutableRawBufferPointer(rebasing: bytes[consumed...])
            let header: FrameHeader
            switch FrameDecoder.parseHeader(UnsafeRawBufferPointer(rest), role: role, allowedRSV: allowedRSV, maxPayload: maxMessageBytes) {
            case .needMore:
                return .needMore
            case .failure(let code, let reason):
                return fail(code, reason, output: &output)
            case .header(let parsed):
                header = parsed
            }
            let complete = rest.count >= header.frameLength
            if droppingMessage && header.opcode == .continuation {
                guard complete else { return .needMore }
                consumed += header.frameLength
                if header.fin { droppingMessage = false }
                continue
            }
            let startsMessage = header.opcode == .text || header.opcode == .binary
            if frameDiscarded || startsMessage && _state == .open && fragmentOpcode == nil && !frameAdmitted && (complete || validatesEarly(header)) {
                switch frameDiscarded ? .discard : admit(header) {
                case .accept:
                    frameAdmitted = true
                case .discard:
                    frameDiscarded = !complete
                    guard complete else { return .needMore }
                    consumed += header.frameLength
                    droppingMessage = !header.fin
                    continue
                case .hold:
                    return .held
                case .fail(let code, let reason):
                    return fail(code, reason, output: &output)
                }
            }
            let payload = UnsafeMutableRawBufferPointer(rebasing: rest[header.headerLength..<min(header.frameLength, rest.count)])
            guard complete else {
                // Fail fast: a text frame still in flight is checked as far as it has arrived.
                if validatesEarly(header) && (!startsMessage || frameAdmitted) {
                    if let failure = sequenceProblem(header) ?? takePayload(header, payload) {
                        return fail(failure.code, failure.reason, output: &output)
                    }
                }
                return .needMore
            }
            if let failure = sequenceProblem(header) ?? takePayload(header, payload) {
                return fail(failure.code, failure.reason, output: &output)
            }
            consumed += header.frameLength
            framePayloadDone = 0
            frameAdmitted = false
            if let event = handle(header, UnsafeRawBufferPointer(payload), maxMessageBytes: maxMessageBytes, output: &output) { return event }
        }
        return .closed
    }

    /// An uncompressed text frame of a message in progress can be checked before it is complete.
    private func validatesEarly(_ header: FrameHeader) -> Bool {
        guard _state == .open, header.rsv == 0 else { return false }
        switch header.opcode {
        case .text: return true
        case .continuation: return fragmentOpcode == .text && !fragmentCompressed
        default: return false
        }
    }

    /// A data frame out of order, or RSV1 where it means nothing.
    private func sequenceProblem(_ header: FrameHeader) -> CloseFailure? {
        if header.rsv & 0b100 != 0 && header.opcode != .text && header.opcode != .binary {
            return CloseFailure(code: .protocolError, reason: "RSV1 set on a control or continuation frame")
        }
        guard _state == .open else { return nil }
        switch header.opcode {
        case .text, .binary:
            if fragmentOpcode != nil { return CloseFailure(code: .protocolError, reason: "new message before the previous one finished") }
        case .continuation:
            if fragmentOpcode == nil { return CloseFailure(code: .protocolError, reason: "continuation frame without a message") }
        default:
            break
        }
        return nil
    }

    /// Unmasks the payload bytes not yet seen and feeds them to the UTF-8 check when the message is
    /// uncompressed text.
    private func takePayload(_ header: FrameHeader, _ payload: UnsafeMutableRawBufferPointer) -> CloseFailure? {
        let done = framePayloadDone
        let checksText = _state == .open && header.rsv == 0
            && (header.opcode == .text || (header.opcode == .continuation && fragmentOpcode == .text && !fragmentCompressed))
        if checksText && header.opcode == .text && done == 0 { utf8 = UTF8Validator() }
        guard payload.count > done else { return nil }
        let fresh = UnsafeMutableRawBufferPointer(rebasing: payload[done...])
        if let key = header.maskKey { Masking.apply(Masking.key(key, advancedBy: done), to: fresh) }
        framePayloadDone = payload.count
        if checksText && !utf8.feed(UnsafeRawBufferPointer(fresh)) {
            return CloseFailure(code: .invalidPayload, reason: "text message is not UTF-8")
        }
        return nil
    }

    /// Acts on one complete, unmasked frame; nil to go on with the next.
    private func handle(_ header: FrameHeader, _ payload: UnsafeRawBufferPointer, maxMessageBytes: Int, output: inout ByteBuffer) -> Event? {
        switch header.opcode {
        case .ping:
            if _state == .open { writeFrame(.pong, payload, compressed: false, output: &output) }
            return nil
        case .pong:
            return nil
        case .close:
            return receiveClose(payload, output: &output)
        case .text, .binary:
            guard _state == .open else { return nil }
            let compressed = header.rsv & 0b100 != 0
            guard header.fin else {
                fragmentOpcode = header.opcode
                fragmentCompressed = compressed
                fragmentCount = 0
                return appendFragment(payload, maxMessageBytes: maxMessageBytes, output: &output)
            }
            if compressed { return inflate(payload, binary: header.opcode == .binary, maxMessageBytes: maxMessageBytes, output: &output) }
            if header.opcode == .text && !utf8.isComplete {
                return fail(.invalidPayload, "text message ends inside a UTF-8 sequence", output: &output)
            }
            return .message(payload, binary: header.opcode == .binary)
        case .continuation:
            guard _state == .open, let opcode = fragmentOpcode else { return nil }
            if let event = appendFragment(payload, maxMessageBytes: maxMessageBytes, output: &output) { return event }
            guard header.fin else { return nil }
            fragmentOpcode = nil
            releaseDelivered = true
            if fragmentCompressed {
                return inflate(UnsafeRawBufferPointer(fragments.readable), binary: opcode == .binary, maxMessageBytes: maxMessageBytes, output: &output)
            }
            if opcode == .text && !utf8.isComplete {
                return fail(.invalidPayload, "text message ends inside a UTF-8 sequence", output: &output)
            }
            return .message(UnsafeRawBufferPointer(fragments.readable), binary: opcode == .binary)
        }
    }

    private func appendFragment(_ payload: UnsafeRawBufferPointer, maxMessageBytes: Int, output: inout ByteBuffer) -> Event? {
        fragmentCount += 1
        if fragments.count + payload.count + Int(fragmentCount) * WebSocketSession.fragmentOverhead > maxMessageBytes {
            return fail(.messageTooBig, "message over \(maxMessageBytes) bytes", output: &output)
        }
        fragments.append(payload)
        return nil
    }

    /// Inflates a whole compressed message; a zip bomb stops at `maxMessageBytes`.
    private func inflate(_ payload: UnsafeRawBufferPointer, binary: Bool, maxMessageBytes: Int, output: inout ByteBuffer) -> Event {
        shared.inflated.removeAll(keepingCapacity: true)
        releaseDelivered = true
        switch deflate!.inflate(payload, into: &shared.inflated, limit: maxMessageBytes, shared: shared) {
        case .ok:
            let message = shared.inflated.withUnsafeBytes { $0 }
            if !binary && !UTF8Validator.isValid(message) {
                return fail(.invalidPayload, "text message is not UTF-8", output: &output)
            }
            return .message(message, binary: binary)
        case .tooBig:
            return fail(.messageTooBig, "message inflates past \(maxMessageBytes) bytes", output: &output)
        case .corrupt(let why):
            return fail(.invalidPayload, "compressed message is corrupt: \(why)", output: &output)
        }
    }

    private func receiveClose(_ payload: UnsafeRawBufferPointer, output: inout ByteBuffer) -> Event {
        switch _state {
        case .open:
            switch ClosePayload.validate(payload) {
            case .success(let code):
                _peerSentClose = true
                noteClose(code?.rawValue ?? 1005, payload.count > 2 ? String(decoding: payload[2...], as: UTF8.self) : "")
                // Echo the peer's code (RFC 6455 5.5.1); an empty close is answered with an empty one.
                let reply = code.map { FrameEncoder.closePayload($0) } ?? []
                reply.withUnsafeBytes { writeFrame(.close, $0, compressed: false, output: &output) }
                _state = .closed
            case .failure(let failure):
                return fail(failure.code, failure.reason, output: &output)
            }
        case .closing:
            // Our close came first and is the one noted: the peer's answer ends the handshake.
            _peerSentClose = true
            _state = .closed
        case .closed:
            break
        }
        return .closed
    }

    // MARK: Sending and closing

    /// Queues one unfragmented message or control frame; false when the session is not open.
    /// Data messages are compressed when permessage-deflate is on and they reach `compressionMinBytes`.
    @discardableResult
    public func send(_ opcode: Opcode, _ payload: UnsafeRawBufferPointer, output: inout ByteBuffer) -> Bool {
        guard _state == .open else { return false }
        if let deflate, !opcode.isControl, payload.count >= shared.compressionMinBytes {
            shared.compressed.removeAll(keepingCapacity: true)
            deflate.compress(payload, into: &shared.compressed, shared: shared)
            shared.compressed.withUnsafeBytes { writeFrame(opcode, $0, compressed: true, output: &output) }
            if shared.compressed.capacity > 1 << 20 { shared.compressed = [] }
        } else {
            writeFrame(opcode, payload, compressed: false, output: &output)
        }
        return true
    }

    /// Queues a message encoded once for many sessions (server role only): its frame as it is, or
    /// its shared compressed frame when this session compresses without context takeover; with
    /// context takeover the payload goes through this session's own stream.
    @discardableResult
    public func send(_ message: PreparedMessage, output: inout ByteBuffer) -> Bool {
        guard _state == .open else { return false }
        precondition(role == .server, "prepared frames are unmasked")
        guard let deflate, message.payloadCount >= shared.compressionMinBytes else {
            output.append(message.frame)
            return true
        }
        let (bits, noTakeover) = deflate.settings.sending(as: role)
        if noTakeover {
            output.append(message.compressedFrame(windowBits: bits, shared: shared))
            return true
        }
        return message.withPayload { send(message.opcode, $0, output: &output) }
    }

    /// Starts the closing handshake; false when it has started already.
    @discardableResult
    public func close(_ code: CloseCode, reason: String = "", now: UInt64, output: inout ByteBuffer) -> Bool {
        guard _state == .open else { return false }
        noteClose(code.rawValue, reason)
        FrameEncoder.closePayload(code, reason: reason).withUnsafeBytes { writeFrame(.close, $0, compressed: false, output: &output) }
        _state = .closing
        timer = now &+ WebSocketSession.closeTimeoutNanos
        return true
    }

    /// Fails the connection: a close frame with `code` unless ours is out already, then closed.
    private func fail(_ code: CloseCode, _ reason: String, output: inout ByteBuffer) -> Event {
        noteClose(code.rawValue, reason)
        if _state == .open {
            FrameEncoder.closePayload(code).withUnsafeBytes { writeFrame(.close, $0, compressed: false, output: &output) }
        }
        _state = .closed
        return .failed(CloseFailure(code: code, reason: reason))
    }

    /// Gives up on a peer that does not read: whatever is queued is dropped for one close frame.
    public func abandon(_ code: CloseCode, reason: String, output: inout ByteBuffer) {
        output.release()
        noteClose(code.rawValue, reason)
        FrameEncoder.closePayload(code, reason: reason).withUnsafeBytes { writeFrame(.close, $0, compressed: false, output: &output) }
        _state = .closed
    }

    /// Pings a quiet peer every `pingEvery`, closes it with 1001 after `idleAfter` without a byte
    /// (0 turns either off), and reports a close frame the peer left unanswered.
    public func tick(now: UInt64, pingEvery: UInt64, idleAfter: UInt64, output: inout ByteBuffer) -> Tick {
        switch _state {
        case .open:
            let quiet = now &- lastReceived
            if idleAfter > 0 && quiet >= idleAfter {
                close(.goingAway, reason: "idle timeout", now: now, output: &output)
                return .wrote
            }
            if pingEvery > 0 && quiet >= pingEvery && now &- timer >= pingEvery {
                timer = now
                writeFrame(.ping, UnsafeRawBufferPointer(start: nil, count: 0), compressed: false, output: &output)
                return .wrote
            }
            return .nothing
        case .closing:
            return now >= timer ? .expired : .nothing
        case .closed:
            return .nothing
        }
    }

    private func noteClose(_ code: UInt16, _ reason: String) {
        if _closeCode == nil {
            _closeCode = code
            _closeReason = reason
        }
    }

    /// Frames are masked in the client role, with a fresh unpredictable key each (RFC 6455 5.3).
    private func writeFrame(_ opcode: Opcode, _ payload: UnsafeRawBufferPointer, compressed: Bool, output: inout ByteBuffer) {
        let maskKey = role == .client ? Masking.randomKey() : nil
        let length = FrameEncoder.headerLength(payloadLength: payload.count, masked: maskKey != nil) + payload.count
        FrameEncoder.writeFrame(to: output.reserveWritable(length), opcode: opcode, rsv1: compressed, payload: payload, maskKey: maskKey)
        output.didWrite(length)
    }
}
