import Foundation
import XCTest
@testable import Gateway

// MARK: - Outbound connection specs

final class OutboundSpecTests: XCTestCase {
    private func make(name: String = "feed", url: String = "ws://example.com/feed", script: String = "_feed",
                      contentType: String? = nil, headers: [(name: String, value: String)] = [],
                      caFile: String? = nil) -> Result<OutboundSpec, OutboundSpec.Problem> {
        var fields = ["name": name, "url": url, "script": script]
        fields["content_type"] = contentType
        fields["ca_file"] = caFile
        return OutboundSpec.make(fields, headers: headers, insecure: false)
    }

    private func problem(_ result: Result<OutboundSpec, OutboundSpec.Problem>, file: StaticString = #filePath, line: UInt = #line) -> OutboundSpec.Problem? {
        switch result {
        case .success(let spec):
            XCTFail("accepted \(spec)", file: file, line: line)
            return nil
        case .failure(let problem):
            return problem
        }
    }

    func testDefaultsAndScriptExtension() throws {
        let spec = try make().get()
        XCTAssertEqual(spec.script, "_feed.lua")
        XCTAssertEqual(spec.contentType, .json)
        XCTAssertEqual(spec.url.host, "example.com")
        XCTAssertEqual(try make(script: "bots/_chat.lua", contentType: "binary").get().script, "bots/_chat.lua")
        XCTAssertEqual(try make(contentType: "text").get().contentType, .text)
    }

    func testScriptMustBeAPrivateFileInsideTheFolder() {
        XCTAssertEqual(problem(make(script: "feed"))?.field, "script")
        XCTAssertEqual(problem(make(script: "_x/feed.lua"))?.field, "script")
        XCTAssertEqual(problem(make(script: "../_feed.lua"))?.field, "script")
        XCTAssertEqual(problem(make(script: "/tmp/_feed.lua"))?.field, "script")
        XCTAssertEqual(problem(make(script: "_websocket_info"))?.field, "script")
    }

    func testBadURLsNameTheField() {
        let http = problem(make(url: "http://example.com/"))
        XCTAssertEqual(http?.field, "url")
        XCTAssertTrue(http?.message.contains("http") ?? false, http?.message ?? "")
        XCTAssertEqual(problem(make(url: "example.com"))?.field, "url")
        XCTAssertEqual(problem(make(url: "ws://:80/"))?.field, "url")
    }

    func testOtherFields() {
        XCTAssertEqual(problem(make(name: ""))?.field, "name")
        XCTAssertEqual(problem(make(contentType: "xml"))?.field, "content_type")
        XCTAssertEqual(problem(make(headers: [("Bad Name", "x")]))?.field, "headers")
        XCTAssertEqual(problem(make(headers: [("X-Ok", "a\r\nInjected: yes")]))?.field, "headers")
        XCTAssertEqual(problem(make(headers: [("Sec-WebSocket-Key", "x")]))?.field, "headers")
        XCTAssertEqual(problem(make(caFile: "/ca.pem"))?.field, "ca_file")
        XCTAssertNoThrow(try make(url: "wss://example.com/", caFile: "/ca.pem").get())
    }
}

// MARK: - Reconnect backoff

final class OutboundBackoffTests: XCTestCase {
    func testDoublesFromTheInitialDelayUpToTheMaximum() {
        // random = 1 gives the ceiling of each step.
        let ceilings = (1...8).map { OutboundLink.backoff(failures: $0, initialMs: 500, maxMs: 30_000, random: 1) }
        XCTAssertEqual(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000])
        XCTAssertEqual(OutboundLink.backoff(failures: 1000, initialMs: 500, maxMs: 30_000, random: 1), 30_000)
    }

    func testJitterStaysInTheUpperHalf() {
        XCTAssertEqual(OutboundLink.backoff(failures: 3, initialMs: 500, maxMs: 30_000, random: 0), 1000)
        for _ in 0..<200 {
            let delay = OutboundLink.backoff(failures: 3, initialMs: 500, maxMs: 30_000, random: Double.random(in: 0...1))
            XCTAssertTrue((1000...2000).contains(delay), "\(delay)")
        }
    }
}

// MARK: - Config

