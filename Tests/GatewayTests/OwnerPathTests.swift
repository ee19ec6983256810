import Foundation
import Glibc
import XCTest
import Reactor
import WebSocketCodec
@testable import Gateway

/// Two workers with their Lua states and scripts, driven on the test thread: sockets are socketpairs
/// whose far end the test reads and writes, and every loop is run by hand (`pump`).
private final class TwoLoops {
    let shared: SharedState
    let workers: [Worker]
    private let folder: URL

    init(config json: String = "{}", scripts: [String: String]) throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("wsgate-owner-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for (file, source) in scripts { try source.write(to: folder.appendingPathComponent(file), atomically: true, encoding: .utf8) }
        var config = try GatewayConfig.parse(Data(json.utf8), source: "test.json")
        config.endpoints = folder.path
        let (set, problems) = try ScriptSet.load(folder: folder.path, previous: nil)
        XCTAssertTrue(problems.isEmpty)
        let shared = SharedState(endpointsFolder: folder.path)
        workers = try (0..<2).map { index in
            Worker(index: index, shared: shared, config: config, scripts: set,
                   listenFd: try Socket.listen(host: "127.0.0.1", port: 0), tls: nil)
        }
        shared.workers = workers
        self.shared = shared
    }

    deinit { try? FileManager.default.removeItem(at: folder) }

    /// Runs every loop without waiting until none has anything left to do.
    func pump() {
        for _ in 0..<5 { for worker in workers { worker.loop.runOnce(maxWaitMs: 0) } }
    }

    /// A WebSocket on worker `index` for `path`: the client's end of the socketpair and the socket id.
    func open(on index: Int, path: String, receiveBuffer: Int32? = nil) throws -> (client: Int32, id: String) {
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &fds), 0)
        if var size = receiveBuffer {
            setsockopt(fds[0], SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        let worker = workers[index]
        let before = Set(worker.connections.keys)
        Connection.accept(fd: fds[1], worker: worker)
        write(fds[0], Array("GET \(path) HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".utf8))
        pump()
        let response = String(decoding: read(fds[0]), as: UTF8.self)
        XCTAssertTrue(response.hasPrefix("HTTP/1.1 101"), response)
        let id = try XCTUnwrap(Set(worker.connections.keys).subtracting(before).first)
        return (fds[0], id)
    }

    func write(_ fd: Int32, _ bytes: [UInt8]) {
        XCTAssertEqual(bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }, bytes.count)
    }

    func read(_ fd: Int32) -> [UInt8] {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { return out }
            out += chunk[0..<n]
        }
    }

    /// The text of every frame the server sent since the last read.
    func texts(_ fd: Int32) -> [String] {
        let bytes = read(fd)
        var texts: [String] = []
        var offset = 0
        bytes.withUnsafeBytes { raw in
            while case .header(let h) = FrameDecoder.parseHeader(UnsafeRawBufferPointer(rebasing: raw[offset...]), role: .client, maxPayload: 1 << 24),
                  offset + h.frameLength <= raw.count {
                texts.append(h.opcode == .close ? "close \(Int(raw[offset + 2]) << 8 | Int(raw[offset + 3]))"
                                                : String(decoding: raw[(offset + h.headerLength)..<(offset + h.frameLength)], as: UTF8.self))
                offset += h.frameLength
            }
        }
        return texts
    }
}

private func masked(_ opcode: Opcode, _ text: String) -> [UInt8] {
    let payload = Array(text.utf8)
    var out = [UInt8](repeating: 0, count: FrameEncoder.headerLength(payloadLength: payload.count, masked: true) + payload.count)
    out.withUnsafeMutableBytes { raw in
        payload.withUnsafeBytes { _ = FrameEncoder.writeFrame(to: raw.baseAddress!, opcode: opcode, payload: $0, maskKey: 0x0102_0304) }
    }
    return out
}

final class OwnerPathTests: XCTestCase {
    private let echo = ["echo.lua": "if websocketInfo.type == 'data' then websocketInfo.send('echo: ' .. websocketInfo.message) end"]

