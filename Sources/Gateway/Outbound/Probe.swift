import Foundation
import Reactor
import WebSocketCodec

/// `wsgate probe`: opens one client WebSocket connection, sends a message if asked, waits for the
/// first message or the timeout, closes cleanly and reports as one JSON object.
public enum Probe {
    public struct Options {
        public var url: String
        public var data: String?
        public var timeoutSeconds: Double
        /// "Name: value" lines.
        public var headers: [String]
        public var insecure: Bool
        public var caFile: String?
        /// Offer permessage-deflate (the default policy).
        public var compression: Bool

        public init(url: String, data: String?, timeoutSeconds: Double, headers: [String], insecure: Bool, caFile: String?, compression: Bool) {
            self.url = url
            self.data = data
            self.timeoutSeconds = timeoutSeconds
            self.headers = headers
            self.insecure = insecure
            self.caFile = caFile
            self.compression = compression
        }
    }

    /// The JSON line to print and the exit code: 0 connected, 1 not, 2 bad arguments.
    public static func run(_ options: Options) -> (json: String, exitCode: Int32) {
        let target: Dialer.Target
        switch makeTarget(options) {
        case .failure(let error): return (report(["connection": false, "error": error.message]), 2)
        case .success(let value): target = value
        }
        Socket.ignoreBrokenPipes()
        let loop = EventLoop(index: 0)
        let timeout = UInt64(options.timeoutSeconds * 1e9)
        // One timeout for everything: connecting and waiting for the first message.
        let deadline = loop.now + timeout
        var outcome: [String: Any]?
        var session: ProbeSession?
        let dialer = Dialer(loop: loop, target: target, timeoutNanos: timeout) { result in
            switch result {
            case .failure(let error):
                outcome = ["connection": false, "error": error.message]
            case .success(let established):
                session = ProbeSession(loop: loop, established: established, data: options.data, deadline: deadline) { outcome = $0 }
            }
        }
        while outcome == nil { loop.runOnce() }
        withExtendedLifetime((dialer, session)) {}
        let connected = outcome?["connection"] as? Bool ?? false
        return (report(outcome!), connected ? 0 : 1)
    }

    private static func makeTarget(_ options: Options) -> Result<Dialer.Target, DialError> {
        guard options.timeoutSeconds > 0, options.timeoutSeconds <= 3600 else {
            return .failure(DialError("--timeout must be between 0 and 3600 seconds"))
        }
        let url: WebSocketURL
        switch WebSocketURL.parse(options.url) {
        case .failure(let error): return .failure(DialError(error.message))
        case .success(let value): url = value
        }
        var headers: [(name: String, value: String)] = []
        for line in options.headers {
            guard let colon = line.firstIndex(of: ":") else {
                return .failure(DialError("--header \"\(line)\" is not \"Name: value\""))
            }
            let name = String(line[..<colon])
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if let why = ClientHandshake.headerProblem(name: name, value: value) { return .failure(DialError("--header \"\(line)\": \(why)")) }
            headers.append((name, value))
        }
        if options.caFile != nil && !url.secure { return .failure(DialError("--ca-file only applies to wss:// URLs")) }
        var tls: TLSClientContext?
        if url.secure {
            do {
                tls = try TLSClientContext.load(caFile: options.caFile)
            } catch {
                return .failure(DialError(error.message))
            }
        }
        return .success(Dialer.Target(url: url, headers: headers, tls: tls, verify: !options.insecure,
                                      deflate: options.compression ? DeflatePolicy() : nil))
    }

    private static func report(_ object: [String: Any]) -> String {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else {
            return "{\"connection\":false,\"error\":\"cannot encode the result\"}"
        }
        return String(decoding: data, as: UTF8.self)
    }
}

/// The open connection of a probe: sends the message, takes the first one back (the session answers
/// pings on the way), then closes with 1000 and waits briefly for the server's close.
private final class ProbeSession: IOHandler {
    /// The first message may be large, but not without bound.
    private static let maxMessageBytes = 16 << 20
    /// How long a clean close may take once the answer is in.
    private static let closeGraceNanos: UInt64 = 1_000_000_000

    private let loop: EventLoop
    private var transport: Transport
    private let session: WebSocketSession
    private var registration = EventLoop.Registration.none
    private var input = ByteBuffer()
    private var output = ByteBuffer()
    private var result: [String: Any]?
    private let finish: ([String: Any]) -> Void

