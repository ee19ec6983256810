import CHiredis
import Glibc
import Reactor

/// One connection to Redis on one event loop: hiredis's asynchronous context, its socket watched
/// by the loop through the context's `ev` hooks, so no call ever blocks the loop. Commands are
/// pipelined; each reply comes back to its closure on the loop, in order, or `nil` when the
/// connection ends first. A connection that has subscribed delivers every pub/sub message to
/// `onMessage` and should send nothing but (un)subscriptions (RESP2's subscribed mode).
///
/// hiredis frees its context itself when the connection fails; the `cleanup` hook, called on
/// every way out, is where this object learns it is over.
public final class RedisConnection: IOHandler {
    public enum State: Equatable { case idle, connecting, open, closed }

    public private(set) var state = State.idle
    /// A pub/sub message: channel and payload.
    public var onMessage: ((_ channel: [UInt8], _ payload: [UInt8]) -> Void)?
    /// The connection ended after it was open (`why` says how); not called after `close()`.
    public var onClose: ((_ why: String) -> Void)?

    private let loop: EventLoop
    private var context: UnsafeMutablePointer<redisAsyncContext>?
    private var fd: Int32 = -1
    private var registration = EventLoop.Registration.none
    private var interest: UInt32 = 0
    private var connected: ((String?) -> Void)?
    /// Held while hiredis has a context pointing at this object.
    private var keepAlive: RedisConnection?
    private var closedByUs = false

    public init(loop: EventLoop) {
        self.loop = loop
    }

    /// Connects to an address (an IP literal: names are resolved off the loop first); `done` gets
    /// nil once connected, or why not. Gives up after `timeoutNanos`.
    public func connect(ip: String, port: Int, timeoutNanos: UInt64, done: @escaping (String?) -> Void) {
        precondition(state == .idle, "a RedisConnection connects once")
        guard let ac = redisAsyncConnect(ip, Int32(port)) else { return fail(done, "out of memory") }
        if ac.pointee.err != 0 {
            let why = String(cString: ac.pointee.errstr)
            redisAsyncFree(ac)
            return fail(done, why)
        }
        context = ac
        fd = ac.pointee.c.fd
        keepAlive = self
        connected = done
        state = .connecting
        let me = Unmanaged.passUnretained(self).toOpaque()
        ac.pointee.data = me
        ac.pointee.ev.data = me
        ac.pointee.ev.addRead = { RedisConnection.of($0).watch(IOEvents.readable, true) }
        ac.pointee.ev.delRead = { RedisConnection.of($0).watch(IOEvents.readable, false) }
        ac.pointee.ev.addWrite = { RedisConnection.of($0).watch(IOEvents.writable, true) }
        ac.pointee.ev.delWrite = { RedisConnection.of($0).watch(IOEvents.writable, false) }
        ac.pointee.ev.cleanup = { RedisConnection.of($0).contextFreed() }
        _ = redisAsyncSetConnectCallback(ac) { ac, status in
            guard let ac, status == REDIS_OK else { return }   // failures end in cleanup
            RedisConnection.of(ac.pointee.data).didConnect()
        }
        // The connect completes on the first writable event, which hiredis asks for already.
        watch(IOEvents.writable, true)
        loop.schedule(after: timeoutNanos) { [weak self] in
            guard let self, self.state == .connecting else { return }
            self.failure = "no connection within \(timeoutNanos / 1_000_000) ms"
            self.free()
        }
    }

    private func fail(_ done: @escaping (String?) -> Void, _ why: String) {
        state = .closed
        loop.post { done(why) }
    }

    /// Sends one command (binary-safe arguments); false when the connection is not open.
    @discardableResult
    public func command(_ args: [[UInt8]], reply: @escaping (RedisReply?) -> Void) -> Bool {
        guard state == .open, let context else { return false }
        let box = Unmanaged.passRetained(ReplyBox(reply)).toOpaque()
        let status = RedisConnection.withArgv(args) { argc, argv, lengths in
            redisAsyncCommandArgv(context, { _, reply, privdata in
                let box = Unmanaged<ReplyBox>.fromOpaque(privdata!).takeRetainedValue()
                box.handler(reply.map { RedisReply($0.assumingMemoryBound(to: redisReply.self)) })
            }, box, argc, argv, lengths)
        }
        if status != REDIS_OK {
            Unmanaged<ReplyBox>.fromOpaque(box).release()
            return false
        }
        return true
    }

    public func command(_ args: String..., reply: @escaping (RedisReply?) -> Void) -> Bool {
        command(args.map { Array($0.utf8) }, reply: reply)
    }

    /// Subscribes to `channel`; its messages go to `onMessage`. `confirmed` gets true once Redis
    /// confirms, false if the connection ends first.
    public func subscribe(_ channel: String, confirmed: ((Bool) -> Void)? = nil) -> Bool {
        subscription("SUBSCRIBE", channel, confirmed)
    }

