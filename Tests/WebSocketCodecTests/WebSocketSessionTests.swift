import XCTest
@testable import WebSocketCodec

/// Drives a `WebSocketSession` with bytes, as a socket would, and reads back what it delivered and
/// what it wrote: no sockets, no loop.
private final class Harness {
    enum Outcome: Equatable {
        case text(String)
        case binary([UInt8])
        case held
        case closed
        case failed(CloseCode)
    }

    struct SentFrame: Equatable {
        var opcode: Opcode
        var payload: [UInt8]
        var rsv1: Bool
        var masked: Bool
    }

    let session: WebSocketSession
    let shared: SessionShared
    /// Bytes fed and not yet consumed, as a connection keeps them.
    var pending: [UInt8] = []
    var output = ByteBuffer()
    var now: UInt64 = 1_000
    var admission: (FrameHeader) -> WebSocketSession.Admission = { _ in .accept }

    init(_ role: Role, maxMessageBytes: Int = 1 << 20, deflate: DeflateSettings? = nil) {
        shared = SessionShared(maxMessageBytes: maxMessageBytes)
        session = WebSocketSession(role: role, deflate: deflate.map { DeflateSession(settings: $0, role: role) }, shared: shared, now: 1_000)
    }

    /// Feeds bytes and runs the session until it needs more, holds or closes.
    @discardableResult
    func feed(_ bytes: [UInt8]) -> [Outcome] {
        pending += bytes
        var outcomes: [Outcome] = []
        var consumed = 0
        pending.withUnsafeMutableBytes { buffer in
            loop: while true {
                switch session.next(buffer, consumed: &consumed, output: &output, admit: admission) {
                case .message(let payload, let binary):
                    outcomes.append(binary ? .binary(Array(payload)) : .text(String(decoding: payload, as: UTF8.self)))
                case .needMore:
                    break loop
                case .held:
                    outcomes.append(.held)
                    break loop
                case .closed:
                    outcomes.append(.closed)
                    consumed = buffer.count
                    break loop
                case .failed(let failure):
                    outcomes.append(.failed(failure.code))
                    consumed = buffer.count
                    break loop
                }
            }
        }
        pending.removeFirst(consumed)
        return outcomes
    }

    /// Everything written since the last call, as frames (unmasked).
    func sent() -> [SentFrame] {
        var frames: [SentFrame] = []
        let bytes = Array(UnsafeRawBufferPointer(output.readable))
        output.clear()
        var offset = 0
        bytes.withUnsafeBytes { raw in
            while offset < raw.count {
                let rest = UnsafeRawBufferPointer(rebasing: raw[offset...])
                // Either role's frames: parse as the side that receives them.
                let receiver: Role = session.role == .server ? .client : .server
                guard case .header(let h) = FrameDecoder.parseHeader(rest, role: receiver, allowedRSV: 0b100, maxPayload: 1 << 30) else {
                    XCTFail("output is not a frame stream")
                    return
                }
                var payload = Array(rest[h.headerLength..<h.frameLength])
                if let key = h.maskKey { payload.withUnsafeMutableBytes { Masking.apply(key, to: $0) } }
                frames.append(SentFrame(opcode: h.opcode, payload: payload, rsv1: h.rsv & 0b100 != 0, masked: h.maskKey != nil))
                offset += h.frameLength
            }
        }
        return frames
    }

    func send(_ opcode: Opcode, _ text: String) -> Bool {
        Array(text.utf8).withUnsafeBytes { session.send(opcode, $0, output: &output) }
    }
}

/// A frame as the peer of `role` sends it: masked towards a server, plain towards a client.
private func frame(to role: Role, _ opcode: Opcode, _ payload: [UInt8], fin: Bool = true, rsv1: Bool = false,
                   key: UInt32 = 0x1234_5678) -> [UInt8] {
    let mask: UInt32? = role == .server ? key : nil
    var out = [UInt8](repeating: 0, count: FrameEncoder.headerLength(payloadLength: payload.count, masked: mask != nil) + payload.count)
    out.withUnsafeMutableBytes { raw in
        payload.withUnsafeBytes { _ = FrameEncoder.writeFrame(to: raw.baseAddress!, opcode: opcode, fin: fin, rsv1: rsv1, payload: $0, maskKey: mask) }
    }
    return out
}

