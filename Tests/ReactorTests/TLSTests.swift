import COpenSSL
import CTLS
import Foundation
import Glibc
import XCTest
@testable import Reactor

// Real TLS, no mocks: certificates made by the `openssl` command at test time, the server side
// through TLSStream, the client side through OpenSSL's client API in-process (and Python's ssl
// module in one test), over loopback TCP sockets.
// The fixtures (TestPKI, SocketPair, TestClient, handshakeBoth...) live in Support/.

// MARK: - Tests

final class TLSTests: XCTestCase {
    var pki: TestPKI { TestPKI.shared }

    override class func setUp() {
        super.setUp()
        ignoreSIGPIPE()
    }

    func loadError(cert: String? = nil, key: String? = nil) -> TLSError? {
        do {
            _ = try pki.serverContext(certificateFile: cert, privateKeyFile: key)
            return nil
        } catch {
            return error
        }
    }

    // MARK: Loading

    func testLoadsChainAndKey() throws {
        let context = try pki.serverContext()
        XCTAssertEqual(context.certificateFile, pki.chainFile)
        let mode = ctls_ctx_get_mode(context.ctx)
        let wanted = Int(SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS)
        XCTAssertEqual(mode & wanted, wanted)
        XCTAssertEqual(SSL_CTX_get_min_proto_version_(context.ctx), Int(TLS1_2_VERSION))
    }

    func testMissingFiles() throws {
        let cert = try XCTUnwrap(loadError(cert: pki.missingFile))
        XCTAssertEqual(cert.kind, .unreadable)
        XCTAssertEqual(cert.description, "TLS certificate \(pki.missingFile): cannot read: No such file or directory")
        let key = try XCTUnwrap(loadError(key: pki.missingFile))
        XCTAssertEqual(key.kind, .unreadable)
        XCTAssertEqual(key.description, "TLS private key \(pki.missingFile): cannot read: No such file or directory")
        let folder = try XCTUnwrap(loadError(cert: pki.dir))
        XCTAssertEqual(folder.description, "TLS certificate \(pki.dir): cannot read: Is a directory")
    }

    func testNotPEM() throws {
        let cert = try XCTUnwrap(loadError(cert: pki.notPEMFile))
        XCTAssertEqual(cert.kind, .notPEM)
        XCTAssertTrue(cert.description.hasPrefix("TLS certificate \(pki.notPEMFile): not a PEM certificate"), cert.description)
        let key = try XCTUnwrap(loadError(key: pki.notPEMFile))
        XCTAssertEqual(key.kind, .notPEM)
        XCTAssertTrue(key.description.hasPrefix("TLS private key \(pki.notPEMFile): not a PEM private key"), key.description)
        // A certificate where the key should be is not a key either.
        let swapped = try XCTUnwrap(loadError(key: pki.caFile))
        XCTAssertEqual(swapped.kind, .notPEM)
        print("not-PEM messages:\n  \(cert)\n  \(key)\n  \(swapped)")
    }

    func testKeyMismatch() throws {
        let error = try XCTUnwrap(loadError(key: pki.otherKeyFile))
        XCTAssertEqual(error.kind, .keyMismatch)
        XCTAssertEqual(error.file, pki.otherKeyFile)
        XCTAssertEqual(error.description, "TLS private key \(pki.otherKeyFile) does not match the certificate \(pki.chainFile)")
    }

    func testEncryptedKeyIsRefusedWithoutPrompting() throws {
        let error = try XCTUnwrap(loadError(key: pki.encryptedKeyFile))
        XCTAssertEqual(error.kind, .encryptedKey)
        XCTAssertTrue(error.description.hasPrefix("TLS private key \(pki.encryptedKeyFile): encrypted"), error.description)
    }

    func testExpiredAndNotYetValid() throws {
        let expired = try XCTUnwrap(loadError(cert: pki.expiredFile))
        XCTAssertEqual(expired.kind, .expired)
        XCTAssertEqual(expired.description, "TLS certificate \(pki.expiredFile): expired on 2020-01-02 00:00:00 UTC")
        let future = try XCTUnwrap(loadError(cert: pki.futureFile))
        XCTAssertEqual(future.kind, .notYetValid)
        XCTAssertEqual(future.description, "TLS certificate \(pki.futureFile): not valid before 2099-01-01 00:00:00 UTC")
    }

