import Foundation
import Glibc
import XCTest
import Reactor
import WebSocketCodec
@testable import Gateway

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
        let loops = try Loops(config: #"{"rateLimit": {"messagesPerSecond": 0}}"#, scripts: echo)
        let socket = try loops.open(on: 0, path: "/echo")
        loops.write(socket.client, masked(.text, "one") + masked(.ping, "") + masked(.text, "two"))
        loops.pump()
        XCTAssertEqual(loops.texts(socket.client), ["echo: one", "", "echo: two"])
    }

    func testSendsReachTheSocketFromItsOwnLoopAndFromAnother() throws {
        let loops = try Loops(scripts: echo)
        let socket = try loops.open(on: 0, path: "/echo")
        for (index, text) in [(0, "from its own loop"), (1, "from the other loop")] {
            let failure = Array(text.utf8).withUnsafeBytes { loops.workers[index].owners.send(to: .socket(socket.id), .text, $0) }
            XCTAssertNil(failure)
            loops.pump()
            XCTAssertEqual(loops.texts(socket.client), [text])
        }
    }

    func testUnknownAndClosingSocketsAre404FromEveryLoop() throws {
        let loops = try Loops(scripts: echo)
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
        let loops = try Loops(config: #"{"limits": {"maxMessageBytes": 8192, "sendQueueBytes": 65536}}"#, scripts: echo)
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
        let loops = try Loops(scripts: echo)
        _ = loops.shared.outbound.claim("upstream", worker: 1, url: "ws://127.0.0.1:1/", contentType: .text, sendQueue: SendQueueGauge())
        for worker in loops.workers {
            let bytes = Array("hello".utf8)
            XCTAssertEqual(bytes.withUnsafeBytes { worker.owners.send(to: .outbound("upstream"), .text, $0) }?.status, 503)
            XCTAssertEqual(bytes.withUnsafeBytes { worker.owners.send(to: .outbound("nobody"), .text, $0) }?.status, 404)
            XCTAssertEqual(worker.owners.withLink("nobody") { _ in }?.status, 404)
        }
    }
}