private func frame(to role: Role, _ opcode: Opcode, _ text: String, fin: Bool = true) -> [UInt8] {
    frame(to: role, opcode, Array(text.utf8), fin: fin)
}

private func closeCode(_ frame: Harness.SentFrame?) -> UInt16? {
    guard let frame, frame.opcode == .close, frame.payload.count >= 2 else { return nil }
    return UInt16(frame.payload[0]) << 8 | UInt16(frame.payload[1])
}

final class WebSocketSessionTests: XCTestCase {
    private let roles: [Role] = [.server, .client]

    // MARK: Messages

    func testSingleFrameMessagesInBothRoles() {
        for role in roles {
            let h = Harness(role)
            XCTAssertEqual(h.feed(frame(to: role, .text, "héllo") + frame(to: role, .binary, [0, 1, 255])),
                           [.text("héllo"), .binary([0, 1, 255])], "\(role)")
            XCTAssertEqual(h.session.state, .open)
            XCTAssertTrue(h.sent().isEmpty)
        }
    }

    func testFragmentsInterleavedWithPingsAreAssembled() {
        for role in roles {
            let h = Harness(role)
            let bytes = frame(to: role, .text, "one ", fin: false) + frame(to: role, .ping, Array("p1".utf8))
                + frame(to: role, .continuation, "two ", fin: false) + frame(to: role, .pong, [])
                + frame(to: role, .ping, Array("p2".utf8)) + frame(to: role, .continuation, "three")
            XCTAssertEqual(h.feed(bytes), [.text("one two three")], "\(role)")
            let sent = h.sent()
            XCTAssertEqual(sent.map(\.opcode), [.pong, .pong])
            XCTAssertEqual(sent.map(\.payload), [Array("p1".utf8), Array("p2".utf8)])
            // The client role masks what it sends; the server role must not.
            XCTAssertEqual(sent.map(\.masked), [role == .client, role == .client])
        }
    }

    func testFramesSplitAtEveryOffsetAreUnmaskedRight() {
        let text = "Grüße, 世界! " + String(repeating: "abcdefg", count: 40)
        let whole = frame(to: .server, .text, Array(text.utf8), key: 0xA1B2_C3D4)
        for cut in [1, 2, 3, 5, 6, 7, 9, 11, 50, whole.count - 1] {
            let h = Harness(.server)
            XCTAssertEqual(h.feed(Array(whole[..<cut])), [], "cut at \(cut)")
            XCTAssertEqual(h.feed(Array(whole[cut...])), [.text(text)], "cut at \(cut)")
        }
        // Byte by byte, with a binary frame after it.
        let h = Harness(.server)
        var outcomes: [Harness.Outcome] = []
        for byte in whole + frame(to: .server, .binary, [9, 8, 7]) { outcomes += h.feed([byte]) }
        XCTAssertEqual(outcomes, [.text(text), .binary([9, 8, 7])])
    }

    // MARK: Protocol errors

    private func assertFails(_ role: Role, _ bytes: [UInt8], with code: CloseCode, deflate: DeflateSettings? = nil,
                             maxMessageBytes: Int = 1 << 20, file: StaticString = #filePath, line: UInt = #line) {
        let h = Harness(role, maxMessageBytes: maxMessageBytes, deflate: deflate)
        XCTAssertEqual(h.feed(bytes).last, .failed(code), "\(role)", file: file, line: line)
        XCTAssertEqual(h.session.state, .closed, file: file, line: line)
        XCTAssertFalse(h.session.peerSentClose, "a failed peer may still be sending", file: file, line: line)
        XCTAssertEqual(h.session.closeCode, code.rawValue, file: file, line: line)
        XCTAssertEqual(closeCode(h.sent().last), code.rawValue, "the close frame carries the code", file: file, line: line)
    }

