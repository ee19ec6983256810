import Foundation
import XCTest
@testable import Gateway

// MARK: - Routes

final class RouteTests: XCTestCase {
    func testStaticRouteFromFileName() {
        let route = Route(file: "echo.lua")
        XCTAssertEqual(route.file, "echo.lua")
        XCTAssertEqual(route.pattern, "/echo")
        XCTAssertEqual(route.segments, [.literal("echo")])
    }

    func testHTTPRouteFromFileName() {
        let route = Route(file: "notify/{user}.http.lua")
        XCTAssertTrue(route.isHTTP)
        XCTAssertEqual(route.pattern, "/notify/{user}")
        XCTAssertEqual(route.segments, [.literal("notify"), .parameter("user")])
        XCTAssertFalse(Route(file: "echo.lua").isHTTP)
        XCTAssertFalse(Route(file: "http.lua").isHTTP)
    }

    func testParameterRouteFromFileName() {
        let route = Route(file: "chat/{room}.lua")
        XCTAssertEqual(route.file, "chat/{room}.lua")
        XCTAssertEqual(route.pattern, "/chat/{room}")
        XCTAssertEqual(route.segments, [.literal("chat"), .parameter("room")])
    }

    func testNestedAndMixedSegments() {
        let route = Route(file: "api/{version}/users/{id}.lua")
        XCTAssertEqual(route.pattern, "/api/{version}/users/{id}")
        XCTAssertEqual(route.segments, [.literal("api"), .parameter("version"), .literal("users"), .parameter("id")])
        // "{}" names no parameter and half-braced names are literal text.
        XCTAssertEqual(Route(file: "x/{}.lua").segments, [.literal("x"), .literal("{}")])
        XCTAssertEqual(Route(file: "{a.lua").segments, [.literal("{a")])
        XCTAssertEqual(Route(file: "{{a}}.lua").segments, [.parameter("{a}")])
    }
}

// MARK: - Router

final class RouterTests: XCTestCase {
    private func router(_ files: [String]) -> Router {
        Router(routes: files.map { Route(file: $0) })
    }

    private func matchedFile(_ r: Router, _ path: String) -> String? {
        r.match(path: path).map { r.routes[$0.routeIndex].file }
    }

    private func parameters(_ r: Router, _ path: String) -> [String]? {
        r.match(path: path).map { $0.parameters.map { "\($0.name)=\($0.value)" } }
    }

    func testStaticBeatsParameter() {
        for files in [["a/{x}.lua", "a/b.lua"], ["a/b.lua", "a/{x}.lua"]] {
            let r = router(files)
            XCTAssertEqual(matchedFile(r, "/a/b"), "a/b.lua", "\(files)")
            XCTAssertEqual(parameters(r, "/a/b"), [])
            XCTAssertEqual(matchedFile(r, "/a/c"), "a/{x}.lua", "\(files)")
            XCTAssertEqual(parameters(r, "/a/c"), ["x=c"])
        }
    }

    func testLiteralWinsAtFirstDifferingPosition() {
        let r = router(["{a}/b.lua", "x/{b}.lua", "{a}/{b}.lua"])
        XCTAssertEqual(matchedFile(r, "/x/b"), "x/{b}.lua")
        XCTAssertEqual(parameters(r, "/x/b"), ["b=b"])
        XCTAssertEqual(matchedFile(r, "/y/b"), "{a}/b.lua")
        XCTAssertEqual(parameters(r, "/y/b"), ["a=y"])
        XCTAssertEqual(matchedFile(r, "/y/z"), "{a}/{b}.lua")
        XCTAssertEqual(parameters(r, "/y/z"), ["a=y", "b=z"])
    }

    func testRouteIndexRefersToRoutes() {
        let r = router(["echo.lua", "chat/{room}.lua"])
        XCTAssertEqual(r.match(path: "/echo")?.routeIndex, 0)
        XCTAssertEqual(r.match(path: "/chat/lobby")?.routeIndex, 1)
    }

    func testParameterIsPercentDecoded() {
        let r = router(["chat/{room}.lua"])
        XCTAssertEqual(parameters(r, "/chat/hello%20world"), ["room=hello world"])
        XCTAssertEqual(parameters(r, "/chat/%E2%82%AC"), ["room=€"])
        XCTAssertEqual(parameters(r, "/chat/a+b"), ["room=a+b"], "plus is not a space in a path")
        XCTAssertEqual(parameters(r, "/chat/100%25"), ["room=100%"])
        XCTAssertEqual(parameters(r, "/chat/bad%zz"), ["room=bad%zz"])
    }

