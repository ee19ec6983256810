import Reactor
import WebSocketCodec

/// One `Http.request` on a loop: a connection (an idle one from the loop's pool, else a new one
/// from a `Connector`), the request written, the response read by `HTTPResponseReader`. A
/// connection that may carry another request goes back to the pool. Exactly one outcome is
/// reported, unless `cancel()` comes first.
final class HTTPExchange: IOHandler {
    typealias Completion = (Result<HTTPResponseReader.Response, ServiceFailure>) -> Void

    private enum Phase {
        case connecting, sending, receiving, finished
    }

    /// A response head larger than this is refused as malformed.
    private static let maxHeadBytes = 64 * 1024

    private unowned let worker: Worker
    private let request: HTTPClientRequest
    private let maxBodyBytes: Int
    private let completion: Completion
    private var phase = Phase.connecting
    private var connector: Connector?
    private var transport = Transport(fd: -1, tls: nil)
    private var registration = EventLoop.Registration.none
    private var sent = 0
    private var reader: HTTPResponseReader
    /// The connection came from the pool: if it turns out closed before answering, an idempotent
    /// request is sent again on a new one (the server's idle timeout won the race).
    private var reused = false

    init(worker: Worker, request: HTTPClientRequest, maxBodyBytes: Int, completion: @escaping Completion) {
        self.worker = worker
        self.request = request
        self.maxBodyBytes = maxBodyBytes
        self.completion = completion
        reader = HTTPResponseReader(maxHeadBytes: HTTPExchange.maxHeadBytes, maxBodyBytes: maxBodyBytes, requestMethod: request.method)
    }

    func start() {
        let timeout = request.timeoutNanos
        worker.loop.schedule(after: timeout) { [weak self] in
            guard let self, self.phase != .finished else { return }
            self.finish(.failure(.gatewayTimeout("no response from \(self.request.url.hostHeader) within \(timeout / 1_000_000) ms (\(self.phaseDescription))")))
        }
        if let idle = worker.httpPool.take(request.poolKey) {
            reused = true
            adopt(idle)
            return
        }
        connect()
    }

    /// Stops without reporting anything; the connection is closed.
    func cancel() {
        guard phase != .finished else { return }
        phase = .finished
        connector?.cancel()
        closeSocket()
    }

    private var phaseDescription: String {
        switch phase {
        case .connecting: return connector?.phaseDescription ?? "connecting"
        case .sending: return "sending the request"
        case .receiving: return "waiting for the response"
        case .finished: return "finished"
        }
    }

    private func connect() {
        phase = .connecting
        let url = request.url
        var tls: TLSClientContext?
        if url.secure {
            do {
                tls = try worker.shared.tlsClientContext(caFile: request.caFile)
            } catch {
                finish(.failure(.badRequest(error.message)))
                return
            }
        }
        let connector = Connector(loop: worker.loop, target: Connector.Target(host: url.host, port: url.port, tls: tls,
                                                                              isIPLiteral: url.isIPLiteral, verify: !request.insecure)) { [weak self] result in
            self?.connected(result)
        }
        self.connector = connector
        connector.start()
    }

    private func connected(_ result: Result<Transport, Connector.Failure>) {
        connector = nil
        let host = request.url.hostHeader
        switch result {
        case .success(let stream):
            adopt(stream)
        case .failure(.resolve(let why)):
            finish(.failure(.badGateway("cannot resolve \(request.url.host): \(why)")))
        case .failure(.connect(let why)):
            finish(.failure(.badGateway("cannot connect to \(host): \(why)")))
        case .failure(.closedDuringTLS):
            finish(.failure(.badGateway("\(host) closed the connection during the TLS handshake")))
        case .failure(.tls(let why)):
            finish(.failure(.badGateway(why.hasPrefix("TLS") ? why : "TLS handshake with \(host) failed: \(why)")))
        }
    }

    /// Watches an open connection (new or pooled) and sends the request on it.
    private func adopt(_ stream: Transport) {
        transport = stream
        registration = worker.loop.register(fd: transport.fd, events: IOEvents.writable, handler: self)
        guard registration != .none else {
            closeSocket()
            retryOrFail("cannot watch the socket")
            return
        }
        phase = .sending
        send()
    }

