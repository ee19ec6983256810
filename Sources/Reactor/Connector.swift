import Glibc

/// Opens a client byte stream on a loop: the name resolved on the resolver threads, each address
/// tried in turn with a non-blocking connect, then the TLS client handshake when a context is
/// given. Hands over the ready `Transport`, no longer watched by the loop, or says why it could not
/// open one; exactly one outcome is reported, unless `cancel()` comes first. Timeouts are the
/// caller's (`phaseDescription` says where a timed-out attempt stood).
public final class Connector: IOHandler {
    public struct Target {
        public let host: String
        public let port: UInt16
        /// TLS when set, checked against `host` unless `verify` is false.
        public let tls: TLSClientContext?
        public let isIPLiteral: Bool
        public let verify: Bool

        public init(host: String, port: UInt16, tls: TLSClientContext?, isIPLiteral: Bool, verify: Bool) {
            self.host = host
            self.port = port
            self.tls = tls
            self.isIPLiteral = isIPLiteral
            self.verify = verify
        }
    }

    /// Why no stream could be opened, in words for logs and scripts.
    public enum Failure: Error {
        /// getaddrinfo's reason.
        case resolve(String)
        /// The last address's connect error, e.g. "Connection refused (127.0.0.1:9)".
        case connect(String)
        /// The peer closed during the TLS handshake.
        case closedDuringTLS
        /// The handshake failed (verification included); OpenSSL's reason.
        case tls(String)
    }

    private enum Phase {
        case resolving, connecting, tls, finished
    }

    private let loop: EventLoop
    private let target: Target
    private let completion: (Result<Transport, Failure>) -> Void
    private var phase = Phase.resolving
    private var addresses: [SocketAddress] = []
    private var nextAddress = 0
    private var lastConnectError = ""
    private var transport = Transport(fd: -1, tls: nil)
    private var registration = EventLoop.Registration.none

    public init(loop: EventLoop, target: Target, completion: @escaping (Result<Transport, Failure>) -> Void) {
        self.loop = loop
        self.target = target
        self.completion = completion
    }

    public func start() {
        Resolver.resolve(host: target.host, port: target.port, on: loop) { [weak self] result in
            guard let self, self.phase == .resolving else { return }
            switch result {
            case .success(let found):
                self.addresses = found
                self.connectNext()
            case .failure(let error):
                self.finish(.failure(.resolve(error.message)))
            }
        }
    }

    /// Stops without reporting anything; a socket already open is closed.
    public func cancel() {
        guard phase != .finished else { return }
        phase = .finished
        closeSocket()
    }

    public var phaseDescription: String {
        switch phase {
        case .resolving: return "resolving \(target.host)"
        case .connecting: return "connecting"
        case .tls: return "in the TLS handshake"
        case .finished: return "finished"
        }
    }

    private func connectNext() {
        while nextAddress < addresses.count {
            let address = addresses[nextAddress]
            nextAddress += 1
            switch Socket.connect(address) {
            case .success(let fd):
                phase = .connecting
                transport = Transport(fd: fd, tls: nil)
                registration = loop.register(fd: fd, events: IOEvents.writable, handler: self)
                if registration != .none { return }
                Socket.close(fd)
                transport = Transport(fd: -1, tls: nil)
                lastConnectError = "cannot watch the socket"
            case .failure(let error):
                lastConnectError = "\(String(cString: strerror(error.errno))) (\(address))"
            }
        }
        finish(.failure(.connect(lastConnectError.isEmpty ? "no address to connect to" : lastConnectError)))
    }

    public func ioReady(_ events: UInt32) {
        switch phase {
        case .connecting:
            let error = Socket.pendingError(transport.fd)
            guard error == 0 else {
                lastConnectError = "\(String(cString: strerror(error))) (\(addresses[nextAddress - 1]))"
                closeSocket()
                connectNext()
                return
            }
            guard let context = target.tls else {
                finish(.success(transport))
                return
            }
            phase = .tls
            transport.tls = TLSStream(client: context, fd: transport.fd, serverName: target.host,
                                      isIPLiteral: target.isIPLiteral, verify: target.verify)
            continueTLS()
        case .tls:
            continueTLS()
        case .resolving, .finished:
            break
        }
    }

    private func continueTLS() {
        switch transport.tls!.handshake() {
        case .done:
            finish(.success(transport))
        case .wantRead:
            loop.modify(fd: transport.fd, events: IOEvents.readable, registration: registration)
        case .wantWrite:
            loop.modify(fd: transport.fd, events: IOEvents.writable, registration: registration)
        case .closed:
            finish(.failure(.closedDuringTLS))
        case .failed(let why):
            finish(.failure(.tls(why)))
        }
    }

    private func finish(_ result: Result<Transport, Failure>) {
        guard phase != .finished else { return }
        phase = .finished
        if case .success = result {
            // Handed over: the caller watches the socket from now on.
            loop.deregister(fd: transport.fd, registration: registration)
            registration = .none
            transport = Transport(fd: -1, tls: nil)
        } else {
            closeSocket()
        }
        completion(result)
    }

    private func closeSocket() {
        guard transport.fd >= 0 else { return }
        loop.deregister(fd: transport.fd, registration: registration)
        registration = .none
        transport.tls = nil // freed before the descriptor can be reused
        Socket.close(transport.fd)
        transport = Transport(fd: -1, tls: nil)
    }
}