    func testLoadLeavesNoErrorsQueued() throws {
        _ = loadError(key: pki.otherKeyFile)
        _ = loadError(cert: pki.notPEMFile)
        _ = try pki.serverContext()
        XCTAssertEqual(ERR_peek_error(), 0)
    }

    // MARK: Handshakes

    func testHandshakeALPNVersionAndSmallData() throws {
        let context = try pki.serverContext()
        let pair = SocketPair()
        defer { pair.close() }
        let server = TLSStream(context: context, fd: pair.server)
        var options = TestClient.Options()
        options.alpn = ["h2", "http/1.1"]
        let client = TestClient(fd: pair.client, options: options)
        let (serverStatus, clientStatus) = handshakeBoth(server, pair, client)
        XCTAssertEqual(serverStatus, .done)
        XCTAssertEqual(clientStatus, Int32(CTLS_OK))
        XCTAssertEqual(SSL_get_verify_result(client.ssl), Int(X509_V_OK), "chain from the server verifies against the root alone")
        XCTAssertEqual(server.negotiatedALPN, "http/1.1")
        XCTAssertEqual(client.alpn, "http/1.1")
        XCTAssertEqual(server.protocolVersion, "TLSv1.3")
        XCTAssertFalse(server.hasBufferedInput)

        // Client to server.
        client.writeAll(Array("GET /chat HTTP/1.1\r\n\r\n".utf8))
        var received: [UInt8] = []
        let deadline = Date().addingTimeInterval(5)
        while received.count < 22 && Date() < deadline {
            waitFor([(pair.server, pollIn)])
            let result = serverReadAvailable(server, &received)
            XCTAssertEqual(result, .wantRead)
        }
        XCTAssertEqual(String(decoding: received, as: UTF8.self), "GET /chat HTTP/1.1\r\n\r\n")

        // Server to client.
        let reply = Array("HTTP/1.1 101 Switching Protocols\r\n\r\n".utf8)
        XCTAssertEqual(reply.withUnsafeBytes { server.write(from: $0.baseAddress!, count: $0.count) }, .bytes(reply.count))
        var got: [UInt8] = []
        while got.count < reply.count && Date() < deadline {
            waitFor([(pair.client, pollIn)])
            got += client.readAvailable().0
        }
        XCTAssertEqual(got, reply)
        XCTAssertEqual(server.write(from: reply, count: 0), .bytes(0))
    }

