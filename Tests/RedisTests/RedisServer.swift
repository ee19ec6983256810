import Foundation
import Glibc
import XCTest

/// A throw-away `redis-server` on a free loopback port, without persistence. Tests skip when the
/// binary is missing (scripts/test installs it).
final class RedisServer {
    let port: Int
    private let process: Process

    static func start() throws -> RedisServer {
        let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let binary else { throw XCTSkip("redis-server is not installed (scripts/test installs it)") }
        let port = try freePort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", NSTemporaryDirectory()]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let server = RedisServer(port: port, process: process)
        let deadline = Date().addingTimeInterval(10)
        while !server.accepts() {
            guard Date() < deadline, process.isRunning else {
                server.stop()
                throw XCTSkip("redis-server did not start on port \(port)")
            }
            usleep(20_000)
        }
        return server
    }

    private init(port: Int, process: Process) {
        self.port = port
        self.process = process
    }

    /// A port nothing listens on now (bound, then released).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw XCTSkip("cannot find a free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private func accepts() -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    func pause() { Glibc.kill(process.processIdentifier, SIGSTOP) }
    func resume() { Glibc.kill(process.processIdentifier, SIGCONT) }

    func kill() {
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func stop() {
        guard process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGCONT)
        process.terminate()
        process.waitUntilExit()
    }
}
