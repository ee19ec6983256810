import XCTest
import CLua
import LuaRuntime

final class SandboxTests: XCTestCase {
    // MARK: helpers

    /// Compiles `code` and runs it once in a fresh environment; returns the run's error or nil.
    private func run(_ lua: LuaState, _ code: String, file: StaticString = #filePath, line: UInt = #line) -> String? {
        let ref: Int32
        switch lua.compile(Array(code.utf8), chunkName: "test.lua") {
        case .success(let r): ref = r
        case .failure(let error):
            XCTFail("compile error: \(error.message)", file: file, line: line)
            return error.message
        }
        defer { lua.release(ref) }
        let event = eventGlobal(of: lua)
        let top = lua_gettop(lua.L)
        lua_createtable(lua.L, 0, 0)
        lua.pushEnvironment(for: event)
        lastEnvironment = lua_topointer(lua.L, -1)
        let failure = lua.runToEnd(ref, in: event)
        XCTAssertEqual(lua_gettop(lua.L), top, "unbalanced stack", file: file, line: line)
        return failure
    }

    /// The environment table of the last `run`.
    private var lastEnvironment: UnsafeRawPointer?

    /// The global `event`, a new table for each run, of each state this test made.
    private var eventGlobals: [ObjectIdentifier: LuaState.EventGlobal] = [:]
    private func eventGlobal(of lua: LuaState) -> LuaState.EventGlobal {
        if let global = eventGlobals[ObjectIdentifier(lua)] { return global }
        let global = lua.eventGlobal(named: "event", keepsValue: false)
        eventGlobals[ObjectIdentifier(lua)] = global
        return global
    }

    /// Runs `code`, failing the test if it raises.
    private func expectSuccess(_ lua: LuaState, _ code: String, file: StaticString = #filePath, line: UInt = #line) {
        if let failure = run(lua, code, file: file, line: line) {
            XCTFail("Lua error: \(failure)", file: file, line: line)
        }
    }