    func testEveryProtocolErrorClosesWithItsCode() {
        for role in roles {
            let peer = role
            // 1002: framing.
            assertFails(role, [0x83, role == .server ? 0x80 : 0x00] + (role == .server ? [0, 0, 0, 0] : []), with: .protocolError) // reserved opcode
            assertFails(role, frame(to: peer, .text, [120], rsv1: true), with: .protocolError)   // RSV1 without deflate
            assertFails(role, frame(to: peer, .ping, [UInt8](repeating: 1, count: 126)), with: .protocolError)
            assertFails(role, frame(to: peer, .ping, [], fin: false), with: .protocolError)
            assertFails(role, frame(to: peer, .continuation, "x"), with: .protocolError)
            assertFails(role, frame(to: peer, .text, "a", fin: false) + frame(to: peer, .text, "b"), with: .protocolError)
            assertFails(role, frame(to: peer, .binary, "a", fin: false) + frame(to: peer, .binary, "b"), with: .protocolError)
            assertFails(role, frame(to: peer, .ping, [], rsv1: true), with: .protocolError, deflate: DeflateSettings())
            assertFails(role, frame(to: peer, .text, "a", fin: false) + frame(to: peer, .continuation, Array("b".utf8), rsv1: true),
                        with: .protocolError, deflate: DeflateSettings())
            assertFails(role, frame(to: peer, .close, [0x03]), with: .protocolError)          // one-byte close payload
            assertFails(role, frame(to: peer, .close, [0x03, 0xED]), with: .protocolError)    // 1005 is not for the wire
            // 1007: text that is not UTF-8.
            assertFails(role, frame(to: peer, .text, [0xC3, 0x28]), with: .invalidPayload)
            assertFails(role, frame(to: peer, .text, [0xE2, 0x82], fin: false) + frame(to: peer, .continuation, [0x28]), with: .invalidPayload)
            assertFails(role, frame(to: peer, .text, [0xE2, 0x82]), with: .invalidPayload)     // ends inside a sequence
            assertFails(role, frame(to: peer, .close, [0x03, 0xE8, 0xFF]), with: .invalidPayload)
            // 1009: too big, as one frame or as fragments.
            assertFails(role, frame(to: peer, .binary, [UInt8](repeating: 0, count: 101)), with: .messageTooBig, maxMessageBytes: 100)
            assertFails(role, frame(to: peer, .binary, [UInt8](repeating: 0, count: 60), fin: false)
                        + frame(to: peer, .continuation, [UInt8](repeating: 0, count: 60)), with: .messageTooBig, maxMessageBytes: 100)
        }
        // The mask is the role's: a server wants it, a client refuses it.
        assertFails(.server, frame(to: .client, .text, "x"), with: .protocolError)
        assertFails(.client, frame(to: .server, .text, "x"), with: .protocolError)
    }

    func testEndlessEmptyFragmentsAreBounded() {
        let h = Harness(.server, maxMessageBytes: 1000)
        var bytes = frame(to: .server, .text, "", fin: false)
        for _ in 0..<200 { bytes += frame(to: .server, .continuation, "", fin: false) }
        XCTAssertEqual(h.feed(bytes), [.failed(.messageTooBig)])
    }