    func testOneMebibyteBothWaysWithPartialWrites() throws {
        let context = try pki.serverContext()
        let pair = SocketPair(buffer: 16384)
        defer { pair.close() }
        let server = TLSStream(context: context, fd: pair.server)
        let client = TestClient(fd: pair.client)
        XCTAssertEqual(handshakeBoth(server, pair, client).server, .done)

        // Server -> client: 1 MiB through partial writes, the unsent bytes passed again after wantWrite.
        let payload = pattern(1 << 20)
        var sent = 0
        var partialWrites = 0
        var wantWrites = 0
        var clientGot: [UInt8] = []
        clientGot.reserveCapacity(payload.count)
        let deadline = Date().addingTimeInterval(20)
        while (sent < payload.count || clientGot.count < payload.count) && Date() < deadline {
            // Write until the socket blocks, then let the client read.
            writing: while sent < payload.count {
                let result = payload.withUnsafeBytes { server.write(from: $0.baseAddress! + sent, count: $0.count - sent) }
                switch result {
                case .bytes(let n):
                    XCTAssertGreaterThan(n, 0)
                    // One new record, plus the one left pending by a previous wantWrite.
                    XCTAssertLessThanOrEqual(n, 2 * 16384)
                    sent += n
                    partialWrites += 1
                case .wantWrite:
                    wantWrites += 1
                    break writing
                default:
                    XCTFail("server write: \(result)")
                    return
                }
            }
            let (bytes, status) = client.readAvailable()
            clientGot += bytes
            XCTAssertTrue(status == CTLS_WANT_READ, "client read status \(status)")
            if bytes.isEmpty { waitFor([(pair.client, pollIn), (pair.server, pollOut)], timeoutMs: 50) }
        }
        XCTAssertEqual(sent, payload.count)
        XCTAssertEqual(clientGot.count, payload.count)
        XCTAssertTrue(clientGot == payload, "server to client bytes differ")
        XCTAssertGreaterThanOrEqual(partialWrites, 32)
        XCTAssertGreaterThan(wantWrites, 0, "the small socket buffers should have blocked the server")
        print("1 MiB server->client: \(partialWrites) partial writes, \(wantWrites) wantWrite results")

        // Client -> server: the server reads in small chunks and drains what OpenSSL buffered.
        let upload = pattern(1 << 20, seed: 7)
        var serverGot: [UInt8] = []
        var uploaded = 0
        var sawBuffered = false
        while (uploaded < upload.count || serverGot.count < upload.count) && Date() < deadline {
            if uploaded < upload.count {
                var done = 0
                var e: Int32 = 0
                let status = upload.withUnsafeBytes { ctls_write(client.ssl, $0.baseAddress! + uploaded, min(65536, $0.count - uploaded), &done, &e) }
                if status == CTLS_OK { uploaded += done } else {
                    XCTAssertTrue(status == CTLS_WANT_WRITE, "client write status \(status)")
                }
            }
            var buffer = [UInt8](repeating: 0, count: 1000)
            while true {
                let result = buffer.withUnsafeMutableBytes { server.read(into: $0.baseAddress!, count: 1000) }
                guard case .bytes(let n) = result else {
                    XCTAssertEqual(result, .wantRead)
                    break
                }
                serverGot += buffer[0..<n]
                if server.hasBufferedInput { sawBuffered = true }
            }
            waitFor([(pair.server, pollIn), (pair.client, pollOut)], timeoutMs: 50)
        }
        XCTAssertTrue(serverGot == upload, "client to server bytes differ (\(serverGot.count) of \(upload.count))")
        XCTAssertTrue(sawBuffered)
    }

    func testBufferedInputIsReportedUntilDrained() throws {
        let context = try pki.serverContext()
        let pair = SocketPair()
        defer { pair.close() }
        let server = TLSStream(context: context, fd: pair.server)
        let client = TestClient(fd: pair.client)
        XCTAssertEqual(handshakeBoth(server, pair, client).server, .done)
        client.writeAll(pattern(10000)) // one record
        waitFor([(pair.server, pollIn)], timeoutMs: 2000)
        usleep(20000)
        var buffer = [UInt8](repeating: 0, count: 100)
        var total: [UInt8] = []
        var first = true
        while total.count < 10000 {
            let result = buffer.withUnsafeMutableBytes { server.read(into: $0.baseAddress!, count: 100) }
            guard case .bytes(let n) = result else { XCTFail("read: \(result)"); break }
            total += buffer[0..<n]
            if first {
                // The whole record was decrypted: the rest sits in OpenSSL, not in the socket.
                XCTAssertTrue(server.hasBufferedInput)
                var fds = [pollfd(fd: pair.server, events: pollIn, revents: 0)]
                XCTAssertEqual(poll(&fds, 1, 0), 0, "epoll would not report the buffered bytes")
                first = false
            }
        }
        XCTAssertEqual(total, pattern(10000))
        XCTAssertFalse(server.hasBufferedInput)
        XCTAssertEqual(buffer.withUnsafeMutableBytes { server.read(into: $0.baseAddress!, count: 100) }, .wantRead)
    }

    func testALPNIsOptional() throws {
        let context = try pki.serverContext()
        for offered in [nil, ["h2"], ["h2", "spdy/3"]] as [[String]?] {
            let pair = SocketPair()
            defer { pair.close() }
            let server = TLSStream(context: context, fd: pair.server)
            var options = TestClient.Options()
            options.alpn = offered
            let client = TestClient(fd: pair.client, options: options)
            let (serverStatus, clientStatus) = handshakeBoth(server, pair, client)
            XCTAssertEqual(serverStatus, .done, "offered \(String(describing: offered))")
            XCTAssertEqual(clientStatus, Int32(CTLS_OK))
            XCTAssertNil(server.negotiatedALPN)
            XCTAssertNil(client.alpn)
        }
    }

