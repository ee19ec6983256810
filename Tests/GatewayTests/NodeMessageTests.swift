import XCTest
@testable import Gateway

/// `NodeMessage`: what nodes say to each other, through bytes and back, and bytes that are not one.
final class NodeMessageTests: XCTestCase {
    func testRequestsAndRepliesSurviveTheirBytes() {
        var request = NodeMessage(kind: .request, operation: .send, id: 0x0102_0304_0506_0708, node: "nodea", loop: 3)
        request.socket = "nodeb-1-42"
        request.opcode = 2
        request.payload = [0, 255, 10, 13]
        let decoded = NodeMessage(decoding: request.encoded())
        XCTAssertEqual(decoded, request)

        let failed = request.reply(from: "nodeb", .failure(.tooManyRequests("socket nodeb-1-42 is not reading")))
        XCTAssertEqual(NodeMessage(decoding: failed.encoded()), failed)
        XCTAssertEqual(failed.kind, .reply)
        XCTAssertEqual(failed.id, request.id)
        XCTAssertEqual(failed.loop, 3)
        guard case .failure(.tooManyRequests(let why)) = failed.outcome else { return XCTFail("429 comes back as 429") }
        XCTAssertEqual(why, "socket nodeb-1-42 is not reading")

        let answered = request.reply(from: "nodeb", .success(Array("{\"a\":1}".utf8)))
        guard case .success(let payload) = NodeMessage(decoding: answered.encoded())?.outcome else { return XCTFail("success") }
        XCTAssertEqual(payload, Array("{\"a\":1}".utf8))
    }

    func testARequestWithIdZeroAsksForNoReply() {
        let told = NodeMessage(kind: .request, operation: .publish, id: 0, node: "nodea", loop: 1)
        XCTAssertEqual(NodeMessage(decoding: told.encoded())?.wantsReply, false)
        XCTAssertEqual(NodeMessage(decoding: NodeMessage(kind: .request, operation: .publish, id: 1, node: "nodea", loop: 1).encoded())?.wantsReply, true)
    }

    func testBytesThatAreNotAMessageAreRefused() {
        let good = NodeMessage(kind: .request, operation: .list, id: 1, node: "n", loop: 0).encoded()
        XCTAssertNil(NodeMessage(decoding: []))
        XCTAssertNil(NodeMessage(decoding: Array(good.prefix(15))))
        XCTAssertNil(NodeMessage(decoding: [9] + good.dropFirst()), "another version")
        XCTAssertNil(NodeMessage(decoding: Array(good.dropLast())), "a string cut short")
        var badKind = good
        badKind[1] = 0
        XCTAssertNil(NodeMessage(decoding: badKind))
        var overlong = good
        overlong[16] = 0xFF
        XCTAssertNil(NodeMessage(decoding: overlong), "a string longer than the message")
    }
}