    func testInvalidUTF8FailsBeforeTheFrameIsComplete() {
        // Autobahn 6.4.x: the bad byte arrives while the rest of the frame is still on its way.
        for role in roles {
            let payload = Array("κόσμε".utf8) + [0xF4, 0x90, 0x80, 0x80] + Array("edited".utf8)
            let whole = frame(to: role, .text, payload)
            let h = Harness(role)
            let headerLength = role == .server ? 6 : 2
            XCTAssertEqual(h.feed(Array(whole[..<(headerLength + 5)])), [], "a valid prefix waits")
            XCTAssertEqual(h.feed(Array(whole[(headerLength + 5)..<(headerLength + 12)])), [.failed(.invalidPayload)], "\(role)")
        }
        // Inside a continuation frame still in flight, too.
        let h = Harness(.server)
        XCTAssertEqual(h.feed(frame(to: .server, .text, "ok", fin: false)), [])
        let continuation = frame(to: .server, .continuation, Array("fine".utf8) + [0xFF] + Array("rest".utf8))
        XCTAssertEqual(h.feed(Array(continuation[..<11])), [.failed(.invalidPayload)])
    }

    // MARK: Closing

    func testPeerCloseIsEchoedAndEndsTheSession() {
        for role in roles {
            let h = Harness(role)
            XCTAssertFalse(h.session.peerSentClose)
            XCTAssertEqual(h.feed(frame(to: role, .close, [0x03, 0xE8] + Array("bye".utf8))), [.closed])
            XCTAssertEqual(h.session.state, .closed)
            XCTAssertTrue(h.session.peerSentClose)
            XCTAssertEqual(h.session.closeCode, 1000)
            XCTAssertEqual(h.session.closeReason, "bye")
            XCTAssertEqual(closeCode(h.sent().first), 1000)
        }
        // An empty close is answered with an empty one and reads as 1005.
        let h = Harness(.server)
        XCTAssertEqual(h.feed(frame(to: .server, .close, [])), [.closed])
        XCTAssertEqual(h.session.closeCode, 1005)
        XCTAssertEqual(h.sent(), [.init(opcode: .close, payload: [], rsv1: false, masked: false)])
    }

    func testOurCloseWaitsForThePeersAndIgnoresDataMeanwhile() {
        for role in roles {
            let h = Harness(role)
            XCTAssertTrue(h.session.close(.goingAway, reason: "bye", now: h.now, output: &h.output))
            XCTAssertFalse(h.session.close(.normal, now: h.now, output: &h.output), "only once")
            XCTAssertEqual(h.session.state, .closing)
            XCTAssertEqual(closeCode(h.sent().first), 1001)
            XCTAssertFalse(h.send(.text, "late"), "nothing is sent after our close")
            XCTAssertEqual(h.feed(frame(to: role, .text, "ignored") + frame(to: role, .ping, [])), [])
            XCTAssertTrue(h.sent().isEmpty, "no pong while closing")
            XCTAssertFalse(h.session.peerSentClose)
            XCTAssertEqual(h.feed(frame(to: role, .close, [0x03, 0xE8])), [.closed])
            XCTAssertTrue(h.session.peerSentClose, "the peer's answer ends the handshake")
            XCTAssertEqual(h.session.closeCode, 1001, "our close came first")
            XCTAssertTrue(h.sent().isEmpty, "the peer's answer is not answered")
        }
    }

    func testTicksPingCloseIdlePeersAndGiveUpOnSilentCloses() {
        let second: UInt64 = 1_000_000_000
        let h = Harness(.client)
        h.session.received(at: 0)
        XCTAssertEqual(h.session.tick(now: second / 2, pingEvery: second, idleAfter: 10 * second, output: &h.output), .nothing)
        XCTAssertEqual(h.session.tick(now: 2 * second, pingEvery: second, idleAfter: 10 * second, output: &h.output), .wrote)
        XCTAssertEqual(h.sent().map(\.opcode), [.ping])
        XCTAssertEqual(h.session.tick(now: 2 * second + 1, pingEvery: second, idleAfter: 10 * second, output: &h.output), .nothing)
        XCTAssertEqual(h.session.tick(now: 10 * second, pingEvery: second, idleAfter: 10 * second, output: &h.output), .wrote)
        XCTAssertEqual(h.session.state, .closing)
        XCTAssertEqual(h.sent().map { closeCode($0) }, [1001])
        XCTAssertEqual(h.session.tick(now: 14 * second, pingEvery: second, idleAfter: 10 * second, output: &h.output), .nothing)
        XCTAssertEqual(h.session.tick(now: 15 * second, pingEvery: second, idleAfter: 10 * second, output: &h.output), .expired)
    }