    /// A path splits at every "/" byte, before decoding: a combining mark after a slash (one
    /// Character with it) does not hide the slash, and an encoded slash stays in its segment.
    func testSplitsAtSlashBytesBeforeDecoding() {
        let r = router(["a/{x}/b.lua", "chat/{room}.lua"])
        XCTAssertEqual(parameters(r, "/a/\u{301}/b"), ["x=\u{301}"])
        XCTAssertEqual(parameters(r, "/chat/caf\u{E9}"), ["room=caf\u{E9}"])
        XCTAssertEqual(parameters(r, "/chat/a%2Fb"), ["room=a/b"])
    }

    func testLiteralComparedAfterPercentDecoding() {
        let r = router(["echo.lua"])
        XCTAssertEqual(matchedFile(r, "/ech%6F"), "echo.lua")
        XCTAssertEqual(matchedFile(r, "/%65cho"), "echo.lua")
    }

    func testSegmentCountMustMatch() {
        let r = router(["chat/{room}.lua", "echo.lua"])
        XCTAssertNil(r.match(path: "/chat"))
        XCTAssertNil(r.match(path: "/chat/a/b"))
        XCTAssertNil(r.match(path: "/echo/extra"))
        XCTAssertNotNil(r.match(path: "/chat/a"))
    }

    func testNoMatch() {
        let r = router(["echo.lua", "chat/{room}.lua"])
        XCTAssertNil(r.match(path: "/nope"))
        XCTAssertNil(r.match(path: "/Echo"), "literals are case-sensitive")
        XCTAssertNil(r.match(path: "/"))
        XCTAssertNil(r.match(path: ""))
        XCTAssertNil(router([]).match(path: "/echo"))
    }

    func testTrailingSlash() {
        // Empty segments are ignored, so a trailing slash (or a doubled one) reaches the same route.
        let r = router(["echo.lua", "chat/{room}.lua"])
        XCTAssertEqual(matchedFile(r, "/echo/"), "echo.lua")
        XCTAssertEqual(matchedFile(r, "/chat/lobby/"), "chat/{room}.lua")
        XCTAssertEqual(parameters(r, "/chat/lobby/"), ["room=lobby"])
        XCTAssertEqual(matchedFile(r, "//chat//lobby"), "chat/{room}.lua")
        XCTAssertNil(r.match(path: "/chat/"), "a trailing slash does not make an empty parameter")
    }
}

// MARK: - Route discovery

final class RouterDiscoverTests: XCTestCase {
    private var root: URL!

    override func setUpWithError() throws {
        try super.setUpWithError()
        root = FileManager.default.temporaryDirectory.appendingPathComponent("wsgate-router-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if let root {
            _ = try? FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: root.path)
            try? FileManager.default.removeItem(at: root)
        }
        root = nil
        try super.tearDownWithError()
    }

    private func write(_ relative: String) throws {
        let url = root.appendingPathComponent(relative)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data("-- \(relative)\n".utf8).write(to: url)
    }

    func testDiscoversLuaFilesSorted() throws {
        for file in [
            "echo.lua",
            "_websocket_info.lua",
            "_helpers.lua",
            "README.md",
            "notes.lua.bak",
            "script.luac",
            "chat/{room}.lua",
            "chat/_private.lua",
            "chat/readme.txt",
            "a/b/c.lua",
            "a/b/_skip.lua",
        ] {
            try write(file)
        }
        try FileManager.default.createDirectory(at: root.appendingPathComponent("empty"), withIntermediateDirectories: true)

        let routes = try Router.discover(in: root.path)
        XCTAssertEqual(routes.map { $0.file }, ["a/b/c.lua", "chat/{room}.lua", "echo.lua"])
        XCTAssertEqual(routes.map { $0.pattern }, ["/a/b/c", "/chat/{room}", "/echo"])
        XCTAssertEqual(routes[1].segments, [.literal("chat"), .parameter("room")])
        XCTAssertEqual(Router.eventHandlerFile, "_websocket_info.lua")
    }

    func testEmptyFolderHasNoRoutes() throws {
        XCTAssertEqual(try Router.discover(in: root.path), [])
    }

    func testMissingFolderIsConfigError() {
        let missing = root.appendingPathComponent("does-not-exist").path
        XCTAssertThrowsError(try Router.discover(in: missing)) { error in
            guard let e = error as? ConfigError else { return XCTFail("expected ConfigError, got \(error)") }
            XCTAssertTrue(e.message.contains(missing), e.message)
        }
    }

    func testRegularFileIsConfigError() throws {
        try write("plain.lua")
        let file = root.appendingPathComponent("plain.lua").path
        XCTAssertThrowsError(try Router.discover(in: file)) { error in
            XCTAssertTrue(error is ConfigError, "\(error)")
        }
    }

    func testUnreadableFolderIsConfigError() throws {
        if getuid() == 0 { throw XCTSkip("permission bits do not restrict root") }
        let locked = root.appendingPathComponent("locked")
        try FileManager.default.createDirectory(at: locked, withIntermediateDirectories: true)
        try write("locked/echo.lua")
        try FileManager.default.setAttributes([.posixPermissions: 0o000], ofItemAtPath: locked.path)
        defer { _ = try? FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: locked.path) }
        XCTAssertThrowsError(try Router.discover(in: locked.path)) { error in
            XCTAssertTrue(error is ConfigError, "\(error)")
        }
    }
}