final class OutboundConfigTests: XCTestCase {
    private func parse(_ json: String) throws(ConfigError) -> GatewayConfig {
        try GatewayConfig.parse(Data(json.utf8), source: "test.json")
    }

    private func assertError(_ json: String, contains part: String, file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try parse(json)
            XCTFail("accepted \(json)", file: file, line: line)
        } catch {
            XCTAssertTrue(error.message.contains(part), "\(error.message.debugDescription) does not contain \(part.debugDescription)", file: file, line: line)
        }
    }

    func testOutboundEntries() throws {
        let config = try parse("""
            {"outbound": [{"name": "feed", "url": "wss://feed.example.com/v1?x=1", "script": "_feed.lua", "content_type": "text",
                           "headers": {"Authorization": "Bearer t"}, "ca_file": "/etc/ca.pem"},
                          {"name": "bot", "url": "ws://10.0.0.1:9000/", "script": "_bot", "insecure": true}],
             "outboundReconnect": {"initialDelayMs": 100, "maxDelayMs": 2000}}
            """)
        XCTAssertEqual(config.outbound.map(\.name), ["feed", "bot"])
        XCTAssertEqual(config.outbound[0].url.requestTarget, "/v1?x=1")
        XCTAssertEqual(config.outbound[0].contentType, .text)
        XCTAssertEqual(config.outbound[0].headers.map(\.name), ["Authorization"])
        XCTAssertEqual(config.outbound[0].caFile, "/etc/ca.pem")
        XCTAssertEqual(config.outbound[1].script, "_bot.lua")
        XCTAssertTrue(config.outbound[1].insecure)
        XCTAssertEqual(config.outboundInitialDelayMs, 100)
        XCTAssertEqual(config.outboundMaxDelayMs, 2000)
        let defaults = try parse("{}")
        XCTAssertEqual(defaults.outbound.count, 0)
        XCTAssertEqual(defaults.outboundInitialDelayMs, 500)
        XCTAssertEqual(defaults.outboundMaxDelayMs, 30_000)
    }

    func testErrorsNameTheKey() {
        assertError(#"{"outbound": {}}"#, contains: "\"outbound\"")
        assertError(#"{"outbound": [{"url": "ws://a/", "script": "_a"}]}"#, contains: "\"outbound[0].name\" is required")
        assertError(#"{"outbound": [{"name": "a", "url": "http://a/", "script": "_a"}]}"#, contains: "\"outbound[0].url\"")
        assertError(#"{"outbound": [{"name": "a", "url": "ws://a/", "script": "_a", "colour": 1}]}"#, contains: "\"outbound[0].colour\"")
        assertError(#"{"outbound": [{"name": "a", "url": "ws://a/", "script": "_a", "headers": {"X": 1}}]}"#, contains: "\"outbound[0].headers.X\"")
        assertError(#"{"outbound": [{"name": "a", "url": "ws://a/", "script": "_a"}, {"name": "a", "url": "ws://b/", "script": "_b"}]}"#,
                    contains: "\"outbound[1].name\"")
        assertError(#"{"outboundReconnect": {"initialDelayMs": 0}}"#, contains: "\"outboundReconnect.initialDelayMs\"")
        assertError(#"{"outboundReconnect": {"initialDelayMs": 5000, "maxDelayMs": 1000}}"#, contains: "\"outboundReconnect.maxDelayMs\"")
        assertError(#"{"outboundReconnect": {"jitter": true}}"#, contains: "\"outboundReconnect.jitter\"")
    }
}

// MARK: - Outbound scripts in the endpoints folder

final class OutboundScriptFilesTests: XCTestCase {
    func testPrivateFilesAreNoRoutesButAreLoaded() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("wsgate-outbound-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        for file in ["echo.lua", "_feed.lua", "bots/_chat.lua", "_lib/helper.lua", ".hidden/_x.lua"] {
            let url = root.appendingPathComponent(file)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data("return 1\n".utf8).write(to: url)
        }
        let (set, problems) = try ScriptSet.load(folder: root.path, previous: nil)
        XCTAssertTrue(problems.isEmpty)
        XCTAssertEqual(set.routes.map(\.file), ["echo.lua"])
        XCTAssertEqual(set.sources.keys.sorted(), ["_feed.lua", "_lib/helper.lua", "bots/_chat.lua", "echo.lua"])
    }
}
