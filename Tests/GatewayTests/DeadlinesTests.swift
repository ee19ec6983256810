import Glibc
import XCTest
@testable import Gateway

/// `Deadlines`: a socket that never completes its upgrade request is dropped after
/// limits.handshakeTimeoutMs, one that upgrades leaves the list at once, and nothing waits once
/// every socket is gone.
final class DeadlinesTests: XCTestCase {
    private let quickTimeout = #"{"limits": {"handshakeTimeoutMs": 150}}"#

    /// Runs the loop for `millis`, waking for timers as they come.
    private func run(_ loops: Loops, for millis: Int) {
        let end = DispatchTime.now().uptimeNanoseconds + UInt64(millis) * 1_000_000
        while DispatchTime.now().uptimeNanoseconds < end { loops.workers[0].loop.runOnce(maxWaitMs: 20) }
    }

    private func isClosedByPeer(_ fd: Int32) -> Bool {
        var byte: UInt8 = 0
        return Glibc.read(fd, &byte, 1) == 0
    }

    func testSilentSocketIsDroppedAfterTheHandshakeTimeout() throws {
        let loops = try Loops(config: quickTimeout, scripts: ["echo.lua": ""], workers: 1)
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &fds), 0)
        defer { close(fds[0]) }
        Connection.accept(fd: fds[1], peer: "", worker: loops.workers[0])
        loops.write(fds[0], Array("GET /echo HTTP/1.1\r\nHost: test\r\n".utf8)) // never finished
        XCTAssertEqual(loops.workers[0].deadlines.count, 1)
        run(loops, for: 50)
        XCTAssertFalse(isClosedByPeer(fds[0]), "dropped before its timeout")
        run(loops, for: 100 + 2 * Int(Deadlines.granularityNanos / 1_000_000))
        XCTAssertTrue(isClosedByPeer(fds[0]))
        XCTAssertEqual(loops.workers[0].deadlines.count, 0)
    }

    func testUpgradedSocketLeavesAtOnceAndOutlivesTheTimeout() throws {
        let loops = try Loops(config: quickTimeout, scripts: ["echo.lua": ""], workers: 1)
        let (client, _) = try loops.open(on: 0, path: "/echo")
        defer { close(client) }
        XCTAssertEqual(loops.workers[0].deadlines.count, 0)
        run(loops, for: 400)
        XCTAssertFalse(isClosedByPeer(client))
        XCTAssertEqual(loops.workers[0].connections.count, 1)
    }
}