// MARK: - Token bucket

final class TokenBucketTests: XCTestCase {
    private let start: UInt64 = 5_000_000_000
    private let second: UInt64 = 1_000_000_000

    func testBurstThenRefuse() {
        var bucket = TokenBucket(now: start)
        for i in 0..<5 {
            XCTAssertTrue(bucket.take(now: start, rate: 5, burst: 5), "take \(i)")
        }
        XCTAssertFalse(bucket.take(now: start, rate: 5, burst: 5))
        XCTAssertFalse(bucket.take(now: start, rate: 5, burst: 5))
    }

    func testRefillsAtTheRate() {
        var bucket = TokenBucket(now: start)
        for _ in 0..<5 { XCTAssertTrue(bucket.take(now: start, rate: 5, burst: 5)) }
        // Five a second: one token every 200 ms.
        XCTAssertFalse(bucket.take(now: start + 199_999_999, rate: 5, burst: 5))
        XCTAssertTrue(bucket.take(now: start + 200_000_000, rate: 5, burst: 5))
        XCTAssertFalse(bucket.take(now: start + 200_000_000, rate: 5, burst: 5))
        XCTAssertFalse(bucket.take(now: start + 300_000_000, rate: 5, burst: 5))
        XCTAssertTrue(bucket.take(now: start + 400_000_000, rate: 5, burst: 5))
        // Two tokens' worth of time gives exactly two.
        XCTAssertTrue(bucket.take(now: start + 800_000_000, rate: 5, burst: 5))
        XCTAssertTrue(bucket.take(now: start + 800_000_000, rate: 5, burst: 5))
        XCTAssertFalse(bucket.take(now: start + 800_000_000, rate: 5, burst: 5))
    }

    func testSustainedRateOverTime() {
        var bucket = TokenBucket(now: start)
        var accepted = 0
        // 100 attempts a second for ten seconds (t = 0 ... 9.99 s) at 10 a second: the initial burst of
        // five plus one token every 100 ms, exactly.
        for tick in 0..<1000 {
            if bucket.take(now: start + UInt64(tick) * 10_000_000, rate: 10, burst: 5) { accepted += 1 }
        }
        XCTAssertEqual(accepted, 5 + 99)
    }

    func testNeverExceedsBurstAfterLongPause() {
        var bucket = TokenBucket(now: start)
        for _ in 0..<5 { XCTAssertTrue(bucket.take(now: start, rate: 5, burst: 5)) }
        let later = start + 3600 * second
        for i in 0..<5 {
            XCTAssertTrue(bucket.take(now: later, rate: 5, burst: 5), "take \(i)")
        }
        XCTAssertFalse(bucket.take(now: later, rate: 5, burst: 5))
        // An untouched bucket is also capped.
        var fresh = TokenBucket(now: start)
        let takes = (0..<10).filter { _ in fresh.take(now: start + 1000 * second, rate: 100, burst: 3) }.count
        XCTAssertEqual(takes, 3)
    }

    func testNanosUntilToken() {
        var bucket = TokenBucket(now: start)
        XCTAssertEqual(bucket.nanosUntilToken(now: start, rate: 5, burst: 5), 0)
        for _ in 0..<5 { XCTAssertTrue(bucket.take(now: start, rate: 5, burst: 5)) }
        XCTAssertEqual(bucket.nanosUntilToken(now: start, rate: 5, burst: 5), 200_000_000)
        XCTAssertEqual(bucket.nanosUntilToken(now: start + 50_000_000, rate: 5, burst: 5), 150_000_000)
        XCTAssertEqual(bucket.nanosUntilToken(now: start + 200_000_000, rate: 5, burst: 5), 0)
        // Asking does not consume.
        XCTAssertTrue(bucket.take(now: start + 200_000_000, rate: 5, burst: 5))
        XCTAssertEqual(bucket.nanosUntilToken(now: start + 200_000_000, rate: 5, burst: 5), 200_000_000)
    }

