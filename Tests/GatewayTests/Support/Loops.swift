import Foundation
import Glibc
import XCTest
import Reactor
import WebSocketCodec
@testable import Gateway

/// Workers (two by default) with their Lua states and scripts, driven on the test thread: sockets are socketpairs
/// whose far end the test reads and writes, and every loop is run by hand (`pump`).
final class Loops {
    let shared: SharedState
    let workers: [Worker]
    private let folder: URL

    init(config json: String = "{}", scripts: [String: String], workers count: Int = 2) throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("wsgate-owner-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for (file, source) in scripts { try source.write(to: folder.appendingPathComponent(file), atomically: true, encoding: .utf8) }
        var config = try GatewayConfig.parse(Data(json.utf8), source: "test.json")
        config.endpoints = folder.path
        let (set, problems) = try ScriptSet.load(folder: folder.path, previous: nil)
        XCTAssertTrue(problems.isEmpty)
        let shared = SharedState(endpointsFolder: folder.path, keystoreMaxBytes: 1 << 20)
        workers = try (0..<count).map { index in
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
        Connection.accept(fd: fds[1], peer: "", worker: worker)
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