    func ioReady(_ events: UInt32) {
        switch phase {
        case .sending: send()
        case .receiving: receive()
        case .connecting, .finished: break
        }
    }

    private func send() {
        while sent < request.bytes.count {
            let result = request.bytes.withUnsafeBytes { transport.write(from: $0.baseAddress! + sent, count: $0.count - sent) }
            switch result {
            case .bytes(let n):
                sent += n
            case .wouldBlock, .wantWrite:
                watch(IOEvents.writable)
                return
            case .wantRead:
                watch(IOEvents.readable)
                return
            case .closed:
                retryOrFail("\(request.url.hostHeader) closed the connection before the request was sent")
                return
            case .failed(let why):
                retryOrFail("sending the request to \(request.url.hostHeader) failed: \(why)")
                return
            }
        }
        phase = .receiving
        watch(IOEvents.readable)
        receive()
    }

    private func receive() {
        let scratch = worker.readBuffer
        while phase == .receiving {
            let progress: HTTPResponseReader.Progress
            switch transport.read(into: scratch.baseAddress!, count: scratch.count) {
            case .bytes(let n):
                progress = reader.read(UnsafeRawBufferPointer(rebasing: scratch[0..<n]))
            case .wouldBlock, .wantRead:
                return
            case .wantWrite:
                watch(IOEvents.writable)
                return
            case .closed:
                progress = reader.endOfInput()
            case .failed(let why):
                if case .failed(.closedBeforeResponse) = reader.endOfInput() {
                    retryOrFail("reading the response from \(request.url.hostHeader) failed: \(why)")
                } else {
                    finish(.failure(.badGateway("reading the response from \(request.url.hostHeader) failed: \(why)")))
                }
                return
            }
            switch progress {
            case .needMore:
                continue
            case .complete(let response, let leftover):
                complete(response, reusable: response.keepAlive && leftover == 0 && !transport.hasBufferedInput)
                return
            case .failed(.closedBeforeResponse):
                retryOrFail("\(request.url.hostHeader) closed the connection without answering")
                return
            case .failed(.bodyTooLarge):
                finish(.failure(.badGateway("the response body from \(request.url.hostHeader) is over limits.httpResponseBytes (\(maxBodyBytes))")))
                return
            case .failed(let error):
                finish(.failure(.badGateway("malformed response from \(request.url.hostHeader): \(error)")))
                return
            }
        }
    }

    /// A reused connection failed before any answer: an idempotent request goes again on a new one.
    private func retryOrFail(_ why: String) {
        guard reused, request.isIdempotent else {
            finish(.failure(.badGateway(why)))
            return
        }
        reused = false
        closeSocket()
        sent = 0
        reader = HTTPResponseReader(maxHeadBytes: HTTPExchange.maxHeadBytes, maxBodyBytes: maxBodyBytes, requestMethod: request.method)
        connect()
    }

    private func complete(_ response: HTTPResponseReader.Response, reusable: Bool) {
        phase = .finished
        if reusable {
            worker.loop.deregister(fd: transport.fd, registration: registration)
            registration = .none
            worker.httpPool.put(transport, key: request.poolKey)
            transport = Transport(fd: -1, tls: nil)
        } else {
            closeSocket()
        }
        completion(.success(response))
    }

    private func watch(_ events: UInt32) {
        worker.loop.modify(fd: transport.fd, events: events, registration: registration)
    }

    private func finish(_ result: Result<HTTPResponseReader.Response, ServiceFailure>) {
        guard phase != .finished else { return }
        phase = .finished
        connector?.cancel()
        connector = nil
        closeSocket()
        completion(result)
    }

    private func closeSocket() {
        guard transport.fd >= 0 else { return }
        if registration != .none { worker.loop.deregister(fd: transport.fd, registration: registration) }
        registration = .none
        transport.tls = nil
        Socket.close(transport.fd)
        transport = Transport(fd: -1, tls: nil)
    }
}