    func testNanosUntilTokenRoundsUpAndIsSufficient() {
        var bucket = TokenBucket(now: start)
        XCTAssertTrue(bucket.take(now: start, rate: 3, burst: 1))
        let wait = bucket.nanosUntilToken(now: start, rate: 3, burst: 1)
        XCTAssertEqual(wait, 333_333_333)
        XCTAssertFalse(bucket.take(now: start + wait - 1, rate: 3, burst: 1))
        XCTAssertTrue(bucket.take(now: start + wait, rate: 3, burst: 1))
    }

    func testClockNotAdvancingOrGoingBackDoesNotRefill() {
        var bucket = TokenBucket(now: start)
        XCTAssertTrue(bucket.take(now: start, rate: 1000, burst: 1))
        XCTAssertFalse(bucket.take(now: start - 1_000_000, rate: 1000, burst: 1))
        XCTAssertFalse(bucket.take(now: start - 1_000_000, rate: 1000, burst: 1))
    }

    func testZeroBurstAllowsOneAtATime() {
        var bucket = TokenBucket(now: start)
        XCTAssertTrue(bucket.take(now: start, rate: 2, burst: 0))
        XCTAssertFalse(bucket.take(now: start, rate: 2, burst: 0))
        XCTAssertEqual(bucket.nanosUntilToken(now: start, rate: 2, burst: 0), 500_000_000)
        XCTAssertTrue(bucket.take(now: start + 10 * second, rate: 2, burst: 0))
        XCTAssertFalse(bucket.take(now: start + 10 * second, rate: 2, burst: 0))
    }
}

// MARK: - Configuration

final class GatewayConfigTests: XCTestCase {
    private func parse(_ json: String) throws -> GatewayConfig {
        try GatewayConfig.parse(Data(json.utf8), source: "test.json")
    }