    /// Runs `code`, expecting an error that contains `fragment`; returns the seconds the run took.
    @discardableResult
    private func expectFailure(_ lua: LuaState, _ code: String, containing fragment: String,
                               file: StaticString = #filePath, line: UInt = #line) -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        let failure = run(lua, code, file: file, line: line)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        if let failure {
            XCTAssertTrue(failure.contains(fragment), "expected '\(fragment)' in: \(failure)", file: file, line: line)
        } else {
            XCTFail("expected an error containing '\(fragment)'", file: file, line: line)
        }
        return seconds
    }

    // MARK: libraries

    func testAnEnvironmentIsReusedOnlyWhenTheRunLeftItFresh() {
        let lua = LuaState()
        expectSuccess(lua, "local x = event")
        let first = lastEnvironment
        // Left fresh: the next run gets it back, its event global cleared and set anew.
        expectSuccess(lua, "for k in pairs(_G) do assert(k == '_G' or k == 'event', k) end leaked = 1")
        XCTAssertEqual(lastEnvironment, first)
        // The run above left a global: a new environment, without it.
        expectSuccess(lua, "assert(leaked == nil and event ~= nil)")
        XCTAssertNotEqual(lastEnvironment, first)
        let second = lastEnvironment
        expectSuccess(lua, "_G = nil")
        XCTAssertEqual(lastEnvironment, second)
        expectSuccess(lua, "assert(_G ~= nil and _G.event == event)")
        XCTAssertNotEqual(lastEnvironment, second, "an environment whose _G changed is not reused")
        // A failed run gives no environment back.
        var third = lastEnvironment
        _ = run(lua, "error('boom')")
        XCTAssertEqual(lastEnvironment, third)
        expectSuccess(lua, "assert(next(_G, next(_G, nil)) == nil or true)")
        XCTAssertNotEqual(lastEnvironment, third)
        third = lastEnvironment
        expectSuccess(lua, "assert(next(_G, next(_G, nil)) == nil or true)")
        XCTAssertEqual(lastEnvironment, third)
        // A global added by rawset, or added and removed again, counts as well.
        expectSuccess(lua, "rawset(_G, 'sneaky', 1)")
        XCTAssertEqual(lastEnvironment, third)
        expectSuccess(lua, "assert(sneaky == nil) gone = 1 gone = nil")
        XCTAssertNotEqual(lastEnvironment, third)
        let fourth = lastEnvironment
        expectSuccess(lua, "assert(gone == nil)")
        XCTAssertNotEqual(lastEnvironment, fourth)
        // A chunk loaded with the run's environment writes into it too.
        let fifth = lastEnvironment
        expectSuccess(lua, "load('loaded = 1', 'x', 't', _G)()")
        XCTAssertEqual(lastEnvironment, fifth)
        expectSuccess(lua, "assert(loaded == nil)")
        XCTAssertNotEqual(lastEnvironment, fifth)
    }

    func testAKeptEventGlobalStaysInTheSpareEnvironmentUntilItsValueChanges() {
        let lua = LuaState()
        let L = lua.L
        let global = lua.eventGlobal(named: "event", keepsValue: true)
        guard case .success(let seven) = lua.compile(Array("assert(event.n == 7)".utf8), chunkName: "seven.lua"),
              case .success(let three) = lua.compile(Array("assert(event.n == 3)".utf8), chunkName: "three.lua"),
              case .success(let leave) = lua.compile(Array("left = event".utf8), chunkName: "leave.lua")
        else { return XCTFail("compile") }
        func pushEvent(_ n: Int) {
            lua_createtable(L, 0, 1)
            lua_pushinteger(L, lua_Integer(n))
            lua_setfield(L, -2, "n")
        }
        pushEvent(7)
        let kept = luaL_ref(L, lua_registryIndex())
        func run(_ ref: Int32, _ push: () -> Void) -> UnsafeRawPointer? {
            push()
            lua.pushEnvironment(for: global)
            let environment = lua_topointer(L, -1)
            XCTAssertNil(lua.runToEnd(ref, in: global))
            return environment
        }
        let keptEvent = { _ = lua_rawgeti(L, lua_registryIndex(), lua_Integer(kept)) }
        let first = run(seven, keptEvent)
        XCTAssertEqual(run(seven, keptEvent), first, "the spare environment comes back with its value")
        XCTAssertEqual(run(three) { pushEvent(3) }, first, "another value replaces the kept one")
        XCTAssertEqual(run(seven, keptEvent), first)
        XCTAssertEqual(run(leave, keptEvent), first)
        XCTAssertNotEqual(run(seven, keptEvent), first, "a run that left a global gives no environment back")
        XCTAssertEqual(lua_gettop(L), lua.stackBase)
    }

    // A main chunk is vararg, with nothing in `...` here: scripts may use it (the wrapper takes it
    // only for those) and may not when nested functions misuse it.
    func testChunkVarargsAreEmpty() {
        let lua = LuaState()
        expectSuccess(lua, "assert(select('#', ...) == 0) local a, b = ... assert(a == nil and b == nil)")
        expectSuccess(lua, "local t = {...} assert(#t == 0)")
        if case .success = lua.compile(Array("local function f() return ... end".utf8), chunkName: "bad.lua") {
            XCTFail("'...' outside a vararg function compiled")
        }
    }

    func testRemovedFunctionsAreNil() {
        let lua = LuaState()
        expectSuccess(lua, """
        for _, name in ipairs{"io", "package", "require", "debug", "dofile", "loadfile"} do
          assert(_ENV[name] == nil, name .. " is reachable")
        end
        for _, name in ipairs{"execute", "exit", "getenv", "remove", "rename", "tmpname", "setlocale"} do
          assert(os[name] == nil, "os." .. name .. " is reachable")
        end
        assert(string.dump == nil, "string.dump is reachable")
        assert(("x").dump == nil, "string.dump is reachable through the string metatable")
        """)
    }

    func testKeptLibrariesWork() {
        let lua = LuaState()
        expectSuccess(lua, """
        assert(type(os.time()) == "number" and type(os.clock()) == "number")
        assert(type(os.date("%Y")) == "string" and os.difftime(2, 1) == 1)
        assert(string.format("%d-%s", 4, "x") == "4-x")
        assert(table.concat({1, 2, 3}, ",") == "1,2,3")
        assert(math.max(1, 5) == 5 and math.type(1) == "integer")
        assert(utf8.char(72, 228) == "H\\u{E4}" and utf8.len("H\\u{E4}") == 2)
        local co = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
        assert(co(1) == 2 and co(5) == 10)
        assert(select("#", 1, 2) == 2 and tostring(12) == "12" and tonumber("7") == 7)
        assert(pcall(error, "x") == false)
        local t = setmetatable({}, {__index = function(_, k) return k .. "!" end})
        assert(t.a == "a!")
        assert(rawget(t, "a") == nil and rawlen({1, 2}) == 2 and rawequal(t, t))
        rawset(t, "b", 1)
        assert(rawget(t, "b") == 1)
        """)
    }

    func testLoadAcceptsOnlyText() {
        let lua = LuaState()
        expectSuccess(lua, """
        local f, err = load("\\27LuaT\\0\\25\\147\\r\\n\\26\\n")
        assert(f == nil and err:find("binary"), "binary chunk loaded: " .. tostring(err))
        -- an explicit binary mode is overridden
        f, err = load("\\27Lua", "chunk", "b")
        assert(f == nil and err:find("binary"), tostring(err))
        assert(load("return 1 + 1", "chunk", "b")() == 2)
        -- reader functions go through the same check
        local parts = {"\\27Lu", "a"}
        f, err = load(function() return table.remove(parts, 1) end)
        assert(f == nil and err:find("binary"), tostring(err))
        parts = {"return ", "40 + 2"}
        assert(load(function() return table.remove(parts, 1) end)() == 42)
        -- syntax errors are reported, not raised
        f, err = load("return +")
        assert(f == nil and type(err) == "string")
        """)
    }

    func testLoadEnvironment() {
        let lua = LuaState()
        expectSuccess(lua, """
        x = 5
        assert(load("return x")() == 5, "loaded chunk does not see the caller's globals")
        load("y = 1")()
        assert(y == 1, "loaded chunk does not write the caller's globals")
        local env = {}
        load("z = 3", "chunk", "t", env)()
        assert(env.z == 3 and z == nil)
        -- called from C (pcall), the chunk gets its own environment over the base
        local ok, f = pcall(load, "w = 1; return print")
        assert(ok and f() == print and w == nil)
        """)
        expectSuccess(lua, "assert(w == nil and x == nil and y == nil, 'load leaked into the base')")
    }

    func testCollectGarbageIsLimited() {
        let lua = LuaState()
        for option in ["stop", "restart", "incremental", "generational", "setpause", "setstepmul", "nonsense"] {
            expectFailure(lua, "collectgarbage('\(option)')", containing: "not allowed")
        }
        expectSuccess(lua, """
        assert(type(collectgarbage("count")) == "number" and collectgarbage("count") > 0)
        assert(collectgarbage() == 0 and collectgarbage("collect") == 0)
        assert(type(collectgarbage("step")) == "boolean")
        assert(collectgarbage("isrunning") == true)
        """)
    }

    func testFinalizersAreRefused() {
        let lua = LuaState()
        expectFailure(lua, "setmetatable({}, {__gc = function() while true do end end})", containing: "__gc")
        expectSuccess(lua, "local t = setmetatable({}, {__index = {a = 1}}) assert(t.a == 1)")
    }

    // MARK: read-only base

    func testLibraryTablesAreReadOnly() {
        let lua = LuaState()
        expectFailure(lua, "string.upper = nil", containing: "attempt to modify read-only table")
        expectFailure(lua, "math.pi = 3", containing: "attempt to modify read-only table")
        expectFailure(lua, "os.exit = function() end", containing: "attempt to modify read-only table")
        expectFailure(lua, "table.insert(table, 1)", containing: "attempt to modify read-only table")
        expectFailure(lua, "rawset(string, 'upper', print)", containing: "attempt to modify read-only table")
        expectFailure(lua, "setmetatable(string, nil)", containing: "protected metatable")
        expectSuccess(lua, """
        assert(getmetatable(string) == false)
        assert(("x"):upper() == "X" and string.upper("y") == "Y" and ("%d"):format(3) == "3")
        assert(type(string.upper) == "function" and math.pi > 3.14)
        local names = {}
        for name in pairs(string) do names[name] = true end
        assert(names.upper and names.format and not names.dump)
        assert(#utf8.charpattern > 0)
        -- assigning a global only shadows it for this run (assigning nil shadows nothing)
        string = 1
        print = nil
        assert(string == 1)
        assert(("x"):upper() == "X")
        """)
        expectSuccess(lua, "assert(string.upper('x') == 'X' and print ~= nil)")
    }

    func testStringMetatableIsHidden() {
        let lua = LuaState()
        expectSuccess(lua, """
        assert(type(getmetatable("")) ~= "table", "string metatable exposed")
        assert(not pcall(setmetatable, "", {}))
        assert(getmetatable(_ENV) == false, "environment metatable exposed")
        assert(("abc"):len() == 3 and ("a,b"):find(",") == 2)
        """)
    }

    func testGlobalsAreIsolatedBetweenRuns() {
        let lua = LuaState()
        expectSuccess(lua, """
        leaked = 42
        _G.alsoLeaked = 1
        assert(_G == _ENV and alsoLeaked == 1)
        _ENV._G = nil
        assert(type(_G) == "table" and _G ~= _ENV)
        local ok = pcall(function() _G.viaBase = 1 end)
        assert(not ok, "base _G is writable")
        """)
        expectSuccess(lua, "assert(leaked == nil and alsoLeaked == nil and viaBase == nil)")
    }

    func testHostGlobalsAreSealed() {
        let lua = LuaState()
        let L = lua.L
        lua.setBaseGlobal("Websocket") {
            lua_createtable(L, 0, 2)
            lua_pushinteger(L, 7)
            lua_setfield(L, -2, "answer")
            lua_createtable(L, 0, 1)
            lua_setfield(L, -2, "nested")
        }
        lua.sealBaseEnvironment()
        lua.setBaseGlobal("Late") { lua_createtable(L, 0, 0) }
        expectFailure(lua, "Websocket.answer = 1", containing: "attempt to modify read-only table")
        expectFailure(lua, "Websocket.nested.x = 1", containing: "attempt to modify read-only table")
        expectFailure(lua, "Late.x = 1", containing: "attempt to modify read-only table")
        expectSuccess(lua, "Websocket = nil Late = 'shadowed' assert(Late == 'shadowed')")
        expectSuccess(lua, "assert(Websocket.answer == 7 and type(Websocket.nested) == 'table' and type(Late) == 'table')")
    }

    // MARK: timeout

    // Every script stopped here would run forever: the bounds on `seconds` are generous so that a
    // busy machine, slow to schedule the thread, does not fail them; they still show the deadline hit.
    func testTimeoutStopsInfiniteLoop() {
        let lua = LuaState()
        lua.timeoutNanos = 100_000_000
        let seconds = expectFailure(lua, "while true do end", containing: "timed out")
        XCTAssertLessThan(seconds, 2.0)
        XCTAssertGreaterThanOrEqual(seconds, 0.09)
        expectSuccess(lua, "local n = 0 for i = 1, 1000 do n = n + i end assert(n == 500500)")
        let message = run(lua, "while true do end") ?? ""
        XCTAssertTrue(message.contains("script timed out after 100 ms"), message)
    }

    func testTimeoutCannotBeCaught() {
        let lua = LuaState()
        lua.timeoutNanos = 100_000_000
        var seconds = expectFailure(lua, "while true do pcall(function() while true do end end) end", containing: "timed out")
        XCTAssertLessThan(seconds, 2.0)
        seconds = expectFailure(lua, """
        while true do
          pcall(function()
            while true do pcall(function() while true do end end) end
          end)
        end
        """, containing: "timed out")
        XCTAssertLessThan(seconds, 2.0)
        seconds = expectFailure(lua, "while true do pcall(string.rep, 'x', 100) end", containing: "timed out")
        XCTAssertLessThan(seconds, 2.0)
        seconds = expectFailure(lua, "while true do xpcall(function() while true do end end, function(m) return m end) end",
                                containing: "timed out")
        XCTAssertLessThan(seconds, 2.0)
        seconds = expectFailure(lua, """
        while true do
          pcall(coroutine.wrap(function() while true do end end))
          coroutine.resume(coroutine.create(function() while true do end end))
        end
        """, containing: "timed out")
        XCTAssertLessThan(seconds, 2.0)
        expectSuccess(lua, "assert(pcall(function() return 1 end))")
    }

    // The watchdog stops whichever thread executes Lua at the deadline: a coroutine the script
    // resumed, one it closes (its __close handler runs there), and the script's own thread once
    // it caught the coroutine's error.
    func testTimeoutStopsCoroutinesTheScriptRuns() {
        let lua = LuaState()
        lua.timeoutNanos = 100_000_000
        var seconds = expectFailure(lua, """
        local ok, message = coroutine.resume(coroutine.create(function() while true do end end))
        assert(not ok)
        while true do end
        """, containing: "timed out")
        XCTAssertLessThan(seconds, 2.0)
        seconds = expectFailure(lua, """
        local co = coroutine.create(function()
          local guard <close> = setmetatable({}, {__close = function() while true do end end})
          coroutine.yield()
        end)
        coroutine.resume(co)
        coroutine.close(co)
        """, containing: "timed out")
        XCTAssertLessThan(seconds, 2.0)
        seconds = expectFailure(lua, """
        local outer = coroutine.wrap(function()
          coroutine.wrap(function() coroutine.yield() while true do end end)()
        end)
        pcall(outer)
        while true do end
        """, containing: "timed out")
        XCTAssertLessThan(seconds, 2.0)
    }

    // The watchdog sleeps once no run has been in progress for a second; a run that starts then
    // wakes it.
    func testTimeoutAfterIdleSecond() {
        let lua = LuaState()
        lua.timeoutNanos = 100_000_000
        expectSuccess(lua, "assert(true)")
        Thread.sleep(forTimeInterval: 1.5)
        let seconds = expectFailure(lua, "while true do end", containing: "timed out")
        XCTAssertLessThan(seconds, 2.0)
        XCTAssertGreaterThanOrEqual(seconds, 0.09)
    }

    // The functions that switch coroutines keep the standard ones' results and errors.
    func testCoroutinesBehaveAsStandard() {
        let lua = LuaState()
        lua.timeoutNanos = 1_000_000_000
        expectSuccess(lua, """
        local gen = coroutine.wrap(function(a) local b = coroutine.yield(a + 1) return b * 2 end)
        assert(gen(1) == 2 and gen(5) == 10)
        local co = coroutine.create(function(...) return select('#', ...), ... end)
        local ok, n, x, y = coroutine.resume(co, 'x', nil)
        assert(ok and n == 2 and x == 'x' and y == nil and coroutine.status(co) == 'dead')
        local ok2, message = coroutine.resume(co)
        assert(not ok2 and message == 'cannot resume dead coroutine')
        local failing = coroutine.create(function() error('boom') end)
        local ok3, e = coroutine.resume(failing)
        assert(not ok3 and e:find('boom'))
        local ok4, e4 = pcall(coroutine.wrap(function() error({code = 7}) end))
        assert(not ok4 and e4.code == 7)
        local ok5, e5 = pcall(coroutine.resume, 42)
        assert(not ok5 and e5:find('bad argument'))
        local closed = false
        local c = coroutine.create(function()
          local guard <close> = setmetatable({}, {__close = function() closed = true end})
          coroutine.yield()
        end)
        coroutine.resume(c)
        assert(coroutine.close(c) == true and closed and coroutine.status(c) == 'dead')
        """)
    }

    func testTimeoutCoversAfter() {
        let lua = LuaState()
        lua.timeoutNanos = 100_000_000
        guard case .success(let ref) = lua.compile(Array("function handler(info) while true do end end".utf8), chunkName: "h.lua") else {
            return XCTFail("compile")
        }
        let L = lua.L
        let start = DispatchTime.now().uptimeNanoseconds
        let event = lua.eventGlobal(named: "event", keepsValue: false)
        lua_pushnil(L)
        lua.pushEnvironment(for: event)
        let failure = lua.runToEnd(ref, in: event, handler: "handler")
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        XCTAssertTrue(failure?.contains("timed out") == true, failure ?? "no error")
        XCTAssertLessThan(seconds, 2.0)
        XCTAssertEqual(lua_gettop(L), lua.stackBase)
        expectSuccess(lua, "assert(true)")
    }

    func testNoTimeoutByDefault() {
        let lua = LuaState()
        expectSuccess(lua, "local n = 0 for i = 1, 3e6 do n = n + 1 end assert(n == 3e6)")
    }

    // MARK: memory

    func testMemoryLimit() {
        let limit = 16 << 20
        let lua = LuaState(memoryLimit: limit)
        XCTAssertEqual(lua.memoryLimit, limit)
        XCTAssertGreaterThan(lua.memoryInUse, 0)
        XCTAssertLessThan(lua.memoryInUse, 1 << 20)
        expectFailure(lua, "local t = {} for i = 1, 1e8 do t[i] = string.rep('x', 100) .. i end", containing: "not enough memory")
        XCTAssertLessThanOrEqual(lua.memoryInUse, limit)
        expectSuccess(lua, "local t = {} for i = 1, 1000 do t[i] = ('y'):rep(10) .. i end assert(#t == 1000)")
        expectSuccess(lua, "collectgarbage()")
        XCTAssertLessThan(lua.memoryInUse, 1 << 20)
        expectFailure(lua, "local s = string.rep('x', 1e9)", containing: "not enough memory")
        expectFailure(lua, "local ok, e = pcall(string.rep, 'x', 1e9) assert(not ok and e:find('memory')) error('caught: ' .. e)",
                      containing: "caught: not enough memory")
        expectSuccess(lua, "assert(#string.rep('x', 1e6) == 1e6)")
        // Raising the limit lets the same script get further.
        lua.memoryLimit = 0
        expectSuccess(lua, "local s = string.rep('x', 32 * 1024 * 1024) assert(#s == 32 * 1024 * 1024)")
        XCTAssertEqual(lua.memoryLimit, 0)
    }

    /// The allocator keeps freed blocks of up to 256 bytes by size class and resizes across
    /// classes by copying: contents survive every kind of move, and what it counts comes back.
    func testBlocksKeptAndResizedAcrossSizeClasses() {
        let lua = LuaState(memoryLimit: 16 << 20)
        expectSuccess(lua, "collectgarbage()")
        let before = lua.memoryInUse
        expectSuccess(lua, """
            for round = 1, 3 do
              local kept = {}
              for n = 1, 600 do
                -- An array grows through small and large sizes (resized in and across classes).
                local t = {}
                for i = 1, n % 70 do t[i] = i * n end
                for i = 1, n % 70 do assert(t[i] == i * n) end
                -- A buffer that grows as it is filled (table.concat), and strings of every length.
                local joined = table.concat(t, ",")
                local expected = 0
                for i = 1, #t do expected = expected + #tostring(t[i]) + (i > 1 and 1 or 0) end
                assert(#joined == expected and (#t == 0 or joined:sub(1, #tostring(n)) == tostring(n)))
                local s = string.rep(string.char(65 + n % 26), n)
                assert(#s == n and s:byte(1) == 65 + n % 26 and s:byte(n) == 65 + n % 26)
                kept[#kept + 1] = s .. n
                if n % 50 == 0 then kept = {} collectgarbage() end
              end
              for i, s in ipairs(kept) do assert(#s > 0) end
            end
            """)
        expectSuccess(lua, "collectgarbage()")
        XCTAssertLessThan(abs(lua.memoryInUse - before), 4096, "the allocator's count comes back after a collection")
    }

    func testMemoryLimitOnlyAppliesToRuns() {
        let lua = LuaState(memoryLimit: 1 << 20)
        let L = lua.L
        // The host may push more than the limit between runs without a panic.
        let big = [UInt8](repeating: 65, count: 2 << 20)
        big.withUnsafeBytes { _ = lua_pushlstring(L, $0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count) }
        XCTAssertGreaterThan(lua.memoryInUse, 1 << 20)
        lua_pop(L, 1)
        expectSuccess(lua, "collectgarbage()")
        XCTAssertLessThan(lua.memoryInUse, 1 << 20)
        expectFailure(lua, "local s = string.rep('x', 2 * 1024 * 1024)", containing: "not enough memory")
    }

    func testSuspendedLimitForHostFunctions() {
        let lua = LuaState(memoryLimit: 1 << 20)
        lua.setBaseGlobal("bigString") {
            lua_pushcfunction(lua.L) { L in
                LuaState.withMemoryLimitSuspended(L!) {
                    let bytes = [UInt8](repeating: 66, count: 2 << 20)
                    bytes.withUnsafeBytes { _ = lua_pushlstring(L, $0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count) }
                }
                return 1
            }
        }
        expectFailure(lua, "local s = bigString() assert(#s == 2 * 1024 * 1024) local t = {} for i = 1, 1e5 do t[i] = {} end",
                      containing: "not enough memory")
        expectSuccess(lua, "assert(#bigString() == 2 * 1024 * 1024)")
    }

    // MARK: cost

    /// Not a pass/fail check: prints what the deadline and the count hook cost.
    func testMeasureTimeoutOverhead() {
        func measure(_ lua: LuaState, _ code: String, times: Int) -> Double {
            guard case .success(let ref) = lua.compile(Array(code.utf8), chunkName: "bench.lua") else { return -1 }
            let event = eventGlobal(of: lua)
            let start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<times {
                lua_pushnil(lua.L)
                lua.pushEnvironment(for: event)
                _ = lua.runToEnd(ref, in: event)
            }
            return Double(DispatchTime.now().uptimeNanoseconds - start) / Double(times)
        }
        let plain = LuaState()
        let bounded = LuaState()
        bounded.timeoutNanos = 1_000_000_000
        let small = "local t = {a = 1, b = 'x'} local n = 0 for i = 1, 10 do n = n + i end if n ~= 55 then error('x') end"
        let loop = "local n = 0 for i = 1, 5e6 do n = n + i % 7 end"
        _ = measure(plain, small, times: 10_000)
        _ = measure(bounded, small, times: 10_000)
        let emptyPlain = measure(plain, "", times: 100_000)
        let emptyBounded = measure(bounded, "", times: 100_000)
        let smallPlain = measure(plain, small, times: 100_000)
        let smallBounded = measure(bounded, small, times: 100_000)
        let loopPlain = measure(plain, loop, times: 2)
        let loopBounded = measure(bounded, loop, times: 2)
        print(String(format: "empty run: %.0f ns plain, %.0f ns with deadline", emptyPlain, emptyBounded))
        print(String(format: "small run: %.0f ns plain, %.0f ns with deadline", smallPlain, smallBounded))
        print(String(format: "5e6-iteration loop: %.1f ms plain, %.1f ms with deadline (%.2fx)",
                     loopPlain / 1e6, loopBounded / 1e6, loopBounded / loopPlain))
    }
}
