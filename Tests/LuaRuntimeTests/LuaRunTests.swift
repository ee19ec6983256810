import CLua
import CLuaSupport
import Foundation
import LuaRuntime
import XCTest

/// Runs that wait: a script calls a function made with `cls_push_waiting_function`, its coroutine
/// suspends, and the host resumes it with the answer.
final class LuaRunTests: XCTestCase {
    /// `wait()` always suspends; `now(x)` answers x at once; `bad()` raises.
    private func makeState(timeoutNanos: UInt64 = 0) -> (LuaState, LuaState.EventGlobal) {
        let lua = LuaState()
        lua.timeoutNanos = timeoutNanos
        lua.setBaseGlobal("wait") { cls_push_waiting_function(lua.L, { _ in -1 }, "wait") }
        lua.setBaseGlobal("now") { cls_push_waiting_function(lua.L, { L in lua_pushvalue(L, 1); return 1 }, "now") }
        lua.setBaseGlobal("bad") { cls_push_waiting_function(lua.L, { L in lua_pushstring(L, "bad argument"); return -2 }, "bad") }
        // The clock the timeout counts with (os.clock is CPU time, which a busy machine stretches).
        lua.setBaseGlobal("monotonic") { lua_pushcfunction(lua.L) { L in lua_pushnumber(L, Double(cls_now_ns()) / 1e9); return 1 } }
        lua.sealBaseEnvironment()
        return (lua, lua.eventGlobal(named: "event", keepsValue: false))
    }

    private func compile(_ lua: LuaState, _ code: String) -> Int32 {
        guard case .success(let ref) = lua.compile(Array(code.utf8), chunkName: "run.lua") else {
            XCTFail("compile")
            return LUA_NOREF
        }
        return ref
    }

    /// Starts `ref` with `event` set to a table holding `tag`.
    private func start(_ lua: LuaState, _ ref: Int32, _ global: LuaState.EventGlobal, tag: String, handler: StaticString? = nil) -> LuaState.RunOutcome {
        lua_createtable(lua.L, 0, 1)
        lua_pushswift(lua.L, tag)
        lua_setfield(lua.L, -2, "tag")
        lua.pushEnvironment(for: global)
        return lua.start(ref, in: global, handler: handler)
    }

    private func suspended(_ outcome: LuaState.RunOutcome, file: StaticString = #filePath, line: UInt = #line) -> LuaRun? {
        guard case .suspended(let run) = outcome else {
            XCTFail("expected the run to wait, got \(outcome)", file: file, line: line)
            return nil
        }
        return run
    }

    private func failure(_ outcome: LuaState.RunOutcome) -> String? {
        if case .finished(let failure, _) = outcome { return failure }
        return "still waiting"
    }

    func testAWaitingRunResumesWithTheAnswerAndRunsToItsEnd() {
        let (lua, global) = makeState()
        let ref = compile(lua, """
        local a, b = wait()
        assert(a == 'answer' and b == 42, tostring(a))
        assert(now('x') == 'x')
        local c = wait()
        assert(c == nil)
        """)
        guard let run = suspended(start(lua, ref, global, tag: "one")) else { return }
        guard let again = suspended(lua.resume(run) { T in lua_pushswift(T, "answer"); lua_pushinteger(T, 42); return 2 }) else { return }
        XCTAssertTrue(again === run)
        XCTAssertNil(failure(lua.resume(run) { _ in 0 }))
        XCTAssertEqual(lua_gettop(lua.L), lua.stackBase)
    }

    func testInterleavedRunsOfOneScriptKeepTheirOwnGlobals() {
        let (lua, global) = makeState()
        let ref = compile(lua, """
        mine = event.tag
        local function later() return mine end
        wait()
        assert(mine == event.tag and later() == event.tag, tostring(mine) .. ' in the run of ' .. event.tag)
        """)
        guard let first = suspended(start(lua, ref, global, tag: "first")),
              let second = suspended(start(lua, ref, global, tag: "second")) else { return }
        XCTAssertNil(failure(lua.resume(first) { _ in 0 }))
        XCTAssertNil(failure(lua.resume(second) { _ in 0 }))
    }

    // The spare environment a waiting run took stays with it; runs meanwhile get a new one, which
    // becomes the spare in turn.
    func testAWaitingRunKeepsTheSpareEnvironmentAndTheOthersGetAnother() {
        let (lua, global) = makeState()
        let quick = compile(lua, "assert(event.tag == 'quick')")
        let waiting = compile(lua, "local before = event.tag wait() assert(event.tag == before and before == 'w')")
        func begin(_ ref: Int32, tag: String) -> (LuaState.RunOutcome, UnsafeRawPointer?) {
            lua_createtable(lua.L, 0, 1)
            lua_pushswift(lua.L, tag)
            lua_setfield(lua.L, -2, "tag")
            lua.pushEnvironment(for: global)
            let environment = lua_topointer(lua.L, -1)
            return (lua.start(ref, in: global), environment)
        }
        let (firstOutcome, spare) = begin(quick, tag: "quick")
        XCTAssertNil(failure(firstOutcome))
        let (waitingOutcome, held) = begin(waiting, tag: "w")
        XCTAssertEqual(held, spare, "a run gets the spare")
        guard let run = suspended(waitingOutcome) else { return }
        let (meanwhile, other) = begin(quick, tag: "quick")
        XCTAssertNil(failure(meanwhile))
        XCTAssertNotEqual(other, held, "the waiting run keeps its environment")
        let (next, again) = begin(quick, tag: "quick")
        XCTAssertNil(failure(next))
        XCTAssertEqual(again, other, "the new environment became the spare")
        XCTAssertNil(failure(lua.resume(run) { _ in 0 }))
        XCTAssertNil(failure(begin(quick, tag: "quick").0))
        XCTAssertEqual(lua_gettop(lua.L), lua.stackBase)
    }

