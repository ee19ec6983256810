import COpenSSL
import CTLS
import Foundation
import Glibc
import XCTest
@testable import Reactor

// The client side of the reactor against real sockets: name resolution through an event loop,
// non-blocking connects on loopback, and TLSStream as a client against TLSStream as a server with
// the certificates of TestPKI (Support/TestPKI.swift).

/// Runs `loop` on this thread until `done()` or `timeout`; a short timer bounds each wait.
private func runLoop(_ loop: EventLoop, timeout: TimeInterval = 10, until done: () -> Bool) {
    let deadline = Date().addingTimeInterval(timeout)
    while !done() && Date() < deadline {
        loop.schedule(after: 50_000_000) {}
        loop.runOnce()
    }
}

/// Resolves through a loop run on this thread, checking that `done` comes later and on this thread.
private func resolve(_ host: String, port: UInt16 = 80, file: StaticString = #filePath, line: UInt = #line)
    -> Result<[SocketAddress], ResolveError>? {
    let loop = EventLoop(index: 0)
    let loopThread = pthread_self()
    var result: Result<[SocketAddress], ResolveError>?
    var returned = false
    Resolver.resolve(host: host, port: port, on: loop) { found in
        XCTAssertTrue(returned, "done was called from inside resolve", file: file, line: line)
        XCTAssertNotEqual(pthread_equal(pthread_self(), loopThread), 0, "done ran off the loop's thread", file: file, line: line)
        result = found
    }
    returned = true
    runLoop(loop) { result != nil }
    XCTAssertNotNil(result, "\(host): no answer", file: file, line: line)
    return result
}

/// Sends `bytes` one way (small enough for the socket buffers) and returns what arrived.
private func transfer(_ bytes: [UInt8], from sender: TLSStream, to receiver: TLSStream, _ pair: SocketPair, toServer: Bool) -> [UInt8] {
    var sent = 0
    var received: [UInt8] = []
    let deadline = Date().addingTimeInterval(5)
    while sent < bytes.count && Date() < deadline {
        let result = bytes.withUnsafeBytes { sender.write(from: $0.baseAddress! + sent, count: $0.count - sent) }
        switch result {
        case .bytes(let n): sent += n
        case .wantWrite: waitFor([(toServer ? pair.client : pair.server, pollOut)])
        default:
            XCTFail("write: \(result)")
            return []
        }
    }
    while received.count < bytes.count && Date() < deadline {
        waitFor([(toServer ? pair.server : pair.client, pollIn)])
        _ = serverReadAvailable(receiver, &received)
    }
    return received
}

final class ResolverTests: XCTestCase {
    func testLocalhost() throws {
        let addresses = try XCTUnwrap(resolve("localhost", port: 8080)).get()
        XCTAssertFalse(addresses.isEmpty)
        for address in addresses {
            XCTAssertTrue(["127.0.0.1:8080", "[::1]:8080"].contains(address.description), address.description)
        }
    }

    func testNumericAddresses() throws {
        XCTAssertEqual(try XCTUnwrap(resolve("127.0.0.1")).get().map(\.description), ["127.0.0.1:80"])
        XCTAssertEqual(try XCTUnwrap(resolve("::1", port: 443)).get().map(\.description), ["[::1]:443"])
    }

    func testUnresolvableName() throws {
        let result = try XCTUnwrap(resolve("nonexistent.invalid"))
        guard case .failure(let error) = result else { return XCTFail("resolved to \(result)") }
        XCTAssertFalse(error.message.isEmpty)
        XCTAssertEqual(error.description, error.message)
        print("nonexistent.invalid: \(error)")
    }

    /// More lookups than resolver threads: they queue, and every one is answered on the loop.
    func testManyLookupsAtOnce() {
        let loop = EventLoop(index: 0)
        var answers: [Int: Bool] = [:]
        for i in 0..<40 {
            let host = i % 2 == 0 ? "localhost" : "nonexistent.invalid"
            Resolver.resolve(host: host, port: 80, on: loop) { result in
                if case .success = result { answers[i] = true } else { answers[i] = false }
            }
        }
        runLoop(loop) { answers.count == 40 }
        XCTAssertEqual(answers.count, 40)
        for (i, resolved) in answers { XCTAssertEqual(resolved, i % 2 == 0, "lookup \(i)") }
    }
}

final class ConnectTests: XCTestCase {
    func testConnectToListeningPort() throws {
        let listener = try Socket.listen(host: "127.0.0.1", port: 0)
        defer { Socket.close(listener) }
        let address = try XCTUnwrap(resolve("127.0.0.1", port: UInt16(Socket.localPort(listener)))).get()[0]
        let fd = try Socket.connect(address).get()
        defer { Socket.close(fd) }
        XCTAssertNotEqual(fcntl(fd, F_GETFL) & O_NONBLOCK, 0)
        XCTAssertNotEqual(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0)
        var noDelay: Int32 = 0
        var size = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &noDelay, &size)
        XCTAssertEqual(noDelay, 1)

        waitFor([(fd, pollOut)], timeoutMs: 5000)
        XCTAssertEqual(Socket.pendingError(fd), 0)
        waitFor([(listener, pollIn)], timeoutMs: 5000)
        guard case .socket(let accepted, let peer) = Socket.accept(listener) else { return XCTFail("nothing to accept") }
        XCTAssertEqual(peer, "127.0.0.1", "the peer's address comes with the accepted socket")
        XCTAssertEqual(peer, Socket.peerAddress(accepted))
        noDelay = 0
        getsockopt(accepted, Int32(IPPROTO_TCP), TCP_NODELAY, &noDelay, &size)
        XCTAssertEqual(noDelay, 1, "the accepted socket has TCP_NODELAY from its listener")
        XCTAssertNotEqual(fcntl(accepted, F_GETFL) & O_NONBLOCK, 0)
        Socket.close(accepted)
    }

    /// The peer's address comes with the accepted socket, formatted as dotted IPv4 for every
    /// width of octet (the loopback network answers from any 127.x.y.z).
    func testAcceptedSocketsPeerAddress() throws {
        let listener = try Socket.listen(host: "127.0.0.1", port: 0)
        defer { Socket.close(listener) }
        for source in ["127.0.0.1", "127.10.200.5", "127.0.99.250", "127.255.255.254"] {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { Socket.close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr(source)
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            XCTAssertEqual(bound, 0, "bind to \(source)")
            address.sin_port = in_port_t(UInt16(Socket.localPort(listener)).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            XCTAssertEqual(connected, 0, "connect from \(source)")
            waitFor([(listener, pollIn)], timeoutMs: 5000)
            guard case .socket(let accepted, let peer) = Socket.accept(listener) else { return XCTFail("nothing to accept") }
            XCTAssertEqual(peer, source)
            XCTAssertEqual(Socket.peerAddress(accepted), source)
            Socket.close(accepted)
        }
    }

    func testConnectToClosedPortIsRefused() throws {
        let listener = try Socket.listen(host: "127.0.0.1", port: 0)
        let port = UInt16(Socket.localPort(listener))
        Socket.close(listener)
        let address = try XCTUnwrap(resolve("127.0.0.1", port: port)).get()[0]
        switch Socket.connect(address) {
        case .failure(let error):
            // Loopback can refuse before connect() returns.
            XCTAssertEqual(error.errno, ECONNREFUSED)
            XCTAssertEqual(error.description, "connect to 127.0.0.1:\(port): Connection refused")
        case .success(let fd):
            defer { Socket.close(fd) }
            waitFor([(fd, pollOut)], timeoutMs: 5000)
            XCTAssertEqual(Socket.pendingError(fd), ECONNREFUSED)
        }
    }
}

final class TLSClientTests: XCTestCase {
    var pki: TestPKI { TestPKI.shared }

    override class func setUp() {
        super.setUp()
        ignoreSIGPIPE()
    }

    /// The handshake of a client for `serverName` against the test server, and both streams.
    private func connect(_ context: TLSClientContext, serverName: String, isIPLiteral: Bool, verify: Bool = true)
        throws -> (server: TLSStatus, client: TLSStatus, streams: (TLSStream, TLSStream), pair: SocketPair) {
        let pair = SocketPair()
        let server = TLSStream(context: try pki.serverContext(), fd: pair.server)
        let client = TLSStream(client: context, fd: pair.client, serverName: serverName, isIPLiteral: isIPLiteral, verify: verify)
        let (serverStatus, clientStatus) = handshakeBoth(server, pair, client)
        return (serverStatus, clientStatus, (server, client), pair)
    }

    private func assertWorks(_ context: TLSClientContext, serverName: String, isIPLiteral: Bool, verify: Bool = true,
                             file: StaticString = #filePath, line: UInt = #line) throws {
        let result = try connect(context, serverName: serverName, isIPLiteral: isIPLiteral, verify: verify)
        defer { result.pair.close() }
        XCTAssertEqual(result.client, .done, file: file, line: line)
        XCTAssertEqual(result.server, .done, file: file, line: line)
        guard result.client == .done && result.server == .done else { return }
        let (server, client) = result.streams
        XCTAssertEqual(client.negotiatedALPN, "http/1.1", file: file, line: line)
        XCTAssertEqual(client.protocolVersion, "TLSv1.3", file: file, line: line)
        let request = Array("GET / HTTP/1.1\r\n\r\n".utf8)
        XCTAssertEqual(transfer(request, from: client, to: server, result.pair, toServer: true), request, file: file, line: line)
        let answer = pattern(40_000)
        XCTAssertEqual(transfer(answer, from: server, to: client, result.pair, toServer: false), answer, file: file, line: line)
    }

    private func verificationFailure(_ context: TLSClientContext, serverName: String, isIPLiteral: Bool,
                                     file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let result = try connect(context, serverName: serverName, isIPLiteral: isIPLiteral)
        defer { result.pair.close() }
        guard case .failed(let why) = result.client else {
            XCTFail("client handshake: \(result.client)", file: file, line: line)
            return ""
        }
        XCTAssertNotEqual(result.server, .done, "the server must not finish with a client that refused it", file: file, line: line)
        return why
    }

    func testContextSettings() throws {
        let context = try TLSClientContext.load(caFile: pki.caFile)
        XCTAssertEqual(context.caFile, pki.caFile)
        let wanted = Int(SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS)
        XCTAssertEqual(ctls_ctx_get_mode(context.ctx) & wanted, wanted)
        XCTAssertEqual(SSL_CTX_ctrl(context.ctx, SSL_CTRL_GET_MIN_PROTO_VERSION, 0, nil), Int(TLS1_2_VERSION))
        XCTAssertEqual(SSL_CTX_get_verify_mode(context.ctx), SSL_VERIFY_PEER)
        XCTAssertNil(try TLSClientContext.load(caFile: nil).caFile)
    }

    func testVerifiedByName() throws {
        try assertWorks(TLSClientContext.load(caFile: pki.caFile), serverName: "localhost", isIPLiteral: false)
    }

    func testVerifiedByIPAddress() throws {
        try assertWorks(TLSClientContext.load(caFile: pki.caFile), serverName: "127.0.0.1", isIPLiteral: true)
    }

    func testHostnameMismatch() throws {
        let why = try verificationFailure(TLSClientContext.load(caFile: pki.caFile), serverName: "example.com", isIPLiteral: false)
        XCTAssertEqual(why, "TLS certificate verification failed: hostname mismatch")
    }

    func testIPAddressMismatch() throws {
        let why = try verificationFailure(TLSClientContext.load(caFile: pki.caFile), serverName: "127.0.0.2", isIPLiteral: true)
        XCTAssertEqual(why, "TLS certificate verification failed: IP address mismatch")
    }

    func testSystemTrustStoreDoesNotTrustTheTestCA() throws {
        let why = try verificationFailure(TLSClientContext.load(caFile: nil), serverName: "localhost", isIPLiteral: false)
        XCTAssertTrue(why.hasPrefix("TLS certificate verification failed: "), why)
        print("untrusted CA: \(why)")
    }

    /// Whatever the CA file holds is an anchor, even when it is not a root.
    func testIntermediateOrLeafAsCAFile() throws {
        try assertWorks(TLSClientContext.load(caFile: pki.dir + "/intermediate.pem"), serverName: "localhost", isIPLiteral: false)
        try assertWorks(TLSClientContext.load(caFile: pki.dir + "/leaf.pem"), serverName: "localhost", isIPLiteral: false)
    }

    func testCAFileThatDidNotIssueTheCertificate() throws {
        // Another certificate for the same name and key, but not in the server's chain.
        let why = try verificationFailure(TLSClientContext.load(caFile: pki.expiredFile), serverName: "localhost", isIPLiteral: false)
        XCTAssertEqual(why, "TLS certificate verification failed: unable to get local issuer certificate")
    }

    func testInsecureSkipsVerification() throws {
        try assertWorks(TLSClientContext.load(caFile: nil), serverName: "localhost", isIPLiteral: false, verify: false)
        try assertWorks(TLSClientContext.load(caFile: pki.caFile), serverName: "example.com", isIPLiteral: false, verify: false)
    }

    /// RFC 6066: SNI carries host names only, never addresses.
    func testServerNameIndicationForNamesOnly() throws {
        let serverContext = try pki.serverContext()
        let clientContext = try TLSClientContext.load(caFile: pki.caFile)
        for (name, isIPLiteral, expected) in [("localhost", false, "localhost"), ("127.0.0.1", true, nil)] {
            let pair = SocketPair()
            defer { pair.close() }
            // A bare OpenSSL server: TLSStream does not expose what the client sent.
            let server = BareTLSServer(context: serverContext, fd: pair.server)
            let client = TLSStream(client: clientContext, fd: pair.client, serverName: name, isIPLiteral: isIPLiteral, verify: true)
            let (serverStatus, clientStatus) = handshakeBoth(server, pair, client)
            XCTAssertEqual(clientStatus, .done, name)
            XCTAssertEqual(serverStatus, Int32(CTLS_OK), name)
            XCTAssertEqual(SSL_get_servername(server.ssl, TLSEXT_NAMETYPE_host_name).map { String(cString: $0) }, expected, name)
        }
    }

    func testInvalidIPAddressFailsTheHandshake() throws {
        let context = try TLSClientContext.load(caFile: pki.caFile)
        let pair = SocketPair()
        defer { pair.close() }
        let client = TLSStream(client: context, fd: pair.client, serverName: "not an address", isIPLiteral: true, verify: true)
        guard case .failed(let why) = client.handshake() else { return XCTFail("handshake went on without a name to verify") }
        XCTAssertTrue(why.hasPrefix("TLS: cannot verify certificates for \"not an address\""), why)
    }

    func testCAFileErrors() throws {
        func loadError(_ file: String) -> TLSError? {
            do {
                _ = try TLSClientContext.load(caFile: file)
                return nil
            } catch {
                return error
            }
        }
        let missing = try XCTUnwrap(loadError(pki.missingFile))
        XCTAssertEqual(missing.kind, .unreadable)
        XCTAssertEqual(missing.file, pki.missingFile)
        XCTAssertEqual(missing.description, "TLS CA file \(pki.missingFile): cannot read: No such file or directory")
        let folder = try XCTUnwrap(loadError(pki.dir))
        XCTAssertEqual(folder.description, "TLS CA file \(pki.dir): cannot read: Is a directory")
        let notPEM = try XCTUnwrap(loadError(pki.notPEMFile))
        XCTAssertEqual(notPEM.kind, .notPEM)
        XCTAssertTrue(notPEM.description.hasPrefix("TLS CA file \(pki.notPEMFile): no PEM certificates"), notPEM.description)
        print("CA file errors:\n  \(missing)\n  \(notPEM)")
        XCTAssertEqual(ERR_peek_error(), 0, "errors left queued")
    }
}