    func testAbandonReplacesTheQueueWithOneCloseFrame() {
        let h = Harness(.server)
        XCTAssertTrue(h.send(.text, String(repeating: "x", count: 5000)))
        h.session.abandon(.policyViolation, reason: "send queue full", output: &h.output)
        let sent = h.sent()
        XCTAssertEqual(sent.count, 1)
        XCTAssertEqual(closeCode(sent.first), 1008)
        XCTAssertEqual(h.session.state, .closed)
        XCTAssertFalse(h.session.peerSentClose)
    }

    // MARK: Admission

    func testAdmissionHoldsDiscardsAndFails() {
        let h = Harness(.server)
        h.admission = { _ in .hold }
        let first = frame(to: .server, .text, "one")
        XCTAssertEqual(h.feed(first), [.held])
        XCTAssertEqual(h.pending, first, "a held frame is left as it came")
        h.admission = { _ in .accept }
        XCTAssertEqual(h.feed([]), [.text("one")])

        // A discarded message goes with all its fragments; pings in between are still answered.
        h.admission = { _ in .discard }
        XCTAssertEqual(h.feed(frame(to: .server, .text, "a", fin: false) + frame(to: .server, .ping, [])
                              + frame(to: .server, .continuation, "b")), [])
        XCTAssertEqual(h.sent().map(\.opcode), [.pong])
        var asked = 0
        h.admission = { _ in asked += 1; return .accept }
        XCTAssertEqual(h.feed(frame(to: .server, .text, "c", fin: false) + frame(to: .server, .continuation, "d")), [.text("cd")])
        XCTAssertEqual(asked, 1, "asked once per message, not per fragment")

        // A text frame in flight is asked about once, whether it is taken or skipped.
        for verdict in [WebSocketSession.Admission.accept, .discard] {
            asked = 0
            h.admission = { _ in asked += 1; return verdict }
            let long = frame(to: .server, .text, String(repeating: "z", count: 300))
            XCTAssertEqual(h.feed(Array(long[..<100])), [])
            XCTAssertEqual(h.feed(Array(long[100..<200])), [])
            XCTAssertEqual(h.feed(Array(long[200...])), verdict == .accept ? [.text(String(repeating: "z", count: 300))] : [])
            XCTAssertEqual(asked, 1, "\(verdict)")
        }

        h.admission = { _ in .fail(.policyViolation, "rate limit exceeded") }
        XCTAssertEqual(h.feed(frame(to: .server, .binary, [1])), [.failed(.policyViolation)])
        XCTAssertEqual(closeCode(h.sent().last), 1008)
    }

    // MARK: permessage-deflate

    /// Two sessions, one per role, wired back to back: what one sends the other receives.
    func testCompressedMessagesBothWays() {
        let settings = DeflateSettings(serverNoContextTakeover: true, clientNoContextTakeover: false,
                                       serverMaxWindowBits: 15, clientMaxWindowBits: 10)
        let server = Harness(.server, deflate: settings)
        let client = Harness(.client, deflate: settings)
        let texts = ["short", String(repeating: "compress me ", count: 200), String(repeating: "again ", count: 300)]
        for text in texts {
            XCTAssertTrue(client.send(.text, text))
            let wire = Array(UnsafeRawBufferPointer(client.output.readable))
            client.output.clear()
            XCTAssertEqual(server.feed(wire), [.text(text)])
            XCTAssertTrue(server.send(.text, text))
            let back = Array(UnsafeRawBufferPointer(server.output.readable))
            server.output.clear()
            XCTAssertEqual(client.feed(back), [.text(text)])
        }
        // compressionMinBytes leaves small messages uncompressed.
        server.shared.compressionMinBytes = 100
        XCTAssertTrue(server.send(.binary, "tiny"))
        XCTAssertTrue(server.send(.binary, String(repeating: "z", count: 100)))
        XCTAssertEqual(server.sent().map(\.rsv1), [false, true])
    }