    public func unsubscribe(_ channel: String) -> Bool {
        subscription("UNSUBSCRIBE", channel, nil)
    }

    /// hiredis keeps a subscribe callback per channel and calls it for the confirmation and every
    /// message (and with no reply when the context goes): it points at this object, which lives
    /// as long as the context; the confirmation waits in a queue of its own.
    private func subscription(_ verb: String, _ channel: String, _ confirmed: ((Bool) -> Void)?) -> Bool {
        guard state == .open, let context else { return false }
        let status = RedisConnection.withArgv([Array(verb.utf8), Array(channel.utf8)]) { argc, argv, lengths in
            redisAsyncCommandArgv(context, { ac, reply, _ in
                guard let ac, let reply else { return }
                RedisConnection.of(ac.pointee.data).pubsub(RedisReply(reply.assumingMemoryBound(to: redisReply.self)))
            }, nil, argc, argv, lengths)
        }
        guard status == REDIS_OK else { return false }
        if verb == "SUBSCRIBE" { confirmations.append(confirmed) }
        return true
    }

    private var confirmations: [((Bool) -> Void)?] = []

    private func pubsub(_ reply: RedisReply) {
        guard let items = reply.elements, items.count >= 3, let kind = items[0].text else { return }
        switch kind {
        case "message":
            if case .string(let channel) = items[1], case .string(let payload) = items[2] { onMessage?(channel, payload) }
        case "subscribe":
            if !confirmations.isEmpty { confirmations.removeFirst()?(true) }
        default:
            break
        }
    }

    /// Ends the connection at once; pending replies get `nil`. `onClose` is not called.
    public func close() {
        closedByUs = true
        free()
    }

    private func free() {
        guard let context else { return }
        redisAsyncFree(context)
    }

    // MARK: hiredis hooks

    private static func of(_ privdata: UnsafeMutableRawPointer?) -> RedisConnection {
        Unmanaged<RedisConnection>.fromOpaque(privdata!).takeUnretainedValue()
    }

    private func watch(_ event: UInt32, _ on: Bool) {
        let wanted = on ? interest | event : interest & ~event
        guard wanted != interest, fd >= 0 else { return }
        interest = wanted
        if registration == .none {
            registration = loop.register(fd: fd, events: interest, handler: self)
        } else {
            loop.modify(fd: fd, events: interest, registration: registration)
        }
    }

    public func ioReady(_ events: UInt32) {
        guard let context else { return }
        if events & (IOEvents.readable | IOEvents.error | IOEvents.hangup) != 0 {
            redisAsyncHandleRead(context)
        }
        // The read may have ended the context.
        if events & IOEvents.writable != 0, let context = self.context {
            redisAsyncHandleWrite(context)
        }
    }

    private func didConnect() {
        state = .open
        let done = connected
        connected = nil
        done?(nil)
    }

    private var failure: String?

    /// hiredis is about to free the context: the socket is still open, its error still readable.
    private func contextFreed() {
        guard let context else { return }
        let why = failure ?? (context.pointee.err != 0 ? String(cString: context.pointee.errstr) : "connection closed")
        if registration != .none { loop.deregister(fd: fd, registration: registration) }
        registration = .none
        self.context = nil
        fd = -1
        let was = state
        state = .closed
        for confirm in confirmations { confirm?(false) }
        confirmations = []
        // hiredis is still inside a call on this object: release it once that call is over.
        let keep = keepAlive
        keepAlive = nil
        loop.post { _ = keep }
        if was == .connecting, let done = connected {
            connected = nil
            done(why)
        } else if was == .open, !closedByUs {
            onClose?(why)
        }
    }

    private final class ReplyBox {
        let handler: (RedisReply?) -> Void
        init(_ handler: @escaping (RedisReply?) -> Void) { self.handler = handler }
    }

    private static func withArgv(_ args: [[UInt8]], _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> Int32) -> Int32 {
        // One buffer holds every argument; hiredis copies them into its output buffer at once.
        var joined: [UInt8] = []
        joined.reserveCapacity(args.reduce(0) { $0 + $1.count })
        for arg in args { joined += arg }
        let lengths = args.map(\.count)
        return joined.withUnsafeBufferPointer { bytes in
            var pointers: [UnsafePointer<CChar>?] = []
            pointers.reserveCapacity(args.count)
            var offset = 0
            let base = bytes.baseAddress.map { UnsafeRawPointer($0) } ?? UnsafeRawPointer(bitPattern: 1)!
            for length in lengths {
                pointers.append((base + offset).assumingMemoryBound(to: CChar.self))
                offset += length
            }
            return pointers.withUnsafeMutableBufferPointer { argv in
                lengths.withUnsafeBufferPointer { body(Int32(args.count), argv.baseAddress!, $0.baseAddress!) }
            }
        }
    }
}
