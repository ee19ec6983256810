import CLua
import XCTest
import LuaRuntime
@testable import Gateway

/// `WebsocketInfoView`: one view serves every run of a loop while nobody writes to it, carries only
/// what each event brings, and a run inside another gets its own.
final class WebsocketInfoViewTests: XCTestCase {
    private var loops: Loops!
    private var runner: ScriptRunner { loops.workers[0].runner }
    private var L: OpaquePointer { runner.lua.L }

    override func setUpWithError() throws {
        loops = try Loops(scripts: ["echo.lua": ""], workers: 1)
    }

    override func tearDown() {
        XCTAssertEqual(lua_gettop(L), runner.lua.stackBase, "unbalanced stack")
        loops = nil
    }

    private func push(_ event: ScriptEvent, _ message: String?) -> Bool {
        guard let message else { return runner.infoView.push(event: event, message: nil, binary: false, runner: runner) }
        return Array(message.utf8).withUnsafeBytes { runner.infoView.push(event: event, message: $0, binary: false, runner: runner) }
    }

    /// Field `name` of the view on top of the stack, read as a script would (through `__index`).
    private func field(_ name: String) -> String {
        lua_getfield(L, -1, name)
        defer { lua_pop(L, 1) }
        return lua_swiftstring(L, -1) ?? String(cString: luaL_typename(L, -1))
    }

    func testTheViewIsReusedAndCarriesOnlyItsEvent() {
        XCTAssertTrue(push(.data, "hello"))
        let first = lua_topointer(L, -1)
        XCTAssertEqual(field("type"), "data")
        XCTAssertEqual(field("message"), "hello")
        XCTAssertEqual(field("message_type"), "data-text")
        XCTAssertEqual(field("send"), "function")
        lua_pop(L, 1)
        runner.infoView.finish(reused: true, runner: runner)

        XCTAssertTrue(push(.open, nil))
        XCTAssertEqual(lua_topointer(L, -1), first)
        XCTAssertEqual(field("type"), "open")
        XCTAssertEqual(field("message"), "nil", "the last event's message is gone")
        XCTAssertEqual(field("message_type"), "nil")
        XCTAssertEqual(lua_rawlen(L, -1), 0)
        lua_pushnil(L)
        XCTAssertEqual(lua_next(L, -2), 0, "the view itself holds nothing")
        lua_pop(L, 1)
        runner.infoView.finish(reused: true, runner: runner)
    }

    func testARunInsideAnotherGetsItsOwnViewAndLeavesTheOuterOneAlone() {
        XCTAssertTrue(push(.data, "outer"))
        let outer = lua_topointer(L, -1)
        XCTAssertFalse(push(.close, nil))
        XCTAssertNotEqual(lua_topointer(L, -1), outer)
        XCTAssertEqual(field("type"), "close")
        XCTAssertEqual(field("message"), "nil")
        lua_pop(L, 1)
        runner.infoView.finish(reused: false, runner: runner)
        XCTAssertEqual(field("type"), "data")
        XCTAssertEqual(field("message"), "outer")
        lua_pop(L, 1)
        runner.infoView.finish(reused: true, runner: runner)
        XCTAssertTrue(push(.data, "next"))
        XCTAssertEqual(lua_topointer(L, -1), outer)
        lua_pop(L, 1)
        runner.infoView.finish(reused: true, runner: runner)
    }

    func testAViewAScriptWroteToIsNotReused() {
        XCTAssertTrue(push(.data, "one"))
        let written = lua_topointer(L, -1)
        lua_pushstring(L, "kept?")
        lua_setfield(L, -2, "extra") // through __newindex, as `websocketInfo.extra = ...` would
        XCTAssertEqual(field("extra"), "kept?")
        lua_pop(L, 1)
        runner.infoView.finish(reused: true, runner: runner)
        XCTAssertTrue(push(.data, "two"))
        XCTAssertNotEqual(lua_topointer(L, -1), written)
        XCTAssertEqual(field("extra"), "nil")
        lua_pop(L, 1)
        runner.infoView.finish(reused: true, runner: runner)
    }

    func testAViewWithAKeyOfItsOwnIsNotReused() {
        XCTAssertTrue(push(.data, "one"))
        let written = lua_topointer(L, -1)
        lua_pushstring(L, "raw")
        lua_pushboolean(L, 1)
        lua_rawset(L, -3) // as the sandbox's `rawset(websocketInfo, "raw", true)` would
        lua_pop(L, 1)
        runner.infoView.finish(reused: true, runner: runner)
        XCTAssertTrue(push(.data, "two"))
        XCTAssertNotEqual(lua_topointer(L, -1), written)
        XCTAssertEqual(field("raw"), "nil")
        lua_pop(L, 1)
        runner.infoView.finish(reused: true, runner: runner)
    }

    /// The bytes of the string at the top of the stack.
    private func topBytes() -> UnsafeRawBufferPointer { lua_bytes(L, -1)! }

    func testTheTextReceivedIsKnownOnlyWhileTheReusedViewHoldsIt() {
        XCTAssertTrue(push(.data, "h\u{e9}llo"))
        lua_getfield(L, -1, "message")
        XCTAssertEqual(runner.receivedText?.baseAddress, topBytes().baseAddress, "the very string the script gets")
        XCTAssertTrue(runner.isSendableText(topBytes()))
        lua_pop(L, 1)
        // A write may drop the message: from then on every text is checked.
        lua_pushnil(L)
        lua_setfield(L, -2, "message")
        XCTAssertNil(runner.receivedText)
        lua_pop(L, 1)
        runner.infoView.finish(reused: true, runner: runner)

        XCTAssertTrue(push(.data, "again"))
        XCTAssertNotNil(runner.receivedText)
        XCTAssertFalse(push(.close, nil), "a run inside another")
        XCTAssertNil(runner.receivedText, "the inner run knows no text")
        lua_pop(L, 1)
        runner.infoView.finish(reused: false, runner: runner)
        lua_pop(L, 1)
        runner.infoView.finish(reused: true, runner: runner)
        XCTAssertNil(runner.receivedText, "nothing once the run is over")

        XCTAssertTrue(Array("\u{ff}\u{fe}".utf8).withUnsafeBytes { runner.infoView.push(event: .data, message: $0, binary: true, runner: runner) })
        XCTAssertNil(runner.receivedText, "a binary message is not text")
        lua_pop(L, 1)
        runner.infoView.finish(reused: true, runner: runner)
    }

    func testTextOtherThanTheMessageReceivedIsCheckedForUTF8() {
        XCTAssertTrue(push(.data, "h\u{e9}llo"))
        let invalid: [UInt8] = [0x61, 0xFF, 0xFE]
        invalid.withUnsafeBytes { XCTAssertFalse(runner.isSendableText($0)) }
        lua_getfield(L, -1, "message")
        let received = topBytes()
        // The same bytes elsewhere are checked, and pass.
        Array("h\u{e9}llo".utf8).withUnsafeBytes { XCTAssertTrue(runner.isSendableText($0)) }
        // The received string's start with another length is checked: it ends inside "é".
        XCTAssertFalse(runner.isSendableText(UnsafeRawBufferPointer(rebasing: received[0..<2])))
        lua_pop(L, 2)
        runner.infoView.finish(reused: true, runner: runner)
    }
}