    /// A message prepared once for many server sessions: plain sessions get its frame byte for
    /// byte, sessions without context takeover share one compressed frame per window size, a
    /// session with takeover compresses through its own stream; every client reads the text back.
    func testPreparedMessageIsEncodedOncePerVariant() {
        let text = String(repeating: "to every subscriber ", count: 40)
        let message = Array(text.utf8).withUnsafeBytes { PreparedMessage(.text, $0) }
        let noTakeover15 = DeflateSettings(serverNoContextTakeover: true, serverMaxWindowBits: 15)
        let noTakeover9 = DeflateSettings(serverNoContextTakeover: true, serverMaxWindowBits: 9)
        let takeover = DeflateSettings(serverNoContextTakeover: false)
        let cases: [DeflateSettings?] = [nil, noTakeover15, noTakeover15, noTakeover9, takeover, nil]
        var wires: [[UInt8]] = []
        for settings in cases {
            let server = Harness(.server, deflate: settings)
            let client = Harness(.client, deflate: settings)
            for _ in 0..<2 { XCTAssertTrue(server.session.send(message, output: &server.output)) }
            let wire = Array(UnsafeRawBufferPointer(server.output.readable))
            XCTAssertEqual(client.feed(wire), [.text(text), .text(text)])
            wires.append(wire)
        }
        XCTAssertEqual(wires[0], FrameEncoder.frame(.text, payload: Array(text.utf8)) + FrameEncoder.frame(.text, payload: Array(text.utf8)))
        XCTAssertEqual(wires[5], wires[0])
        XCTAssertEqual(wires[1], wires[2], "one compressed frame for every session with the same window")
        XCTAssertLessThan(wires[4].count, wires[1].count, "with takeover the second message refers to the first")
        XCTAssertEqual(message.compressedVariantCount, 2, "windows 15 and 9")

        // Below compressionMinBytes the plain frame goes out; a closed session takes nothing.
        let server = Harness(.server, deflate: noTakeover15)
        server.shared.compressionMinBytes = message.payloadCount + 1
        XCTAssertTrue(server.session.send(message, output: &server.output))
        XCTAssertEqual(server.sent().map(\.rsv1), [false])
        XCTAssertTrue(server.session.close(.normal, now: 1_000, output: &server.output))
        XCTAssertFalse(server.session.send(message, output: &server.output))
    }

    func testCompressedFragmentsAndBadCompressedData() {
        let deflater = MessageDeflater(windowBits: 15)
        let compressed = deflater.compress(Array(String(repeating: "fragmented ", count: 50).utf8), resetAfter: true)
        let half = compressed.count / 2
        for role in roles {
            let h = Harness(role, deflate: DeflateSettings())
            XCTAssertEqual(h.feed(frame(to: role, .text, Array(compressed[..<half]), fin: false, rsv1: true)
                                  + frame(to: role, .ping, [])
                                  + frame(to: role, .continuation, Array(compressed[half...]))),
                           [.text(String(repeating: "fragmented ", count: 50))])
        }
        // A zip bomb stops at the limit; garbage is 1007.
        let bomb = deflater.compress([UInt8](repeating: 0, count: 1 << 20), resetAfter: true)
        assertFails(.server, frame(to: .server, .binary, bomb, rsv1: true), with: .messageTooBig, deflate: DeflateSettings(), maxMessageBytes: 64 * 1024)
        assertFails(.client, frame(to: .client, .binary, [0xFF, 0xFF, 0xFF, 0xFF], rsv1: true), with: .invalidPayload, deflate: DeflateSettings())
        let notText = deflater.compress([0xC3, 0x28], resetAfter: true)
        assertFails(.server, frame(to: .server, .text, notText, rsv1: true), with: .invalidPayload, deflate: DeflateSettings())
    }
}