    func testTLS12Client() throws {
        let context = try pki.serverContext()
        let pair = SocketPair()
        defer { pair.close() }
        let server = TLSStream(context: context, fd: pair.server)
        var options = TestClient.Options()
        options.maxVersion = TLS1_2_VERSION
        let client = TestClient(fd: pair.client, options: options)
        XCTAssertEqual(handshakeBoth(server, pair, client).server, .done)
        XCTAssertEqual(server.protocolVersion, "TLSv1.2")
        XCTAssertEqual(server.negotiatedALPN, "http/1.1")
    }

    func testTLS11ClientIsRefused() throws {
        let context = try pki.serverContext()
        let pair = SocketPair()
        defer { pair.close() }
        let server = TLSStream(context: context, fd: pair.server)
        var options = TestClient.Options()
        options.minVersion = TLS1_1_VERSION
        options.maxVersion = TLS1_1_VERSION
        // OpenSSL 3 needs security level 0 to offer TLS 1.1 at all; this client does offer it.
        options.cipherList = "DEFAULT:@SECLEVEL=0"
        let client = TestClient(fd: pair.client, options: options)
        let (serverStatus, clientStatus) = handshakeBoth(server, pair, client)
        guard case .failed(let message) = serverStatus else { return XCTFail("server: \(serverStatus)") }
        XCTAssertTrue(message.contains("unsupported protocol"), message)
        XCTAssertEqual(clientStatus, Int32(CTLS_FAILED))
        print("TLS 1.1 client refused: \(message)")
        // No close_notify after a failure.
        server.shutdown()
    }

    func testPlainHTTPFailsAtOnce() throws {
        let context = try pki.serverContext()
        for (request, expected) in [("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", "http request"),
                                    ("hello there\r\n", "wrong version number")] {
            let pair = SocketPair()
            defer { pair.close() }
            let server = TLSStream(context: context, fd: pair.server)
            XCTAssertEqual(server.handshake(), .wantRead)
            let bytes = Array(request.utf8)
            XCTAssertEqual(write(pair.client, bytes, bytes.count), bytes.count)
            waitFor([(pair.server, pollIn)], timeoutMs: 2000)
            let started = Date()
            let status = server.handshake()
            XCTAssertLessThan(Date().timeIntervalSince(started), 0.5)
            guard case .failed(let message) = status else { XCTFail("\(request): \(status)"); continue }
            XCTAssertTrue(message.contains(expected), message)
            print("plain \(request.prefix(3)) to the TLS port: \(message)")
        }
    }

    func testClientCloseIsClosed() throws {
        let context = try pki.serverContext()
        for closeNotify in [true, false] {
            let pair = SocketPair()
            let server = TLSStream(context: context, fd: pair.server)
            let client = TestClient(fd: pair.client)
            XCTAssertEqual(handshakeBoth(server, pair, client).server, .done)
            // Read the server's session tickets: closing over unread bytes would send an RST.
            waitFor([(pair.client, pollIn)], timeoutMs: 2000)
            XCTAssertEqual(client.readAvailable().1, Int32(CTLS_WANT_READ))
            if closeNotify { _ = ctls_shutdown(client.ssl) }
            Socket.close(pair.client)
            var got: [UInt8] = []
            var result = TLSIOResult.wantRead
            let deadline = Date().addingTimeInterval(5)
            while result == .wantRead && Date() < deadline {
                waitFor([(pair.server, pollIn)])
                result = serverReadAvailable(server, &got)
            }
            XCTAssertEqual(result, .closed, closeNotify ? "with close_notify" : "TCP EOF without close_notify")
            server.shutdown()
            Socket.close(pair.server)
        }
    }

    func testEOFBeforeHandshakeIsClosed() throws {
        let context = try pki.serverContext()
        let pair = SocketPair()
        let server = TLSStream(context: context, fd: pair.server)
        XCTAssertEqual(server.handshake(), .wantRead)
        Socket.close(pair.client) // a port probe: connect, then close without a byte
        waitFor([(pair.server, pollIn)], timeoutMs: 2000)
        XCTAssertEqual(server.handshake(), .closed)
        server.shutdown() // nothing to do before a handshake
        Socket.close(pair.server)
    }

