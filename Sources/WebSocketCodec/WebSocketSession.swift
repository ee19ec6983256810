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
    public enum Admission {
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
        /// The session reached `.closed` (see `closeCode` and `failure`); `output` has its last bytes.
        case closed
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
    public private(set) var state = State.open
    /// Set when permessage-deflate was negotiated.
    public let deflate: DeflateSession?
    private let zlib: SharedZlib?
    public var maxMessageBytes: Int
    /// Outgoing messages smaller than this are sent uncompressed.
    public var compressionMinBytes: Int
    /// The code and reason of the first close frame sent or received; nil until then.
    public private(set) var closeCode: UInt16?
    public private(set) var closeReason = ""
    /// Why the session failed the connection, when it did.
    public private(set) var failure: CloseFailure?
    /// Monotonic time of the last bytes from the peer; the caller sets it on every read.
    public var lastReceived: UInt64
    private var lastPing: UInt64
    private var closeDeadline: UInt64 = 0

    /// The message being assembled from fragments.
    private var fragments = ByteBuffer()
    private var fragmentOpcode: Opcode?
    private var fragmentCompressed = false
    private var fragmentCount = 0
    /// Runs over the whole text message being received, frame after frame.
    private var utf8 = UTF8Validator()
    /// The rest of a message is skipped because admission discarded its first frame.
    private var droppingMessage = false
    /// Progress on the frame at the start of the unconsumed bytes: its payload bytes already
    /// unmasked (and validated, for text), and whether admission accepted it.
    private var framePayloadDone = 0
    private var frameAdmitted = false
    /// A delivered message lives in `fragments` or in the shared inflate buffer until the next call.
    private var releaseDelivered = false

    /// `zlib` is required with `deflate`: the calling thread's shared streams and scratch buffers.
    public init(role: Role, maxMessageBytes: Int, deflate: DeflateSession? = nil, zlib: SharedZlib? = nil,
                compressionMinBytes: Int = 0, now: UInt64) {
        precondition(deflate == nil || zlib != nil, "permessage-deflate needs the thread's SharedZlib")
        self.role = role
        self.maxMessageBytes = maxMessageBytes
        self.deflate = deflate
        self.zlib = zlib
        self.compressionMinBytes = compressionMinBytes
        lastReceived = now
        lastPing = now
    }

    /// RSV1 marks a compressed message once permessage-deflate is negotiated.
    private var allowedRSV: UInt8 { deflate == nil ? 0 : 0b100 }

    /// The size of the whole frame starting `bytes`, once its header is there (for read sizing).
    public func pendingFrameLength(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard state != .closed,
              case .header(let h) = FrameDecoder.parseHeader(bytes, role: role, allowedRSV: allowedRSV, maxPayload: maxMessageBytes)
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
            if let zlib, zlib.inflated.capacity > 1 << 20 { zlib.inflated = [] }
        }
        while state != .closed {
            let rest = UnsafeMutableRawBufferPointer(rebasing: bytes[consumed...])
            let header: FrameHeader
            switch FrameDecoder.parseHeader(UnsafeRawBufferPointer(rest), role: role, allowedRSV: allowedRSV, maxPayload: maxMessageBytes) {
            case .needMore:
                return .needMore
            case .failure(let code, let reason):
                fail(code, reason, output: &output)
                return .closed
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
            if startsMessage && state == .open && fragmentOpcode == nil && !frameAdmitted && (complete || validatesEarly(header)) {
                switch admit(header) {
                case .accept:
                    frameAdmitted = true
                case .discard:
                    guard complete else { return .needMore }
                    consumed += header.frameLength
                    droppingMessage = !header.fin
                    continue
                case .hold:
                    return .held
                case .fail(let code, let reason):
                    fail(code, reason, output: &output)
                    return .closed
                }
            }
            let payload = UnsafeMutableRawBufferPointer(rebasing: rest[header.headerLength..<min(header.frameLength, rest.count)])
            guard complete else {
                // Fail fast: a text frame still in flight is checked as far as it has arrived.
                if validatesEarly(header) && (!startsMessage || frameAdmitted) {
                    if let failure = sequenceProblem(header) ?? takePayload(header, payload) {
                        fail(failure.code, failure.reason, output: &output)
                        return .closed
                    }
                }
                return .needMore
            }
            if let failure = sequenceProblem(header) ?? takePayload(header, payload) {
                fail(failure.code, failure.reason, output: &output)
                return .closed
            }
            consumed += header.frameLength
            framePayloadDone = 0
            frameAdmitted = false
            if let event = handle(header, UnsafeRawBufferPointer(payload), output: &output) { return event }
        }
        return .closed
    }

    /// An uncompressed text frame of a message in progress can be checked before it is complete.
    private func validatesEarly(_ header: FrameHeader) -> Bool {
        guard state == .open, header.rsv == 0 else { return false }
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
        guard state == .open else { return nil }
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
        let checksText = state == .open && header.rsv == 0
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
    private func handle(_ header: FrameHeader, _ payload: UnsafeRawBufferPointer, output: inout ByteBuffer) -> Event? {
        switch header.opcode {
        case .ping:
            if state == .open { writeFrame(.pong, payload, compressed: false, output: &output) }
            return nil
        case .pong:
            return nil
        case .close:
            return receiveClose(payload, output: &output)
        case .text, .binary:
            guard state == .open else { return nil }
            let compressed = header.rsv & 0b100 != 0
            guard header.fin else {
                fragmentOpcode = header.opcode
                fragmentCompressed = compressed
                fragmentCount = 0
                return appendFragment(payload, output: &output)
            }
            if compressed { return inflate(payload, binary: header.opcode == .binary, output: &output) }
            if header.opcode == .text && !utf8.isComplete {
                fail(.invalidPayload, "text message ends inside a UTF-8 sequence", output: &output)
                return .closed
            }
            return .message(payload, binary: header.opcode == .binary)
        case .continuation:
            guard state == .open, let opcode = fragmentOpcode else { return nil }
            if let event = appendFragment(payload, output: &output) { return event }
            guard header.fin else { return nil }
            fragmentOpcode = nil
            releaseDelivered = true
            if fragmentCompressed { return inflate(UnsafeRawBufferPointer(fragments.readable), binary: opcode == .binary, output: &output) }
            if opcode == .text && !utf8.isComplete {
                fail(.invalidPayload, "text message ends inside a UTF-8 sequence", output: &output)
                return .closed
            }
            return .message(UnsafeRawBufferPointer(fragments.readable), binary: opcode == .binary)
        }
    }

    private func appendFragment(_ payload: UnsafeRawBufferPointer, output: inout ByteBuffer) -> Event? {
        fragmentCount += 1
        if fragments.count + payload.count + fragmentCount * WebSocketSession.fragmentOverhead > maxMessageBytes {
            fail(.messageTooBig, "message over \(maxMessageBytes) bytes", output: &output)
            return .closed
        }
        fragments.append(payload)
        return nil
    }

    /// Inflates a whole compressed message; a zip bomb stops at `maxMessageBytes`.
    private func inflate(_ payload: UnsafeRawBufferPointer, binary: Bool, output: inout ByteBuffer) -> Event {
        let zlib = zlib!
        zlib.inflated.removeAll(keepingCapacity: true)
        releaseDelivered = true
        switch deflate!.inflate(payload, into: &zlib.inflated, limit: maxMessageBytes, shared: zlib) {
        case .ok:
            let message = zlib.inflated.withUnsafeBytes { $0 }
            if !binary && !UTF8Validator.isValid(message) {
                fail(.invalidPayload, "text message is not UTF-8", output: &output)
                return .closed
            }
            return .message(message, binary: binary)
        case .tooBig:
            fail(.messageTooBig, "message inflates past \(maxMessageBytes) bytes", output: &output)
        case .corrupt(let why):
            fail(.invalidPayload, "compressed message is corrupt: \(why)", output: &output)
        }
        return .closed
    }

    private func receiveClose(_ payload: UnsafeRawBufferPointer, output: inout ByteBuffer) -> Event {
        switch state {
        case .open:
            switch ClosePayload.validate(payload) {
            case .success(let code):
                noteClose(code?.rawValue ?? 1005, payload.count > 2 ? String(decoding: payload[2...], as: UTF8.self) : "")
                // Echo the peer's code (RFC 6455 5.5.1); an empty close is answered with an empty one.
                let reply = code.map { FrameEncoder.closePayload($0) } ?? []
                reply.withUnsafeBytes { writeFrame(.close, $0, compressed: false, output: &output) }
                state = .closed
            case .failure(let failure):
                fail(failure.code, failure.reason, output: &output)
            }
        case .closing:
            // Our close came first and is the one noted: the peer's answer ends the handshake.
            state = .closed
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
        guard state == .open else { return false }
        if let deflate, let zlib, !opcode.isControl, payload.count >= compressionMinBytes {
            zlib.compressed.removeAll(keepingCapacity: true)
            deflate.compress(payload, into: &zlib.compressed, shared: zlib)
            zlib.compressed.withUnsafeBytes { writeFrame(opcode, $0, compressed: true, output: &output) }
            if zlib.compressed.capacity > 1 << 20 { zlib.compressed = [] }
        } else {
            writeFrame(opcode, payload, compressed: false, output: &output)
        }
        return true
    }

    /// Starts the closing handshake; false when it has started already.
    @discardableResult
    public func close(_ code: CloseCode, reason: String = "", now: UInt64, output: inout ByteBuffer) -> Bool {
        guard state == .open else { return false }
        noteClose(code.rawValue, reason)
        FrameEncoder.closePayload(code, reason: reason).withUnsafeBytes { writeFrame(.close, $0, compressed: false, output: &output) }
        state = .closing
        closeDeadline = now &+ WebSocketSession.closeTimeoutNanos
        return true
    }

    /// Fails the connection: a close frame with `code` where the protocol still allows one.
    public func fail(_ code: CloseCode, _ reason: String, output: inout ByteBuffer) {
        guard state != .closed else { return }
        noteClose(code.rawValue, reason)
        failure = CloseFailure(code: code, reason: reason)
        FrameEncoder.closePayload(code).withUnsafeBytes { writeFrame(.close, $0, compressed: false, output: &output) }
        state = .closed
    }

    /// Gives up on a peer that does not read: whatever is queued is dropped for one close frame.
    public func abandon(_ code: CloseCode, reason: String, output: inout ByteBuffer) {
        output.release()
        noteClose(code.rawValue, reason)
        FrameEncoder.closePayload(code, reason: reason).withUnsafeBytes { writeFrame(.close, $0, compressed: false, output: &output) }
        state = .closed
    }

    /// Pings a quiet peer every `pingEvery`, closes it with 1001 after `idleAfter` without a byte
    /// (0 turns either off), and reports a close frame the peer left unanswered.
    public func tick(now: UInt64, pingEvery: UInt64, idleAfter: UInt64, output: inout ByteBuffer) -> Tick {
        switch state {
        case .open:
            let quiet = now &- lastReceived
            if idleAfter > 0 && quiet >= idleAfter {
                close(.goingAway, reason: "idle timeout", now: now, output: &output)
                return .wrote
            }
            if pingEvery > 0 && quiet >= pingEvery && now &- lastPing >= pingEvery {
                lastPing = now
                writeFrame(.ping, UnsafeRawBufferPointer(start: nil, count: 0), compressed: false, output: &output)
                return .wrote
            }
            return .nothing
        case .closing:
            return now >= closeDeadline ? .expired : .nothing
        case .closed:
            return .nothing
        }
    }

    private func noteClose(_ code: UInt16, _ reason: String) {
        if closeCode == nil {
            closeCode = code
            closeReason = reason
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
