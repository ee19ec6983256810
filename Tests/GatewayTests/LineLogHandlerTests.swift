import Glibc
import Logging
import XCTest
@testable import Gateway

/// `LineLogHandler`: the two line formats for one event, byte for byte.
final class LineLogHandlerTests: XCTestCase {
    private let noon = timespec(tv_sec: 1_796_299_200, tv_nsec: 7_000_000)   // 2026-12-03T12:00:00.007Z

    private func event(_ message: String, _ metadata: Logger.Metadata?) -> LogEvent {
        LogEvent(level: .warning, message: "\(message)", metadata: metadata, source: "wsgate", file: #fileID, function: #function, line: #line)
    }

    func testTextFoldsLinesAndPutsRouteAndSocketFirst() {
        let line = LineLogHandler().render(event("first\nsecond", ["socket_id": "s-0-1", "route": "/a/{b}"]), format: .text, at: noon)
        XCTAssertEqual(line, "2026-12-03T12:00:00.007Z WARN route=/a/{b} socket=s-0-1 first | second\n")
        XCTAssertEqual(LineLogHandler().render(event("plain", nil), format: .text, at: noon), "2026-12-03T12:00:00.007Z WARN plain\n")
    }

    func testJSONEscapesEverythingThatMustBe() {
        let line = LineLogHandler().render(event("q\"b\\n\nt\t\u{1}é✓", ["socket_id": "s\"1", "route": "/r"]), format: .json, at: noon)
        XCTAssertEqual(line, #"{"ts":"2026-12-03T12:00:00.007Z","level":"warn","msg":"q\"b\\n\nt\t\u0001é✓","socket_id":"s\"1","route":"/r"}"# + "\n")
        XCTAssertEqual(LineLogHandler().render(event("", nil), format: .json, at: noon), #"{"ts":"2026-12-03T12:00:00.007Z","level":"warn","msg":""}"# + "\n")
    }
}