    func testServerShutdownSendsCloseNotify() throws {
        let context = try pki.serverContext()
        let pair = SocketPair()
        defer { pair.close() }
        let server = TLSStream(context: context, fd: pair.server)
        let client = TestClient(fd: pair.client)
        XCTAssertEqual(handshakeBoth(server, pair, client).server, .done)
        server.shutdown()
        server.shutdown() // once only
        waitFor([(pair.client, pollIn)], timeoutMs: 2000)
        XCTAssertEqual(client.readAvailable().1, Int32(CTLS_CLOSED), "close_notify reached the client")
    }

    func testResetDuringHandshakeFails() throws {
        let context = try pki.serverContext()
        let pair = SocketPair()
        let server = TLSStream(context: context, fd: pair.server)
        let client = TestClient(fd: pair.client)
        _ = client.handshake() // ClientHello sent
        waitFor([(pair.server, pollIn)], timeoutMs: 2000)
        XCTAssertEqual(server.handshake(), .wantRead) // ServerHello... sent
        // RST: linger 0 then close; unread server flight makes it a reset anyway.
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(pair.client, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        Socket.close(pair.client)
        waitFor([(pair.server, pollIn)], timeoutMs: 2000)
        let status = server.handshake()
        switch status {
        case .failed(let message):
            XCTAssertTrue(message.contains("reset"), message)
            print("reset during the handshake: \(message)")
        case .closed: print("reset during the handshake: closed")
        default: XCTFail("after a reset: \(status)")
        }
        server.shutdown()
        Socket.close(pair.server)
    }

    func testSessionTicketResumption() throws {
        let context = try pki.serverContext()
        var session: OpaquePointer?
        for round in 0..<2 {
            let pair = SocketPair()
            defer { pair.close() }
            let server = TLSStream(context: context, fd: pair.server)
            var options = TestClient.Options()
            options.session = session
            let client = TestClient(fd: pair.client, options: options)
            XCTAssertEqual(handshakeBoth(server, pair, client).server, .done)
            if round == 0 {
                // TLS 1.3 tickets come after the handshake: read them.
                let ping = Array("ping".utf8)
                _ = ping.withUnsafeBytes { server.write(from: $0.baseAddress!, count: 4) }
                waitFor([(pair.client, pollIn)], timeoutMs: 2000)
                _ = client.readAvailable()
                session = SSL_get1_session(client.ssl)
                XCTAssertNotNil(session)
                // Without close_notify, SSL_free marks the session unresumable (ssl_clear_bad_session).
                _ = ctls_shutdown(client.ssl)
            } else {
                XCTAssertEqual(SSL_session_reused(client.ssl), 1, "resumed with the ticket")
                SSL_SESSION_free(session)
            }
        }
    }

    // MARK: Interoperability

    /// Python's ssl module (its own code over its own OpenSSL) against a TLSStream echo server.
    func testPythonClientInterop() throws {
        let context = try pki.serverContext()
        let server = EchoServer(context: context)
        let stop = StopFlag()
        let thread = Thread {
            while !stop.isSet { server.runOnce(timeoutMs: 20) }
        }
        thread.start()
        defer { stop.set() }

        let script = """
            import json, socket, ssl, sys
            port, ca = int(sys.argv[1]), sys.argv[2]
            results = []
            for maximum in (None, ssl.TLSVersion.TLSv1_2):
                ctx = ssl.create_default_context(cafile=ca)
                ctx.set_alpn_protocols(["http/1.1"])
                if maximum:
                    ctx.maximum_version = maximum
                payload = bytes(i * 7 % 251 for i in range(300000))
                with socket.create_connection(("127.0.0.1", port)) as raw:
                    s = ctx.wrap_socket(raw, server_hostname="localhost")
                    s.sendall(payload)
                    got = bytearray()
                    while len(got) < len(payload):
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        got += chunk
                    result = {"version": s.version(), "alpn": s.selected_alpn_protocol(),
                              "echo": bytes(got) == payload, "cipher": s.cipher()[0]}
                    s.unwrap()  # our close_notify, then waits for the server's
                    result["unwrapped"] = True
                    results.append(result)
            # Resumption with the ticket of a first connection.
            ctx = ssl.create_default_context(cafile=ca)
            session = None
            for attempt in range(2):
                with socket.create_connection(("127.0.0.1", port)) as raw:
                    s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
                    s.sendall(b"ping")
                    s.recv(4)
                    session = s.session
                    reused = s.session_reused
                    s.unwrap()
            results.append({"resumed": reused})
            print(json.dumps(results))
            """
        let output = try runPython(script, arguments: [String(server.port), pki.caFile])
        let results = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String: Any]], output)
        XCTAssertEqual(results.count, 3)
        XCTAssertEqual(results.first?["version"] as? String, "TLSv1.3")
        XCTAssertEqual(results.dropFirst().first?["version"] as? String, "TLSv1.2")
        XCTAssertEqual(results.last?["resumed"] as? Bool, true, "resumed with a session ticket")
        for result in results.prefix(2) {
            XCTAssertEqual(result["alpn"] as? String, "http/1.1")
            XCTAssertEqual(result["echo"] as? Bool, true)
            XCTAssertEqual(result["unwrapped"] as? Bool, true)
        }
        print("python client: \(output.trimmingCharacters(in: .whitespacesAndNewlines))")
        stop.set()
        while !thread.isFinished { usleep(1000) }
        XCTAssertEqual(server.stats.handshakes, 4)
        XCTAssertEqual(server.stats.closedByPeer, 4)
        XCTAssertEqual(server.stats.failures, [])
        XCTAssertEqual(Set(server.stats.versions), ["TLSv1.3", "TLSv1.2"])
    }

    // MARK: Memory

    /// Heap per idle TLS connection, with and without SSL_MODE_RELEASE_BUFFERS: 1000 connections
    /// from a Python process (so only the server side is in this process's heap). Printed, not asserted.
    func testMemoryPerIdleConnection() throws {
        let count = 1000
        var report: [String] = []
        for releaseBuffers in [true, false] {
            let context = try pki.serverContext(releaseBuffers: releaseBuffers)
            let server = EchoServer(context: context, expected: count)
            let script = """
                import socket, ssl, sys
                port, ca, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
                ctx = ssl.create_default_context(cafile=ca)
                ctx.set_alpn_protocols(["http/1.1"])
                conns = []
                for _ in range(n):
                    conns.append(ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost"))
                sys.stdin.readline()
                for s in conns:
                    s.sendall(b"GET / HTTP/1.1\\r\\n\\r\\n")
                for s in conns:
                    got = b""
                    while len(got) < 18:
                        got += s.recv(100)
                sys.stdin.readline()
                big = bytes(32768)
                for s in conns:
                    s.sendall(big)
                    got = 0
                    while got < len(big):
                        got += len(s.recv(65536))
                sys.stdin.readline()
                for s in conns:
                    s.close()
                """
            let python = try startPython(script, arguments: [String(server.port), pki.caFile, String(count)])
            let before = MemoryProbe.now()
            let deadline = Date().addingTimeInterval(120)
            while server.stats.handshakes < count && Date() < deadline { server.runOnce(timeoutMs: 50) }
            XCTAssertEqual(server.stats.handshakes, count)
            let afterHandshake = MemoryProbe.now()
            python.input.write(Data("go\n".utf8))
            while server.stats.bytesEchoed < count * 18 && Date() < deadline { server.runOnce(timeoutMs: 50) }
            XCTAssertEqual(server.stats.bytesEchoed, count * 18)
            let afterRequest = MemoryProbe.now()
            python.input.write(Data("go\n".utf8))
            while server.stats.bytesEchoed < count * (18 + 32768) && Date() < deadline { server.runOnce(timeoutMs: 50) }
            XCTAssertEqual(server.stats.bytesEchoed, count * (18 + 32768))
            let afterLarge = MemoryProbe.now()
            python.input.write(Data("go\n".utf8))
            while server.stats.closedByPeer < count && Date() < deadline { server.runOnce(timeoutMs: 50) }
            python.process.waitUntilExit()
            server.closeAll()
            XCTAssertEqual(server.stats.failures, [])

            let label = releaseBuffers ? "with SSL_MODE_RELEASE_BUFFERS   " : "without SSL_MODE_RELEASE_BUFFERS"
            func per(_ a: MemoryProbe, _ b: MemoryProbe) -> String {
                "heap \((b.heapInUse - a.heapInUse) / count) B, RSS \((b.rssKiB - a.rssKiB) * 1024 / count) B"
            }
            report.append("\(label):\n    after handshake: \(per(before, afterHandshake))\n    after an 18 B request/response: \(per(before, afterRequest))\n    after a 32 KiB message each way: \(per(before, afterLarge))")
        }
        // For scale: what SSL_new costs before any handshake.
        let context = try pki.serverContext()
        let dummy = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { Socket.close(dummy) }
        let before = MemoryProbe.now()
        var streams: [TLSStream] = []
        streams.reserveCapacity(count)
        let reserved = MemoryProbe.now()
        for _ in 0..<count { streams.append(TLSStream(context: context, fd: dummy)) }
        let after = MemoryProbe.now()
        XCTAssertGreaterThanOrEqual(reserved.heapInUse, before.heapInUse)
        report.append("TLSStream before its handshake (SSL_new + SSL_set_fd): heap \((after.heapInUse - reserved.heapInUse) / count) B")
        streams.removeAll()
        print("Memory per idle TLS connection (\(count) loopback connections, server side only):\n  " + report.joined(separator: "\n  "))
    }

    // MARK: Python

    private func runPython(_ script: String, arguments: [String]) throws -> String {
        let python = try startPython(script, arguments: arguments)
        python.input.closeFile()
        let output = String(decoding: python.output.readDataToEndOfFile(), as: UTF8.self)
        python.process.waitUntilExit()
        let errors = String(decoding: python.errors.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(python.process.terminationStatus, 0, errors)
        return output
    }

    private func startPython(_ script: String, arguments: [String]) throws -> (process: Process, input: FileHandle, output: FileHandle, errors: FileHandle) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script] + arguments
        let input = Pipe(), output = Pipe(), errors = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        return (process, input.fileHandleForWriting, output.fileHandleForReading, errors.fileHandleForReading)
    }
}

