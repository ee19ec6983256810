import Reactor
import WebSocketCodec

/// Opens one client WebSocket connection on a loop: a stream (`Connector`: the name resolved off
/// the loop, each address tried in turn, TLS for wss://), then the upgrade request and the check of
/// the server's 101. Redirects are not followed. Exactly one of the outcomes is reported, unless
/// `cancel()` comes first.
final class Dialer: IOHandler {
    struct Target {
        let url: WebSocketURL
        let headers: [(name: String, value: String)]
        /// Set for wss://.
        let tls: TLSClientContext?
        /// False skips certificate verification (`insecure`).
        let verify: Bool
        /// What to offer for permessage-deflate; nil offers no compression.
        let deflate: DeflatePolicy?
    }

    /// A connection that completed its opening handshake.
    struct Established {
        let transport: Transport
        /// Bytes that came right behind the 101 response: the first frames.
        let leftover: [UInt8]
        /// Set when the server accepted permessage-deflate.
        let deflate: DeflateSettings?
    }

    private enum Phase {
        case connecting, upgrade, finished
    }

    /// A response head larger than this is not a WebSocket server talking.
    private static let maxResponseBytes = 16 * 1024

    private let loop: EventLoop
    private let target: Target
    private let completion: (Result<Established, DialError>) -> Void
    private var phase = Phase.connecting
    private var connector: Connector?
    private var transport = Transport(fd: -1, tls: nil)
    private var registration = EventLoop.Registration.none
    private var request: [UInt8] = []
    private var requestSent = 0
    private var response = ByteBuffer()
    private let key = ClientHandshake.makeKey()

    init(loop: EventLoop, target: Target, timeoutNanos: UInt64, completion: @escaping (Result<Established, DialError>) -> Void) {
        self.loop = loop
        self.target = target
        self.completion = completion
        request = ClientHandshake.request(url: target.url, key: key, headers: target.headers, deflate: target.deflate)
        loop.schedule(after: timeoutNanos) { [weak self] in
            guard let self, self.phase != .finished else { return }
            self.finish(.failure(DialError("timeout after \(timeoutNanos / 1_000_000) ms while \(self.phaseDescription)")))
        }
        let connector = Connector(loop: loop, target: Connector.Target(host: target.url.host, port: target.url.port, tls: target.tls,
                                                                       isIPLiteral: target.url.isIPLiteral, verify: target.verify)) { [weak self] result in
            self?.connected(result)
        }
        self.connector = connector
        connector.start()
    }

    /// Stops dialing without reporting anything.
    func cancel() {
        guard phase != .finished else { return }
        phase = .finished
        connector?.cancel()
        closeSocket()
    }

    private var phaseDescription: String {
        switch phase {
        case .connecting: return connector?.phaseDescription ?? "connecting"
        case .upgrade: return "waiting for the upgrade response"
        case .finished: return "finished"
        }
    }

    private func connected(_ result: Result<Transport, Connector.Failure>) {
        switch result {
        case .success(let stream):
            connector = nil
            transport = stream
            registration = loop.register(fd: transport.fd, events: IOEvents.writable, handler: self)
            guard registration != .none else {
                finish(.failure(DialError("cannot watch the socket")))
                return
            }
            phase = .upgrade
            sendRequest()
        case .failure(.resolve(let why)):
            finish(.failure(DialError("cannot resolve \(target.url.host): \(why)")))
        case .failure(.connect(let why)):
            finish(.failure(DialError(why)))
        case .failure(.closedDuringTLS):
            finish(.failure(DialError("the server closed the connection during the TLS handshake")))
        case .failure(.tls(let why)):
            finish(.failure(DialError(why.hasPrefix("TLS") ? why : "TLS handshake failed: \(why)")))
        }
    }

    func ioReady(_ events: UInt32) {
        guard phase == .upgrade else { return }
        if requestSent < request.count { sendRequest() } else { readResponse() }
    }

    private func sendRequest() {
        while requestSent < request.count {
            let result = request.withUnsafeBytes { transport.write(from: $0.baseAddress! + requestSent, count: $0.count - requestSent) }
            switch result {
            case .bytes(let n):
                requestSent += n
            case .wouldBlock:
                watch(IOEvents.writable)
                return
            case .wantRead:
                watch(IOEvents.readable)
                return
            case .wantWrite:
                watch(IOEvents.writable)
                return
            case .closed:
                finish(.failure(DialError("the server closed the connection before the upgrade request was sent")))
                return
            case .failed(let why):
                finish(.failure(DialError("sending the upgrade request failed: \(why)")))
                return
            }
        }
        watch(IOEvents.readable)
        readResponse()
    }

    private func readResponse() {
        while true {
            let p = response.reserveWritable(4096)
            switch transport.read(into: p, count: 4096) {
            case .bytes(let n):
                response.didWrite(n)
                if let end = HTTPRequestParser.headEnd(UnsafeRawBufferPointer(response.readable)) {
                    upgraded(headEnd: end)
                    return
                }
                if response.count > Dialer.maxResponseBytes {
                    finish(.failure(DialError("the upgrade response head is over \(Dialer.maxResponseBytes) bytes")))
                    return
                }
            case .wouldBlock:
                return
            case .wantWrite:
                watch(IOEvents.writable)
                return
            case .wantRead:
                return
            case .closed:
                finish(.failure(DialError("the server closed the connection without answering the upgrade request")))
                return
            case .failed(let why):
                finish(.failure(DialError("reading the upgrade response failed: \(why)")))
                return
            }
        }
    }

    private func upgraded(headEnd end: Int) {
        let bytes = UnsafeRawBufferPointer(response.readable)
        switch HTTPResponseParser.parse(UnsafeRawBufferPointer(rebasing: bytes[0..<end])) {
        case .failure(.malformed(let why)):
            finish(.failure(DialError("malformed upgrade response: \(why)")))
        case .success(let head):
            if let problem = ClientHandshake.problem(with: head, key: key, offeredDeflate: target.deflate) {
                finish(.failure(DialError(problem)))
                return
            }
            let leftover = Array(UnsafeRawBufferPointer(rebasing: bytes[end...]))
            loop.deregister(fd: transport.fd, registration: registration)
            registration = .none
            phase = .finished
            let deflate = target.deflate.flatMap { ClientHandshake.deflateSettings(head, offered: $0) }
            completion(.success(Established(transport: transport, leftover: leftover, deflate: deflate)))
        }
    }

    private func watch(_ events: UInt32) {
        loop.modify(fd: transport.fd, events: events, registration: registration)
    }

    private func finish(_ result: Result<Established, DialError>) {
        guard phase != .finished else { return }
        phase = .finished
        connector?.cancel()
        connector = nil
        closeSocket()
        completion(result)
    }

    private func closeSocket() {
        guard transport.fd >= 0 else { return }
        if registration != .none { loop.deregister(fd: transport.fd, registration: registration) }
        registration = .none
        transport.tls = nil
        Socket.close(transport.fd)
        transport = Transport(fd: -1, tls: nil)
    }
}

/// Why an outbound connection could not be opened, in words for logs, scripts and `wsgate probe`.
struct DialError: Error, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}