    func testAMessageGoesThroughTheScriptAndBack() throws {
        let loops = try TwoLoops(config: #"{"rateLimit": {"messagesPerSecond": 0}}"#, scripts: echo)
        let socket = try loops.open(on: 0, path: "/echo")
        loops.write(socket.client, masked(.text, "one") + masked(.ping, "") + masked(.text, "two"))
        loops.pump()
        XCTAssertEqual(loops.texts(socket.client), ["echo: one", "", "echo: two"])
    }

    func testSendsReachTheSocketFromItsOwnLoopAndFromAnother() throws {
        let loops = try TwoLoops(scripts: echo)
        let socket = try loops.open(on: 0, path: "/echo")
        for (index, text) in [(0, "from its own loop"), (1, "from the other loop")] {
            let failure = Array(text.utf8).withUnsafeBytes { loops.workers[index].owners.send(to: .socket(socket.id), .text, $0) }
            XCTAssertNil(failure)
            loops.pump()
            XCTAssertEqual(loops.texts(socket.client), [text])
        }
    }

    func testUnknownAndClosingSocketsAre404FromEveryLoop() throws {
        let loops = try TwoLoops(scripts: echo)
        let socket = try loops.open(on: 0, path: "/echo")
        for worker in loops.workers {
            XCTAssertEqual(worker.owners.send(to: .socket("no-such-socket"), .text, UnsafeRawBufferPointer(start: nil, count: 0))?.status, 404)
            XCTAssertEqual(worker.owners.close(.socket("no-such-socket"))?.status, 404)
            if case .success = worker.owners.info("no-such-socket") { XCTFail("info of an unknown socket") }
        }
        XCTAssertNil(loops.workers[1].owners.close(.socket(socket.id)))
        loops.pump()
        XCTAssertEqual(loops.texts(socket.client), ["close 1000"])
        for worker in loops.workers {
            XCTAssertEqual(worker.owners.send(to: .socket(socket.id), .text, UnsafeRawBufferPointer(start: nil, count: 0))?.status, 404,
                           "a closing socket is gone for loop \(worker.index)")
            XCTAssertEqual(worker.owners.close(.socket(socket.id))?.status, 404)
        }
    }

    func testASocketThatDoesNotReadIs429FromEveryLoop() throws {
        let loops = try TwoLoops(config: #"{"limits": {"maxMessageBytes": 8192, "sendQueueBytes": 65536}}"#, scripts: echo)
        let message = [UInt8](repeating: UInt8(ascii: "x"), count: 4096)
        for index in [0, 1] {
            let socket = try loops.open(on: 0, path: "/echo", receiveBuffer: 4096)
            var accepted = 0
            var status: Int?
            // The client reads nothing: the queue grows past half of sendQueueBytes and sends are refused.
            while status == nil && accepted < 1000 {
                status = message.withUnsafeBytes { loops.workers[index].owners.send(to: .socket(socket.id), .text, $0) }?.status
                if status == nil { accepted += 1 }
                if index == 0 { loops.pump() }
            }
            XCTAssertEqual(status, 429, "from loop \(index) after \(accepted) messages")
            XCTAssertLessThan(accepted, 30, "from loop \(index)")
        }
    }

    func testOutboundConnectionsThatAreNotOpenAre503() throws {
        let loops = try TwoLoops(scripts: echo)
        _ = loops.shared.outbound.claim("upstream", worker: 1, url: "ws://127.0.0.1:1/", contentType: .text, sendQueue: SendQueueGauge())
        for worker in loops.workers {
            let bytes = Array("hello".utf8)
            XCTAssertEqual(bytes.withUnsafeBytes { worker.owners.send(to: .outbound("upstream"), .text, $0) }?.status, 503)
            XCTAssertEqual(bytes.withUnsafeBytes { worker.owners.send(to: .outbound("nobody"), .text, $0) }?.status, 404)
            XCTAssertEqual(worker.owners.withLink("nobody") { _ in }?.status, 404)
        }
    }
}