    /// The error message, or nil (with a failure) when the JSON was accepted.
    private func errorMessage(_ json: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            let config = try GatewayConfig.parse(Data(json.utf8), source: "test.json")
            XCTFail("accepted \(json) as \(config)", file: file, line: line)
            return ""
        } catch {
            // parse throws only ConfigError (typed throws), so `error` is a ConfigError here.
            return error.message
        }
    }

    private func assertError(_ json: String, contains parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        let message = errorMessage(json, file: file, line: line)
        for part in parts {
            XCTAssertTrue(message.contains(part), "\(message.debugDescription) does not contain \(part.debugDescription)", file: file, line: line)
        }
    }

    func testDefaults() throws {
        let config = try parse("{}")
        XCTAssertEqual(config, GatewayConfig())
        XCTAssertEqual(config.host, "0.0.0.0")
        XCTAssertEqual(config.port, 8080)
        XCTAssertEqual(config.endpoints, "Endpoints")
        XCTAssertEqual(config.workers, 0)
        XCTAssertEqual(config.logLevel, .info)
        XCTAssertEqual(config.maxMessageBytes, 1 << 20)
        XCTAssertEqual(config.maxRequestHeaderBytes, 16 * 1024)
        XCTAssertEqual(config.messagesPerSecond, 5)
        XCTAssertEqual(config.burst, 5)
        XCTAssertEqual(config.onExceed, .throttle)
        XCTAssertEqual(config.httpResponseBytes, 8 << 20)
        XCTAssertEqual(config.maxHttpBodyBytes, 1 << 20)
        XCTAssertEqual(config.scriptWaitTimeoutMs, 30_000)
        XCTAssertEqual(config.adminHost, "127.0.0.1")
        XCTAssertEqual(config.adminPort, 0)
        XCTAssertGreaterThanOrEqual(config.effectiveWorkers, 1)
        XCTAssertEqual(try parse(" \n{ }\n "), GatewayConfig())
        XCTAssertEqual(try parse(#"{"limits": {}, "rateLimit": {}}"#), GatewayConfig())
    }

    func testEveryKeySet() throws {
        let config = try parse("""
        {
          "host": "127.0.0.1",
          "port": 9001,
          "endpoints": "/srv/endpoints",
          "workers": 4,
          "logLevel": "debug",
          "limits": { "maxMessageBytes": 65536, "maxRequestHeaderBytes": 4096 },
          "rateLimit": { "messagesPerSecond": 2.5, "burst": 10, "onExceed": "close" }
        }
        """)
        var expected = GatewayConfig()
        expected.host = "127.0.0.1"
        expected.port = 9001
        expected.endpoints = "/srv/endpoints"
        expected.workers = 4
        expected.logLevel = .debug
        expected.maxMessageBytes = 65536
        expected.maxRequestHeaderBytes = 4096
        expected.messagesPerSecond = 2.5
        expected.burst = 10
        expected.onExceed = .close
        XCTAssertEqual(config, expected)
        XCTAssertEqual(config.effectiveWorkers, 4)
    }

    func testEnumeratedValues() throws {
        for (name, level) in [("debug", LogLevel.debug), ("info", .info), ("warn", .warn), ("error", .error)] {
            XCTAssertEqual(try parse(#"{"logLevel": "\#(name)"}"#).logLevel, level)
        }
        for action in RateLimitAction.allCases {
            XCTAssertEqual(try parse(#"{"rateLimit": {"onExceed": "\#(action.rawValue)"}}"#).onExceed, action)
        }
    }

    func testSmallIntegersAreNumbersNotBooleans() throws {
        // 0 and 1 must decode as numbers, not as false/true.
        XCTAssertEqual(try parse(#"{"port": 1}"#).port, 1)
        XCTAssertEqual(try parse(#"{"port": 0}"#).port, 0)
        XCTAssertEqual(try parse(#"{"workers": 1}"#).workers, 1)
        XCTAssertEqual(try parse(#"{"rateLimit": {"burst": 0, "messagesPerSecond": 0}}"#).burst, 0)
        XCTAssertEqual(try parse(#"{"rateLimit": {"messagesPerSecond": 1}}"#).messagesPerSecond, 1)
        XCTAssertEqual(try parse(#"{"rateLimit": {"messagesPerSecond": 7}}"#).messagesPerSecond, 7)
    }

    func testUnknownTopLevelKey() {
        assertError(#"{"prot": 80}"#, contains: ["test.json", "unknown key", "\"prot\""])
        assertError(#"{"port": 80, "Host": "x"}"#, contains: ["\"Host\""])
    }

    func testUnknownNestedKey() {
        assertError(#"{"rateLimit": {"burstt": 3}}"#, contains: ["unknown key", "rateLimit.burstt"])
        assertError(#"{"limits": {"maxMessageByte": 3}}"#, contains: ["unknown key", "limits.maxMessageByte"])
        assertError(#"{"rateLimit": {"burst": 3, "limits": {}}}"#, contains: ["rateLimit.limits"])
    }

    func testWrongTypes() {
        assertError(#"{"port": "x"}"#, contains: ["\"port\"", "integer", "a string"])
        assertError(#"{"port": true}"#, contains: ["\"port\"", "integer", "a boolean"])
        assertError(#"{"port": 80.5}"#, contains: ["\"port\"", "integer"])
        assertError(#"{"port": null}"#, contains: ["\"port\"", "null"])
        assertError(#"{"rateLimit": {"burst": 1.5}}"#, contains: ["rateLimit.burst", "integer"])
        assertError(#"{"limits": 3}"#, contains: ["\"limits\"", "must be an object", "a number"])
        assertError(#"{"rateLimit": []}"#, contains: ["\"rateLimit\"", "must be an object", "an array"])
        assertError(#"{"host": 5}"#, contains: ["\"host\"", "must be a string"])
        assertError(#"{"endpoints": ["a"]}"#, contains: ["\"endpoints\"", "must be a string"])
        assertError(#"{"logLevel": 1}"#, contains: ["\"logLevel\"", "must be a string"])
        assertError(#"{"rateLimit": {"messagesPerSecond": "5"}}"#, contains: ["rateLimit.messagesPerSecond", "must be a number", "a string"])
        assertError(#"{"rateLimit": {"onExceed": 1}}"#, contains: ["rateLimit.onExceed", "must be a string"])
        assertError(#"{"limits": {"maxMessageBytes": "1MB"}}"#, contains: ["limits.maxMessageBytes", "integer"])
    }

    func testOutOfRange() {
        assertError(#"{"port": 65536}"#, contains: ["\"port\"", "between 0 and 65535"])
        assertError(#"{"port": -1}"#, contains: ["\"port\"", "between 0 and 65535"])
        assertError(#"{"port": 70000}"#, contains: ["\"port\""])
        XCTAssertEqual(try parse(#"{"port": 65535}"#).port, 65535)
        assertError(#"{"workers": 1025}"#, contains: ["\"workers\""])
        assertError(#"{"limits": {"maxMessageBytes": 0}}"#, contains: ["limits.maxMessageBytes"])
        // A message is refused once the send queue is half full, so the queue must hold two.
        assertError(#"{"limits": {"maxMessageBytes": 4194304, "sendQueueBytes": 4194304}}"#, contains: ["limits.sendQueueBytes", "twice"])
        assertError(#"{"limits": {"maxRequestHeaderBytes": 255}}"#, contains: ["limits.maxRequestHeaderBytes"])
        assertError(#"{"rateLimit": {"messagesPerSecond": -1}}"#, contains: ["rateLimit.messagesPerSecond"])
        assertError(#"{"rateLimit": {"burst": -1}}"#, contains: ["rateLimit.burst"])
    }

    func testSendQueueDefaultFollowsMaxMessage() throws {
        XCTAssertEqual(try parse("{}").sendQueueBytes, 4 << 20)
        // Left out, the queue is at least twice the largest message.
        XCTAssertEqual(try parse(#"{"limits": {"maxMessageBytes": 16777216}}"#).sendQueueBytes, 32 << 20)
        XCTAssertEqual(try parse(#"{"limits": {"maxMessageBytes": 2097153}}"#).sendQueueBytes, 4194306)
        // The default stays when it already holds two.
        XCTAssertEqual(try parse(#"{"limits": {"maxMessageBytes": 65536}}"#).sendQueueBytes, 4 << 20)
        XCTAssertEqual(try parse(#"{"limits": {"maxMessageBytes": 2097152}}"#).sendQueueBytes, 4 << 20)
    }

    func testExplicitSendQueueIsKeptOrRefused() throws {
        assertError(#"{"limits": {"maxMessageBytes": 16777216, "sendQueueBytes": 4194304}}"#,
                    contains: ["test.json", "\"limits.sendQueueBytes\"", "must be at least twice limits.maxMessageBytes (33554432)"])
        assertError(#"{"limits": {"maxMessageBytes": 16777216, "sendQueueBytes": 33554431}}"#,
                    contains: ["\"limits.sendQueueBytes\"", "must be at least twice limits.maxMessageBytes"])
        XCTAssertEqual(try parse(#"{"limits": {"maxMessageBytes": 16777216, "sendQueueBytes": 33554432}}"#).sendQueueBytes, 32 << 20)
        XCTAssertEqual(try parse(#"{"limits": {"maxMessageBytes": 16777216, "sendQueueBytes": 67108864}}"#).sendQueueBytes, 64 << 20)
        // An explicit value is not raised, even to the default.
        XCTAssertEqual(try parse(#"{"limits": {"maxMessageBytes": 1024, "sendQueueBytes": 2048}}"#).sendQueueBytes, 2048)
    }

    func testBadEnumeratedValues() {
        assertError(#"{"rateLimit": {"onExceed": "ignore"}}"#, contains: ["rateLimit.onExceed", "throttle, drop, close"])
        assertError(#"{"rateLimit": {"onExceed": "Close"}}"#, contains: ["rateLimit.onExceed"])
        assertError(#"{"logLevel": "verbose"}"#, contains: ["\"logLevel\"", "debug, info, warn, error"])
    }

    func testInvalidJSON() {
        // (A trailing comma is not listed: Foundation's JSONDecoder on Linux accepts `{"port": 80,}`.)
        for text in ["", "{", "{port: 80}", "nope", "{\"port\": 80} trailing", "{\"port\": 80 \"host\": \"x\"}"] {
            assertError(text, contains: ["test.json", "not valid JSON"])
        }
        for text in ["[]", "3", "\"text\"", "null"] {
            assertError(text, contains: ["test.json", "top level must be an object"])
        }
    }

    func testLoadFromFile() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("wsgate-config-\(UUID().uuidString).json")
        try Data(#"{"port": 9999}"#.utf8).write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        XCTAssertEqual(try GatewayConfig.load(path: url.path).port, 9999)
        let missing = url.path + ".missing"
        XCTAssertThrowsError(try GatewayConfig.load(path: missing)) { error in
            XCTAssertTrue((error as? ConfigError)?.message.contains(missing) ?? false, "\(error)")
        }
    }
}