final class StopFlag: @unchecked Sendable {
    private let flag = Protected(false)
    var isSet: Bool { flag.locked { $0 } }
    func set() { flag.locked { $0 = true } }
}

// MARK: - A poll-driven TLS echo server

/// Accepts on a loopback port and echoes whatever each TLS connection sends, the way a reactor
/// would drive TLSStream: one loop, non-blocking sockets, wait for what each call asked for.
final class EchoServer {
    struct Stats {
        var handshakes = 0
        var closedByPeer = 0
        var bytesEchoed = 0
        var failures: [String] = []
        var versions: [String] = []
    }

    final class Connection {
        let fd: Int32
        let stream: TLSStream
        var handshakeDone = false
        var waitWritable = false
        var pending: [UInt8] = []
        init(fd: Int32, stream: TLSStream) {
            self.fd = fd
            self.stream = stream
        }
    }

    let context: TLSServerContext
    let listenFd: Int32
    let port: Int
    private(set) var stats = Stats()
    private var connections: [Int32: Connection] = [:]
    private var scratch = [UInt8](repeating: 0, count: 16384)
    private var polls: [pollfd] = []

    init(context: TLSServerContext, expected: Int = 16) {
        self.context = context
        listenFd = try! Socket.listen(host: "127.0.0.1", port: 0)
        port = Socket.localPort(listenFd)
        connections.reserveCapacity(expected + 16)
        polls.reserveCapacity(expected + 16)
    }