    init(loop: EventLoop, established: Dialer.Established, data: String?, deadline: UInt64, finish: @escaping ([String: Any]) -> Void) {
        self.loop = loop
        transport = established.transport
        session = WebSocketSession(role: .client, deflate: established.deflate.map { DeflateSession(settings: $0, role: .client) },
                                   shared: SessionShared(maxMessageBytes: ProbeSession.maxMessageBytes), now: loop.now)
        self.finish = finish
        registration = loop.register(fd: transport.fd, events: IOEvents.readable, handler: self)
        if let data { Array(data.utf8).withUnsafeBytes { _ = session.send(.text, $0, output: &output) } }
        if !established.leftover.isEmpty { input.append(established.leftover) }
        loop.schedule(after: deadline > loop.now ? deadline - loop.now : 0) { [weak self] in
            // No message in time: connected all the same.
            self?.answer(["connection": true, "data": NSNull()])
        }
        loop.schedule(after: 0) { [weak self] in
            guard let self else { return }
            self.flush()
            self.processInput()
            if self.transport.hasBufferedInput { self.ioReady(IOEvents.readable) }
        }
    }

    func ioReady(_ events: UInt32) {
        if events & IOEvents.writable != 0 { flush() }
        guard events & (IOEvents.readable | IOEvents.hangup | IOEvents.error) != 0 else { return }
        repeat {
            let p = input.reserveWritable(16 * 1024)
            switch transport.read(into: p, count: 16 * 1024) {
            case .bytes(let n):
                input.didWrite(n)
                processInput()
            case .wouldBlock, .wantRead:
                return
            case .wantWrite:
                watch(IOEvents.readable | IOEvents.writable)
                return
            case .closed:
                answer(["connection": true, "data": NSNull(), "error": "the server closed the connection without a close frame"])
                done()
                return
            case .failed(let why):
                answer(["connection": true, "data": NSNull(), "error": "reading failed: \(why)"])
                done()
                return
            }
        } while transport.hasBufferedInput && registration != .none
    }

    private func processInput() {
        guard registration != .none else { return }
        var consumed = 0
        defer {
            input.consume(consumed)
            flush()
        }
        while true {
            switch session.next(input.readable, consumed: &consumed, output: &output) {
            case .message(let payload, let binary):
                if binary {
                    answer(["connection": true, "data": Base64.encode(Array(payload)), "binary": true])
                } else {
                    answer(["connection": true, "data": String(decoding: payload, as: UTF8.self)])
                }
            case .needMore, .held:
                return
            case .closed:
                answer(["connection": true, "data": NSNull(), "close_code": Int(session.closeCode ?? 1005)])
                // Our close answered the server's, or the server answered ours: nothing more to wait for.
                loop.schedule(after: 0) { [weak self] in self?.done() }
                return
            case .failed(let failure):
                answer(["connection": true, "data": NSNull(), "error": "protocol error from the server: \(failure.reason)"])
                loop.schedule(after: 0) { [weak self] in self?.done() }
                return
            }
        }
    }

    /// Records the outcome (the first one wins) and starts the close.
    private func answer(_ outcome: [String: Any]) {
        guard result == nil else { return }
        result = outcome
        guard session.close(.normal, now: loop.now, output: &output) else { return }
        flush()
        loop.schedule(after: ProbeSession.closeGraceNanos) { [weak self] in self?.done() }
    }

    private func flush() {
        guard registration != .none else { return }
        while !output.isEmpty {
            switch transport.write(from: output.readable.baseAddress!, count: output.count) {
            case .bytes(let n):
                output.consume(n)
            case .wouldBlock, .wantWrite:
                watch(IOEvents.readable | IOEvents.writable)
                return
            case .wantRead:
                return
            case .closed, .failed:
                output.clear()
                return
            }
        }
        watch(IOEvents.readable)
    }

    private func watch(_ events: UInt32) {
        guard registration != .none else { return }
        loop.modify(fd: transport.fd, events: events, registration: registration)
    }

    /// Closes the socket and reports.
    private func done() {
        guard registration != .none else { return }
        flush()
        loop.deregister(fd: transport.fd, registration: registration)
        registration = .none
        transport.shutdownWrite()
        transport.tls = nil
        Socket.close(transport.fd)
        finish(result ?? ["connection": true, "data": NSNull()])
    }
}
