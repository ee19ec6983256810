import Foundation
import Glibc
import Reactor
import XCTest
@testable import Redis

/// `RedisConnection` against a real `redis-server` started on a free port for each test: commands
/// and replies in order, binary-safe values, pub/sub, and every way a connection ends (refused,
/// closed by us, the server killed, the server stopped).
final class RedisConnectionTests: XCTestCase {
    private var server: RedisServer!
    private let loop = EventLoop(index: 0)

    override func setUpWithError() throws {
        server = try RedisServer.start()
    }

    override func tearDown() {
        server?.stop()
    }

    private func runLoop(timeout: TimeInterval = 10, until done: () -> Bool) {
        let deadline = Date().addingTimeInterval(timeout)
        while !done() && Date() < deadline {
            loop.schedule(after: 20_000_000) {}
            loop.runOnce()
        }
    }

    private func connected(port: Int? = nil) -> RedisConnection {
        let connection = RedisConnection(loop: loop)
        var result: String?? = .none
        connection.connect(ip: "127.0.0.1", port: port ?? server.port, timeoutNanos: 5_000_000_000) { result = .some($0) }
        runLoop { result != nil }
        XCTAssertEqual(result, .some(nil), "connect")
        XCTAssertEqual(connection.state, .open)
        return connection
    }

    /// Sends one command and runs the loop until its reply.
    private func ask(_ connection: RedisConnection, _ args: [[UInt8]]) -> RedisReply?? {
        var reply: RedisReply?? = .none
        XCTAssertTrue(connection.command(args) { reply = .some($0) })
        runLoop { reply != nil }
        return reply
    }

    private func ask(_ connection: RedisConnection, _ args: String...) -> RedisReply?? {
        ask(connection, args.map { Array($0.utf8) })
    }

    func testCommandsRepliesAndBinaryValues() {
        let redis = connected()
        let value: [UInt8] = [0, 13, 10, 255, 36, 42]
        XCTAssertEqual(ask(redis, [Array("SET".utf8), Array("bin".utf8), value]), .some(.status("OK")))
        XCTAssertEqual(ask(redis, "GET", "bin"), .some(.string(value)))
        XCTAssertEqual(ask(redis, "GET", "missing"), .some(.null))
        XCTAssertEqual(ask(redis, "INCRBY", "n", "41"), .some(.integer(41)))
        XCTAssertEqual(ask(redis, "RPUSH", "l", "a", ""), .some(.integer(2)))
        XCTAssertEqual(ask(redis, "LRANGE", "l", "0", "-1"), .some(.array([.string(Array("a".utf8)), .string([])])))
        guard case .some(.error(let why))? = ask(redis, "INCR", "bin") else { return XCTFail("INCR of a non-integer is an error reply") }
        XCTAssertTrue(why.contains("not an integer"), why)
        redis.close()
    }

    func testPipelinedRepliesComeBackInOrder() {
        let redis = connected()
        var got: [Int] = []
        for _ in 1...2000 {
            XCTAssertTrue(redis.command("INCR", "counter") { got.append($0?.integer ?? -1) })
        }
        runLoop { got.count == 2000 }
        XCTAssertEqual(got, Array(1...2000))
        redis.close()
    }

    func testPublishedMessagesReachTheSubscriber() {
        let subscriber = connected(), publisher = connected()
        var messages: [(String, [UInt8])] = []
        subscriber.onMessage = { messages.append((String(decoding: $0, as: UTF8.self), $1)) }
        var confirmed: [Bool] = []
        XCTAssertTrue(subscriber.subscribe("news") { confirmed.append($0) })
        XCTAssertTrue(subscriber.subscribe("other") { confirmed.append($0) })
        runLoop { confirmed.count == 2 }
        XCTAssertEqual(confirmed, [true, true])
        XCTAssertEqual(ask(publisher, [Array("PUBLISH".utf8), Array("news".utf8), [1, 0, 2]]), .some(.integer(1)))
        XCTAssertEqual(ask(publisher, "PUBLISH", "other", "hi"), .some(.integer(1)))
        runLoop { messages.count == 2 }
        XCTAssertEqual(messages.map(\.0), ["news", "other"])
        XCTAssertEqual(messages.map(\.1), [[1, 0, 2], Array("hi".utf8)])

        XCTAssertTrue(subscriber.unsubscribe("news"))
        var unsubscribed = false
        // The unsubscription is in force once a publish finds one subscriber fewer (publishes
        // racing it may still arrive); from then on nothing more comes.
        runLoop {
            _ = publisher.command("PUBLISH", "news", "late") { unsubscribed = $0?.integer == 0 }
            return unsubscribed
        }
        XCTAssertTrue(unsubscribed)
        let arrived = messages.count
        XCTAssertEqual(ask(publisher, "PUBLISH", "news", "after"), .some(.integer(0)))
        XCTAssertEqual(ask(publisher, "PUBLISH", "other", "still"), .some(.integer(1)))
        runLoop { messages.count > arrived }
        XCTAssertEqual(messages.last.map { String(decoding: $0.1, as: UTF8.self) }, "still")
        XCTAssertEqual(messages.count, arrived + 1)
        subscriber.close()
        publisher.close()
    }

    func testARefusedConnectionSaysWhy() throws {
        let closed = try RedisServer.freePort()
        let connection = RedisConnection(loop: loop)
        var result: String?? = .none
        connection.connect(ip: "127.0.0.1", port: closed, timeoutNanos: 5_000_000_000) { result = .some($0) }
        runLoop { result != nil }
        guard case .some(.some(let why)) = result else { return XCTFail("no failure reported") }
        XCTAssertTrue(why.lowercased().contains("refused"), why)
        XCTAssertEqual(connection.state, .closed)
        XCTAssertFalse(connection.command("PING") { _ in })
    }

    func testClosingAnswersPendingRepliesWithNil() {
        let redis = connected()
        var closes: [String] = []
        redis.onClose = { closes.append($0) }
        server.pause()
        var replies: [RedisReply?] = []
        for _ in 0..<3 { XCTAssertTrue(redis.command("PING") { replies.append($0) }) }
        runLoop(timeout: 0.3) { false }
        XCTAssertTrue(replies.isEmpty, "a stopped server answers nothing")
        redis.close()
        XCTAssertEqual(replies.count, 3)
        XCTAssertTrue(replies.allSatisfy { $0 == nil })
        XCTAssertEqual(redis.state, .closed)
        runLoop(timeout: 0.1) { false }
        XCTAssertEqual(closes, [], "closing it ourselves is not reported")
        server.resume()
    }

    func testAServerThatDiesEndsTheConnection() {
        let redis = connected()
        var closes: [String] = []
        redis.onClose = { closes.append($0) }
        var reply: RedisReply?? = .none
        server.pause()
        XCTAssertTrue(redis.command("PING") { reply = .some($0) })
        server.kill()
        runLoop { !closes.isEmpty && reply != nil }
        XCTAssertEqual(closes.count, 1)
        XCTAssertEqual(reply, .some(nil))
        XCTAssertEqual(redis.state, .closed)
    }
}