    deinit { closeAll() }

    func closeAll() {
        for connection in connections.values { close(connection) }
        if listenFd >= 0 { Socket.close(listenFd) }
    }

    func runOnce(timeoutMs: Int32) {
        polls.removeAll(keepingCapacity: true)
        polls.append(pollfd(fd: listenFd, events: pollIn, revents: 0))
        for connection in connections.values {
            polls.append(pollfd(fd: connection.fd, events: connection.waitWritable ? pollOut : pollIn, revents: 0))
        }
        let n = poll(&polls, nfds_t(polls.count), timeoutMs)
        guard n > 0 else { return }
        for p in polls where p.revents != 0 {
            if p.fd == listenFd { acceptAll(); continue }
            if let connection = connections[p.fd] { service(connection) }
        }
    }

    private func acceptAll() {
        while case .socket(let fd, _) = Socket.accept(listenFd) {
            connections[fd] = Connection(fd: fd, stream: TLSStream(context: context, fd: fd))
        }
    }

    private func service(_ c: Connection) {
        if !c.handshakeDone {
            switch c.stream.handshake() {
            case .done:
                c.handshakeDone = true
                c.waitWritable = false
                stats.handshakes += 1
                stats.versions.append(c.stream.protocolVersion)
            case .wantRead: c.waitWritable = false; return
            case .wantWrite: c.waitWritable = true; return
            case .closed: stats.closedByPeer += 1; close(c); return
            case .failed(let why): stats.failures.append(why); close(c); return
            }
        }
        // Flush first: retry with the same unsent bytes at the front (the array may have moved).
        if !c.pending.isEmpty {
            let result = c.pending.withUnsafeBytes { c.stream.write(from: $0.baseAddress!, count: $0.count) }
            switch result {
            case .bytes(let n):
                stats.bytesEchoed += n
                c.pending.removeFirst(n)
                if c.pending.isEmpty { c.pending = [] }
                c.waitWritable = !c.pending.isEmpty
                if c.waitWritable { return }
            case .wantWrite: c.waitWritable = true; return
            case .wantRead: c.waitWritable = false
            case .closed: stats.closedByPeer += 1; close(c); return
            case .failed(let why): stats.failures.append(why); close(c); return
            }
        }
        // Read until OpenSSL has nothing more, then echo.
        while true {
            let result = scratch.withUnsafeMutableBytes { c.stream.read(into: $0.baseAddress!, count: $0.count) }
            switch result {
            case .bytes(let n):
                c.pending += scratch[0..<n]
                continue
            case .wantRead:
                break
            case .wantWrite:
                c.waitWritable = true
            case .closed:
                stats.closedByPeer += 1
                c.stream.shutdown()
                close(c)
                return
            case .failed(let why):
                stats.failures.append(why)
                close(c)
                return
            }
            break
        }
        if !c.pending.isEmpty && !c.waitWritable {
            let result = c.pending.withUnsafeBytes { c.stream.write(from: $0.baseAddress!, count: $0.count) }
            switch result {
            case .bytes(let n):
                stats.bytesEchoed += n
                c.pending.removeFirst(n)
                if c.pending.isEmpty { c.pending = [] }
                c.waitWritable = !c.pending.isEmpty
            case .wantWrite: c.waitWritable = true
            case .wantRead: break
            case .closed: stats.closedByPeer += 1; close(c)
            case .failed(let why): stats.failures.append(why); close(c)
            }
        }
    }