    func testTheHandlerIsCalledAfterAChunkThatWaited() {
        let (lua, global) = makeState()
        let ref = compile(lua, "wait() function handle(e) assert(e.tag == 'h') wait() error('handled ' .. e.tag) end")
        guard let run = suspended(start(lua, ref, global, tag: "h", handler: "handle")),
              suspended(lua.resume(run) { _ in 0 }) != nil else { return }
        XCTAssertTrue(failure(lua.resume(run) { _ in 0 })?.contains("handled h") == true)
    }

    func testWaitingIsRefusedWhereTheRunCannotSuspend() {
        let (lua, global) = makeState()
        let inCoroutine = compile(lua, "local ok, e = coroutine.resume(coroutine.create(function() wait() end)) error(e)")
        XCTAssertTrue(failure(start(lua, inCoroutine, global, tag: "c"))?.contains("cannot wait inside a coroutine the script created") == true)
        let inSort = compile(lua, "table.sort({3, 1, 2}, function(a, b) wait() return a < b end)")
        XCTAssertTrue(failure(start(lua, inSort, global, tag: "s"))?.contains("wait cannot wait here") == true)
        // A call answered at once works anywhere: only waiting needs the run's own coroutine.
        let answeredAtOnce = compile(lua, """
        local ok, v = coroutine.resume(coroutine.create(function() return now('c') end)) assert(ok and v == 'c', v)
        local sorted = {3, 1, 2} table.sort(sorted, function(a, b) return now(a) < now(b) end) assert(sorted[1] == 1)
        """)
        XCTAssertNil(failure(start(lua, answeredAtOnce, global, tag: "a")))
        let raising = compile(lua, "bad()")
        XCTAssertTrue(failure(start(lua, raising, global, tag: "b"))?.contains("bad argument") == true)
        let insidePcall = compile(lua, "local ok = pcall(function() wait() end) assert(ok)")
        guard let run = suspended(start(lua, insidePcall, global, tag: "p")) else { return }
        XCTAssertNil(failure(lua.resume(run) { _ in 0 }))
    }

    func testTheTimeoutCountsExecutionNotWaiting() {
        let (lua, global) = makeState(timeoutNanos: 300_000_000)
        // About 200 ms of work before and after a wait: each alone fits, together they do not.
        let ref = compile(lua, """
        local function spin() local t = monotonic() while monotonic() - t < 0.2 do end end
        spin() wait() spin()
        """)
        guard let run = suspended(start(lua, ref, global, tag: "t")) else { return }
        Thread.sleep(forTimeInterval: 0.4)
        let result = failure(lua.resume(run) { _ in 0 })
        XCTAssertTrue(result?.contains("timed out after 300 ms") == true, result ?? "no failure")
        XCTAssertTrue(lua.lastRunTimedOut)
        // Waiting alone uses nothing.
        let waits = compile(lua, "wait() wait()")
        guard let idle = suspended(start(lua, waits, global, tag: "w")) else { return }
        Thread.sleep(forTimeInterval: 0.4)
        XCTAssertNotNil(suspended(lua.resume(idle) { _ in 0 }))
        XCTAssertNil(failure(lua.resume(idle) { _ in 0 }))
    }

    func testAnAbandonedRunClosesWhatItHeldAndLeavesTheStateUsable() {
        let (lua, global) = makeState()
        let ref = compile(lua, """
        local closer <close> = setmetatable({}, {__close = function() event.closed = true end})
        wait()
        error('never resumed')
        """)
        lua_createtable(lua.L, 0, 0)
        lua_pushvalue(lua.L, -1)
        let event = luaL_ref(lua.L, lua_registryIndex())
        lua.pushEnvironment(for: global)
        guard let run = suspended(lua.start(ref, in: global)) else { return }
        lua.abandon(run)
        lua_rawgeti(lua.L, lua_registryIndex(), lua_Integer(event))
        lua_getfield(lua.L, -1, "closed")
        XCTAssertEqual(lua_toboolean(lua.L, -1), 1)
        lua_settop(lua.L, lua.stackBase)
        XCTAssertNil(failure(start(lua, compile(lua, "assert(event.tag == 'after')"), global, tag: "after")))
    }
}
