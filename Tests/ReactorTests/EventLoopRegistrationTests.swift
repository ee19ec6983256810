import Foundation
import Glibc
import XCTest
@testable import Reactor

/// Registrations on a real epoll set: a socket deregistered for its close leaves no trace, even
/// when the kernel gives its descriptor number to the next socket at once.
final class EventLoopRegistrationTests: XCTestCase {
    private final class Counter: IOHandler {
        var events = 0
        func ioReady(_ events: UInt32) { self.events += 1 }
    }

    /// The descriptors the epoll set watches, as the kernel lists them.
    private func watched(by loop: EventLoop) throws -> Set<Int32> {
        let info = try String(contentsOfFile: "/proc/self/fdinfo/\(loop.epfd)", encoding: .utf8)
        return Set(info.split(separator: "\n").compactMap { line in
            line.hasPrefix("tfd:") ? line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int32($0) } : nil
        })
    }

    func testDeregisteredForCloseLeavesNothingBehind() throws {
        let loop = EventLoop(index: 0)
        let first = SocketPair(), second = SocketPair()
        defer {
            Socket.close(first.client)
            second.close()
        }
        let old = Counter()
        let oldRegistration = loop.register(fd: first.server, events: IOEvents.readable, handler: old)
        XCTAssertNotEqual(oldRegistration, .none)
        loop.deregisterForClose(fd: first.server, registration: oldRegistration)
        XCTAssertTrue(try watched(by: loop).contains(first.server), "no epoll_ctl: still watched until the close")
        let number = first.server
        Socket.close(first.server)
        XCTAssertFalse(try watched(by: loop).contains(number), "the close took it out of the epoll set")

        // Another socket under the same number gets the new handler's events, the old one none.
        XCTAssertEqual(dup2(second.server, number), number)
        defer { Socket.close(number) }
        let new = Counter()
        XCTAssertNotEqual(loop.register(fd: number, events: IOEvents.readable, handler: new), .none)
        XCTAssertEqual(write(second.client, "x", 1), 1)
        XCTAssertEqual(write(first.client, "y", 1), 1)
        loop.schedule(after: 200_000_000) {}
        loop.runOnce()
        XCTAssertEqual(new.events, 1)
        XCTAssertEqual(old.events, 0, "the closed socket's handler hears nothing")
    }
}