    private func close(_ c: Connection) {
        connections[c.fd] = nil
        Socket.close(c.fd)
    }
}

// MARK: - Memory probes

/// Heap bytes in use over all malloc arenas (glibc's malloc_stats, whose report goes to stderr and
/// is captured here) and the resident set size.
struct MemoryProbe {
    let heapInUse: Int
    let rssKiB: Int

    static func now() -> MemoryProbe {
        MemoryProbe(heapInUse: heapInUse(), rssKiB: rssKiB())
    }

    private static func rssKiB() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0
        }
        return 0
    }

    private static func heapInUse() -> Int {
        typealias MallocStats = @convention(c) () -> Void
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_stats") else { return 0 }
        let mallocStats = unsafeBitCast(symbol, to: MallocStats.self)
        let path = NSTemporaryDirectory() + "wsgate-malloc-stats-\(getpid())"
        let file = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        guard file >= 0 else { return 0 }
        defer { Glibc.close(file); unlink(path) }
        fflush(stderr)
        let saved = dup(2)
        dup2(file, 2)
        mallocStats()
        fflush(stderr)
        dup2(saved, 2)
        Glibc.close(saved)
        guard let text = try? String(contentsOfFile: path, encoding: .utf8),
              let total = text.range(of: "Total (incl. mmap):") else { return 0 }
        for line in text[total.upperBound...].split(separator: "\n") where line.hasPrefix("in use bytes") {
            return Int(line.split(separator: "=")[1].trimmingCharacters(in: .whitespaces)) ?? 0
        }
        return 0
    }
}

/// SSL_CTX_get_min_proto_version is a macro too.
private func SSL_CTX_get_min_proto_version_(_ ctx: OpaquePointer) -> Int {
    SSL_CTX_ctrl(ctx, SSL_CTRL_GET_MIN_PROTO_VERSION, 0, nil)
}
