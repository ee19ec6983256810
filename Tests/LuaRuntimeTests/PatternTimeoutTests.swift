import XCTest
import CLua
import LuaRuntime

/// The sandbox's string.find, match, gmatch and gsub are Sources/CLuaSupport/patterns.c, a matcher
/// that checks the run's deadline while it works (the count hook cannot interrupt one C call);
/// string.rep is bounded there too. These tests compare it with the standard library, run in a
/// plain `luaL_newstate()` + `luaL_openlibs` state, and check that long matches time out.
///
/// Intended differences from the standard library:
/// - a match still running at the deadline raises "script timed out after N ms" (and sets
///   `lastRunTimedOut`) from inside the call;
/// - string.rep refuses results over 64 MiB with "resulting string too large", unless the memory
///   limit in force is smaller than the result (then it fails with "not enough memory", as
///   before), and returns an empty result at once where the standard one loops n times
///   (string.rep("", 1e15) hangs the standard library);
/// - plain find (the plain flag, or a pattern without magic bytes) searches in linear time, so
///   it is much faster on adversarial input; results are the same.
final class PatternTimeoutTests: XCTestCase {
    // MARK: helpers

    /// The elements 1...#t of the table at `index`, as bytes (the strings are compared exactly).
    private func byteStrings(_ L: OpaquePointer, _ index: Int32) -> [[UInt8]] {
        guard lua_type(L, index) == LUA_TTABLE else { return [] }
        let count = luaL_len(L, index)
        var result: [[UInt8]] = []
        var i: lua_Integer = 1
        while i <= count {
            lua_geti(L, index, i)
            result.append(lua_bytes(L, -1).map { Array($0) } ?? Array("<\(String(cString: luaL_typename(L, -1)))>".utf8))
            lua_pop(L, 1)
            i += 1
        }
        return result
    }

    /// Runs `code` once in a fresh environment of `lua`; returns the run's error, the seconds it
    /// took and the global RESULT (a list of strings) the code left behind.
    private func runSandboxed(_ lua: LuaState, _ code: String, file: StaticString = #filePath, line: UInt = #line)
        -> (failure: String?, seconds: Double, result: [[UInt8]])
    {
        let ref: Int32
        // RESULT is handed back in the event table (a run's globals do not outlive it).
        switch lua.compile(Array("do \(code)\nend event.RESULT = RESULT".utf8), chunkName: "test.lua") {
        case .success(let r): ref = r
        case .failure(let error):
            XCTFail("compile error: \(error.message)", file: file, line: line)
            return (error.message, 0, [])
        }
        defer { lua.release(ref) }
        let L = lua.L
        let event = lua.eventGlobal(named: "event", keepsValue: false)
        let top = lua_gettop(L)
        var result: [[UInt8]] = []
        let start = DispatchTime.now().uptimeNanoseconds
        lua_createtable(L, 0, 1)
        lua_pushvalue(L, -1)
        let eventRef = luaL_ref(L, lua_registryIndex())
        defer { lua.release(eventRef) }
        lua.pushEnvironment(for: event)
        let failure = lua.runToEnd(ref, in: event)
        lua_rawgeti(L, lua_registryIndex(), lua_Integer(eventRef))
        lua_getfield(L, -1, "RESULT")
        result = byteStrings(L, -1)
        lua_pop(L, 2)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        XCTAssertEqual(lua_gettop(L), top, "unbalanced stack", file: file, line: line)
        return (failure, seconds, result)
    }

    /// Runs `code` in a plain state with Lua's own standard library; returns its error and RESULT.
    private func runOriginal(_ code: String) -> (failure: String?, result: [[UInt8]]) {
        guard let L = luaL_newstate() else { return ("cannot create a state", []) }
        defer { lua_close(L) }
        luaL_openlibs(L)
        let bytes = Array(code.utf8)
        let status = bytes.withUnsafeBytes {
            luaL_loadbufferx(L, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count, "@test.lua", "t")
        }
        guard status == LUA_OK, lua_pcall(L, 0, 0, 0) == LUA_OK else {
            return (lua_swiftstring(L, -1) ?? "error", [])
        }
        lua_getglobal(L, "RESULT")
        return (nil, byteStrings(L, -1))
    }

    private func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

    /// Runs `code` in the sandbox with a 200 ms deadline; expects it to time out promptly.
    private func expectTimeout(_ lua: LuaState, _ code: String, file: StaticString = #filePath, line: UInt = #line) {
        lua.timeoutNanos = 200_000_000
        let (failure, seconds, _) = runSandboxed(lua, code, file: file, line: line)
        XCTAssertTrue(failure?.contains("script timed out after 200 ms") == true, failure ?? "no error", file: file, line: line)
        XCTAssertTrue(lua.lastRunTimedOut, "lastRunTimedOut", file: file, line: line)
        XCTAssertGreaterThanOrEqual(seconds, 0.19, file: file, line: line)
        // Every script here would run forever: a generous bound still shows the deadline stopped it,
        // and does not fail because a busy machine was slow to schedule the thread.
        XCTAssertLessThan(seconds, 2.0, "took \(seconds) s", file: file, line: line)
    }

    // MARK: equivalence

    /// Several thousand outcomes (values with their types, or error messages) of find, match,
    /// gmatch, gsub and rep, compared byte for byte with the standard library's.
    func testMatchesTheStandardLibrary() {
        let lua = LuaState()
        lua.timeoutNanos = 60_000_000_000 // armed, so the deadline checks run too
        let mine = runSandboxed(lua, Self.cases)
        XCTAssertNil(mine.failure)
        XCTAssertFalse(lua.lastRunTimedOut)
        let original = runOriginal(Self.cases)
        XCTAssertNil(original.failure)
        XCTAssertGreaterThan(original.result.count, 16_000)
        XCTAssertEqual(mine.result.count, original.result.count)
        var differences = 0
        for (a, b) in zip(mine.result, original.result) where a != b {
            differences += 1
            if differences <= 10 { XCTFail("differs:\n  sandbox:  \(text(a))\n  original: \(text(b))") }
        }
        XCTAssertEqual(differences, 0)
        let errors = original.result.filter { text($0).contains(" -> error ") }.count
        print("pattern equivalence: \(original.result.count) outcomes compared, \(errors) of them errors, \(differences) differences")
    }

    // MARK: timeouts

    func testPathologicalFindTimesOut() {
        let lua = LuaState()
        expectTimeout(lua, #"string.find(string.rep("a", 100000), ".-.-.-.-b")"#)
        // The next run works, and matches as usual.
        lua.timeoutNanos = 200_000_000
        let next = runSandboxed(lua, #"assert(string.find("hello world", "o w") == 5) assert(("abc"):match("b(.)") == "c")"#)
        XCTAssertNil(next.failure)
        XCTAssertFalse(lua.lastRunTimedOut)
    }

    func testEveryMatchingFunctionTimesOut() {
        let lua = LuaState()
        let setup = #"local s = string.rep("a", 100000) "#
        expectTimeout(lua, setup + #"return s:find(".-.-.-.-b")"#)
        expectTimeout(lua, setup + #"return s:match("(.-)(.-)(.-)b")"#)
        expectTimeout(lua, setup + #"for x in s:gmatch(".-.-.-b") do end"#)
        expectTimeout(lua, setup + #"return s:gsub(".-.-.-b", "")"#)
        expectTimeout(lua, setup + #"return string.gsub(s, "a*a*a*a*b", "%0")"#)
        expectTimeout(lua, #"return string.find(string.rep("(", 300000), "%b()")"#)
        expectTimeout(lua, #"return string.find(string.rep("a", 100000), "(a-)%1%1b")"#)
        // Catching the error does not help: the next instruction raises it again.
        expectTimeout(lua, setup + #"while true do pcall(string.find, s, ".-.-.-.-b") end"#)
        expectTimeout(lua, setup + #"while true do pcall(s.match, s, ".-.-.-.-b") end"#)
        expectTimeout(lua, setup + #"""
        local co = coroutine.wrap(function() return s:find(".-.-.-.-b") end)
        while true do pcall(co) end
        """#)
        lua.timeoutNanos = 200_000_000
        XCTAssertNil(runSandboxed(lua, "assert(('x'):rep(3) == 'xxx')").failure)
    }

    func testLongMatchWithoutDeadlineIsNotInterrupted() {
        let lua = LuaState()
        lua.timeoutNanos = 0
        let (failure, _, _) = runSandboxed(lua, #"assert(not string.find(string.rep("a", 300), ".-.-b"))"#)
        XCTAssertNil(failure)
        XCTAssertFalse(lua.lastRunTimedOut)
    }

    func testReplacementFunctionIsStoppedByTheHook() {
        let lua = LuaState()
        expectTimeout(lua, #"string.gsub("abc", "%w", function(c) while true do end end)"#)
        expectTimeout(lua, #"string.gsub("abc", "%w", function(c) while true do pcall(string.rep, c, 2) end end)"#)
        expectTimeout(lua, #"""
        string.gsub("abc", "%w", setmetatable({}, {__index = function() while true do end end}))
        """#)
    }

    // MARK: speed

    /// gmatch over a 1 MiB subject, against the standard library in a plain state. The sandbox
    /// is measured twice: without a deadline (the matchers compared alone) and with one, where the
    /// count hook also slows down every Lua instruction of the loop around gmatch. The match counts
    /// must agree; the timings are printed for the record, not asserted: on a loaded CI machine
    /// they are noise, and speed is judged by benchmarks.
    func testGmatchOverOneMebibyte() {
        let bench = #"""
        local words, seed = {}, 7
        for i = 1, 200000 do
          seed = (seed * 1103515245 + 12345) % 2147483648
          words[i] = ("abcdefghij"):sub(1, seed % 9 + 1)
        end
        local s = table.concat(words, " "):sub(1, 1 << 20)
        assert(#s == 1 << 20)
        RESULT = {}
        for _, p in ipairs{"%a+", "(%a+) (%a)", "[^ ]+", "%f[%w]%w+", "j"} do
          local best, n = math.huge, 0
          for _ = 1, 5 do
            local t = os.clock()
            n = 0
            for _ in s:gmatch(p) do n = n + 1 end
            best = math.min(best, os.clock() - t)
          end
          RESULT[#RESULT + 1] = p .. "\t" .. n .. "\t" .. best
        end
        """#
        let original = runOriginal(bench)
        XCTAssertNil(original.failure)
        XCTAssertEqual(original.result.count, 5)
        for deadline in [false, true] {
            let lua = LuaState()
            lua.timeoutNanos = deadline ? 60_000_000_000 : 0
            let mine = runSandboxed(lua, bench)
            XCTAssertNil(mine.failure)
            XCTAssertEqual(mine.result.count, 5)
            let label = deadline ? "sandbox with deadline" : "sandbox without deadline"
            var mineTotal = 0.0, originalTotal = 0.0
            for (a, b) in zip(mine.result, original.result) {
                let x = text(a).split(separator: "\t"), y = text(b).split(separator: "\t")
                XCTAssertEqual(x.dropLast(), y.dropLast(), "match counts differ")
                let t1 = Double(x.last!) ?? .nan, t2 = Double(y.last!) ?? .nan
                mineTotal += t1
                originalTotal += t2
                print(String(format: "gmatch \"%@\" over 1 MiB (%@ matches): %.1f ms %@, %.1f ms standard (%.2fx)",
                             String(x[0]), String(x[1]), t1 * 1000, label, t2 * 1000, t1 / t2))
            }
            print(String(format: "gmatch over 1 MiB, all patterns, %@: %.2fx the standard library's time", label, mineTotal / originalTotal))
        }
    }

    // MARK: string.rep

    func testRepLimits() {
        let lua = LuaState()
        lua.timeoutNanos = 1_000_000_000
        let checks = #"""
        assert(string.rep("", 1e15) == "" and string.rep("", 1e15, "") == "")
        assert(string.rep("ab", 3, ",") == "ab,ab,ab" and string.rep("x", 0) == "")
        assert(#string.rep("x", 64 * 1024 * 1024) == 64 * 1024 * 1024)
        local ok, e = pcall(string.rep, "x", 64 * 1024 * 1024 + 1)
        assert(not ok and e:find("resulting string too large"), e)
        ok, e = pcall(string.rep, "ab", 1e9, ",")
        assert(not ok and e:find("resulting string too large"), e)
        """#
        // A rep that looped 1e15 times would hit the 1 s deadline and fail here.
        let (failure, _, _) = runSandboxed(lua, checks)
        XCTAssertNil(failure)
        // Under a memory limit smaller than the result, the allocation fails as before.
        let limited = LuaState(memoryLimit: 16 << 20)
        let (limitedFailure, _, _) = runSandboxed(limited, #"""
        local ok, e = pcall(string.rep, "x", 1e9)
        assert(not ok and e:find("not enough memory"), e)
        ok, e = pcall(string.rep, "x", 20 * 1024 * 1024)
        assert(not ok and e:find("not enough memory"), e)
        """#)
        XCTAssertNil(limitedFailure)
    }

    // MARK: the equivalence cases

    /// Leaves RESULT: one string per case, "<function> <arguments> -> ok <values>" or "... -> error <message>".
    static let cases = #"""
-- Runs string.find/match/gmatch/gsub/rep on a fixed list of cases plus pseudo-random ones and
-- records every outcome (values with their types, or the error message) in RESULT, one string per case.
local find, match, gmatch, gsub, rep = string.find, string.match, string.gmatch, string.gsub, string.rep
local format, byte, char, concat, pack, unpack = string.format, string.byte, string.char, table.concat, table.pack, table.unpack
local out = {}
RESULT = out

local function ser(...)
  local parts = {}
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    local t = type(v)
    if t == "string" then parts[i] = format("%q", v)
    elseif t == "number" then parts[i] = math.type(v) .. " " .. format("%q", v)
    elseif t == "table" or t == "function" then parts[i] = t
    else parts[i] = tostring(v) end
  end
  return concat(parts, ", ")
end

local function record(label, ok, ...)
  out[#out + 1] = label .. " -> " .. (ok and "ok " or "error ") .. ser(...)
end

local function gmatch_all(s, p, init)
  local it = gmatch(s, p, init)
  local items = {}
  for _ = 1, 200 do
    local r = pack(it())
    if r[1] == nil then break end
    items[#items + 1] = "{" .. ser(unpack(r, 1, r.n)) .. "}"
  end
  return concat(items, " ")
end

-- every function on one subject and pattern
local function all(s, p, init)
  local label = ser(s, p, init)
  record("find " .. label, pcall(find, s, p, init))
  record("match " .. label, pcall(match, s, p, init))
  record("gmatch " .. label, pcall(gmatch_all, s, p, init))
  record("gsub " .. label, pcall(gsub, s, p, "<%0>"))
end

local function call(name, f, ...)
  record(name .. " " .. ser(...), pcall(f, ...))
end

-- 1. character classes, on all 256 bytes
local bytes = {}
for i = 0, 255 do bytes[#bytes + 1] = char(i) end
local all256 = concat(bytes)
for _, c in ipairs{"a", "c", "d", "g", "l", "p", "s", "u", "w", "x"} do
  for _, k in ipairs{c, c:upper()} do
    call("class", gsub, all256, "%" .. k, "")
    call("class+", gsub, all256, "%" .. k .. "+", "#")
    call("set", gsub, all256, "[%" .. k .. "_]", "")
    call("negset", gsub, all256, "[^%" .. k .. "]", "")
  end
end
for _, k in ipairs{".", "%", "]", "[", "-", "(", ")", "^", "$", "*", "z", "Z", "q", "1", "0", "\0", "\255"} do
  call("escape", find, all256, "%" .. k)
  call("escape-set", gsub, all256, "[%" .. k .. "]", "")
end
call("dot", gsub, all256, ".", "x")

-- 2. fixed cases
local subjects = {
  "", "a", "aaa", "hello world", "  padded  ", "key = value", "THE (quick) fox", "f(a(b)c)d",
  "x = [[long]] y", "a,b,,c", "2024-01-15T10:20:30Z", "abc\0def\0", "\0", "$100 and 50%",
  "THE (quick) brown fox jumps over the lazy dog", "aAbBcC123", "one two  three   four",
  "[[x]]", "^start", "end$", "a.b.c", "%d%s", "ééé ü", "\n\t line \r\n",
}
local patterns = {
  "", "a", "a*", "a+", "a-", "a?", ".", ".-", ".*", "^a", "a$", "^$", "^", "$", "$$", "a$b",
  "%a+", "%d+", "%s*", "%w+", "%u%l+", "%p", "%x+", "%S+", "%A+", "%D", "%W", "%L+",
  "[abc]", "[^abc]+", "[a-c]+", "[%a_][%w_]*", "[]]", "[^]]+", "[a-]", "[-a]", "[%-]", "[%]]",
  "[a%-z]+", "[%d-]+", "[.]", "[%.]", "[^%s]+", "[]a-]+", "[a-c-e]+", "[\0-\31]", "[\128-\255]+",
  "(a)", "(a*)", "()", "()a()", "(%a+)%s*=%s*(%a+)", "((a)(b))", "(h)(e)(l)(l)(o)", "(.-)%s",
  "(.)%1", "(%a)%1", "(a*(.)%w(%s*))", "()(.)()", "(()a)", "%((%a+)%)",
  "%b()", "%b[]", "%b%%", "x%b[]", "%bxy", "%b))", "%b((",
  "%f[%w]%w+", "%f[%W]", "%f[%a]", "%f[^%z]", "%f[%s]", "%f[\0]", "%f[%l]%a", "%f[a-z]",
  "^(%w+)", "(%w+)$", "^%s*(.-)%s*$", "%s+$", "a-b", "a.-c", "a.*c",
  "%$%d+", "%%", "50%%", "\0", "[\0]", "%z", "b%$", "$100", "[$]%d+",
  "^^", "^^start", "end%$", "end$$", "x*$", "[^%c]+",
  -- malformed or error-raising
  "%", "a%", "[a", "[^", "[", "[%", "[a%", "%f", "%fa", "%f[a", "%b", "%ba", "(", "a(", ")", "a)",
  "(()", "%1", "(a)%2", "(a%1)", "%0", "(a)%0", "((a)%2)", "(()%1)", "(a)(b)%3",
}
local inits = {nil, 1, 2, 0, -1, -3, -100, 5, 100}
for _, s in ipairs(subjects) do
  for _, p in ipairs(patterns) do all(s, p) end
end
for _, s in ipairs{"hello world", "", "aaa", "a,b,,c"} do
  for i = 1, #inits do
    local init = inits[i]
    for _, p in ipairs{"", "o", "l+", "^h", "^", "(o)", "()", "%w*", ".-", "x*"} do all(s, p, init) end
    call("gmatch-init", gmatch_all, s, "()", init)
  end
end

-- find: plain flag and patterns without magic bytes
for _, args in ipairs{
  {"a.b", ".", 1, true}, {"a.b", ".", 1, false}, {"a.b", ".", 1, nil}, {"a+b", "+", 1, true},
  {"a+b", "a+", 1, true}, {"a)b", ")"}, {"a]b", "]"}, {"a(b", "(", 1, true}, {"a(b", "("},
  {"abc", "", 10, true}, {"abc", "", 4, true}, {"abc", "", 3}, {"abc", "c", -1, true},
  {"a\0b", "\0"}, {"a\0b", "\0b", 1, true}, {"aaab", "aab"}, {"ab", "abc"}, {"abc", "bc", -2},
  {"x^y", "^y", 1, true}, {"x^y", "^y"}, {"x%y", "%", 1, 1}, {"x%y", "%", 1, "yes"},
  {"abcabc", "b", -4}, {"abc", "b", 0}, {"abc", "b", 4}, {"abc", "", 5},
} do
  call("find", find, unpack(args, 1, 4))
end

-- argument conversions and argument errors
call("find-num", find, 12345, 3)
call("find-num", find, 12345, 34, -3)
call("match-num", match, 1.5, "%.")
call("gsub-num", gsub, 1234, 2, 9)
call("gsub-num", gsub, "abc", "b", 7.25)
call("find-init-float", find, "abc", "b", 2.0)
call("find-init-frac", find, "abc", "b", 1.5)
call("find-init-str", find, "abc", "b", "2")
call("find-init-bad", find, "abc", "b", "x")
call("find-bad", find, "abc", {})
call("find-bad", find, nil, "a")
call("match-bad", match, "abc")
call("gmatch-bad", gmatch, "abc")
call("gmatch-bad", gmatch, "abc", "a", "z")
call("gsub-bad", gsub, "abc", "a")
call("gsub-bad", gsub, "abc", "a", true)
call("gsub-bad", gsub, "abc", "a", "x", "y")
call("gsub-bad", gsub, "abc", "a", "x", 1.5)
call("gsub-bad", gsub, {}, "a", "x")
call("rep-bad", rep, "x")
call("rep-bad", rep, "x", 1.5)
call("rep-bad", rep, "x", 2, {})

-- 3. gsub replacements
local gsubs = {
  {"hello world", "o", "0"}, {"hello world", "(o)", "[%1]"}, {"hello world", "l+", "%0%0"},
  {"hello world", "(h)(e)", "%2%1"}, {"hello", "", "-"}, {"hello", "x*", "-"}, {"abc", ".-", "-"},
  {"abc", "%w", "%%"}, {"abc", "%w", "%1"}, {"abc", "%w", "%2"}, {"abc", "(%w)", "%2"},
  {"abc", "%w", "%"}, {"abc", "%w", "%x"}, {"abc", "%w", "a%"}, {"abc", "%w", "%9"},
  {"abc", "()", "%1"}, {"abc", "()b()", "%2-%1"}, {"abc", "(a", "x"}, {"abc", "(a", "%1"},
  {"abc", "(a", "%0"}, {"abc", "b", "\0%0\0"}, {"abc", "b", "%\0"}, {"abc", "b", 42},
  {"abc", "b", 4.5}, {"abc", "b", ""}, {"abc", "^a", "x"}, {"aaa", "^a", "x"}, {"abc", "^", "x"},
  {"abc", "$", "x"}, {"abc", "^$", "x"}, {"", "^$", "x"}, {"", "", "x"}, {"a b c", "%s*", "_"},
  {"hello world from lua", "(%w+)", "<%1>", 2}, {"abc", "%w", "x", 0}, {"abc", "%w", "x", -1},
  {"abc", "%w", "x", 100}, {"abc", "", "-", 2}, {"abc", "%w", "x", 2.0},
  {"THE (quick) fox", "%f[%a]%a+", "%0!"}, {"x = 1, y = 2", "(%w+) = (%w+)", "%2 = %1"},
  {"$name is $age", "%$(%w+)", "%%%1"}, {"a.b", "%.", "%%"},
}
for _, g in ipairs(gsubs) do call("gsub", gsub, unpack(g, 1, 4)) end

local tbl = {hello = "HI", world = false, from = 12, lua = 1.5, x = {}, a = "A", b = true}
for _, g in ipairs{
  {"hello world from lua", "%w+"}, {"hello world from lua", "(%w+)"}, {"a b c", "%w"},
  {"a b c", "()%w"}, {"x y", "%w"}, {"b", "b"}, {"abc", "(a", nil}, {"hello", "(h)(e)"},
} do
  call("gsub-table", gsub, g[1], g[2], tbl)
end
call("gsub-table-index", gsub, "abc", "%w", setmetatable({}, {__index = function(_, k) return k:upper() end}))

local fns = {
  function(...) return ser(...) end,
  function() return nil end,
  function() return false end,
  function(a) return a end,
  function() return 7 end,
  function() return 2.5 end,
  function() return {} end,
  function() return true end,
  function(a) return #a end,
  function() error("boom") end,
  function(a) return a:rep(2) end,
}
for i, fn in ipairs(fns) do
  for _, g in ipairs{
    {"hello world", "%w+"}, {"hello world", "(%w)(%w*)"}, {"abc", "()"}, {"abc", ""}, {"key=val", "(%w+)=(%w+)"},
    {"abc", "(a", nil}, {"", ".*"},
  } do
    record("gsub-fn" .. i .. " " .. ser(g[1], g[2]), pcall(gsub, g[1], g[2], fn))
  end
end
-- a function replacement that uses the matcher itself
call("gsub-nested", gsub, "a1 b22 c333", "(%a)(%d+)", function(l, d)
  return l .. gsub(d, "%d", function(x) return find("0123456789", x, 1, true) end)
end)

-- 4. gmatch details
for _, g in ipairs{
  {"hello world from lua", "%a+"}, {"k1=v1, k2=v2", "(%w+)=(%w+)"}, {"abc", ""}, {"abc", "()"},
  {"abc", "x*"}, {"aXbXc", "[^X]*"}, {"^a^a", "^a"}, {"aaa", "^a"}, {"a,b,,c", "([^,]*)"},
  {"a1b2c3", "%a(%d)"}, {"one two", "()(%w+)()"}, {"abc", "(a"}, {"abc", ")"}, {"abc", "[a"},
} do
  call("gmatch", gmatch_all, g[1], g[2])
  call("gmatch-init2", gmatch_all, g[1], g[2], 2)
  call("gmatch-init-neg", gmatch_all, g[1], g[2], -2)
end
do -- calling the iterator again after the end
  local it = gmatch("ab", ".")
  record("gmatch-after-end", true, it(), it(), it(), it())
  local ok, e = pcall(gmatch("abc", "(a"))
  record("gmatch-error-then", ok, e)
end

-- 5. limits
call("captures-32", find, rep("a", 40), rep("(a)", 32))
call("captures-33", find, rep("a", 40), rep("(a)", 33))
call("captures-40-open", find, "a", rep("(", 40))
call("depth-199", find, rep("a", 300), rep("a?", 199))
call("depth-200", find, rep("a", 300), rep("a?", 200))
call("depth-201", find, rep("a", 300), rep("a?", 201))
call("depth-fail", find, "b", rep("a?", 300))
call("depth-caps", match, rep("a", 300), rep("(a)", 20) .. rep("a?", 170))
call("depth-caps2", match, rep("a", 300), rep("(a)", 20) .. rep("a?", 200))
call("depth-star", find, "xb", rep("a*", 150) .. "b")
call("depth-star2", find, "xb", rep("a-", 250) .. "b")
call("depth-star3", find, "xb", rep("a+", 250) .. "b")
call("depth-nested", match, rep("a", 100), rep("(", 30) .. rep("a", 10) .. rep(")", 30))
call("long-star", find, rep("ab", 5000), "(.*)b")
call("long-minus", find, rep("ab", 5000), "(.-)b$")
call("long-balance", find, "(" .. rep("()", 5000) .. ")", "%b()")

-- 6. string.rep
for _, r in ipairs{
  {"ab", 3}, {"ab", 3, ","}, {"ab", 1, ","}, {"ab", 0}, {"ab", -1}, {"", 5}, {"", 5, "-"},
  {"", 1, "-"}, {"x", 10, ""}, {"abc", 7, "--"}, {"\0", 3, "\0\1"}, {12, 2}, {"a", 2, 3},
  {"x", math.maxinteger}, {"x", 2^31}, {"ab", 2^30},
} do
  call("rep", rep, unpack(r, 1, 3))
end

-- 7. pseudo-random subjects and patterns (a fixed linear congruential generator)
local seed = 20240615
local function rand(n)
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed % n + 1
end
local subjectChars = {"a", "b", "c", "a", "b", " ", "(", ")", "1", "2", "%", "-", "\0", "é"}
local function randomSubject()
  local parts = {}
  for i = 1, rand(12) - 1 do parts[i] = subjectChars[rand(#subjectChars)] end
  return concat(parts)
end
local singles = {
  "a", "b", "c", ".", "%a", "%d", "%s", "%w", "%A", "%p", "[ab]", "[^a]", "[a-c]", "[%d%s]", "%(", "%)",
  " ", "1", "%%", "-", "[%-]", "é",
}
local quantifiers = {"", "", "", "*", "+", "-", "?"}
local specials = {
  "(", ")", "()", "%1", "%2", "%b()", "%bab", "%f[%w]", "%f[%s]", "$", "^", "%", "[", "%f", "%b",
}
local function randomPattern()
  local parts = {}
  local repeats = 0
  if rand(5) == 1 then parts[1] = "^" end
  for _ = 1, rand(6) do
    local r = rand(10)
    if r <= 6 then
      local q = quantifiers[rand(#quantifiers)]
      if q ~= "" then
        repeats = repeats + 1
        if repeats > 3 then q = "" end -- bounds the backtracking
      end
      parts[#parts + 1] = singles[rand(#singles)] .. q
    elseif r <= 9 then
      local o = rand(4)
      if o == 1 then parts[#parts + 1] = "(" .. singles[rand(#singles)] .. ")"
      elseif o == 2 then parts[#parts + 1] = "(" .. singles[rand(#singles)] .. "+)"
      else parts[#parts + 1] = specials[rand(#specials - 5)] end
    else
      parts[#parts + 1] = specials[rand(#specials)]
    end
  end
  if rand(6) == 1 then parts[#parts + 1] = "$" end
  return concat(parts)
end
local randomInits = {nil, nil, nil, 1, 2, -1, -4, 0, 20}
for _ = 1, 600 do
  local s, p = randomSubject(), randomPattern()
  local init = randomInits[rand(#randomInits)]
  local label = ser(s, p, init)
  record("rfind " .. label, pcall(find, s, p, init))
  record("rmatch " .. label, pcall(match, s, p, init))
  record("rgmatch " .. label, pcall(gmatch_all, s, p, init))
  record("rgsub " .. label, pcall(gsub, s, p, "[%0|%1]", rand(4) == 1 and 2 or nil))
  record("rgsubf " .. label, pcall(gsub, s, p, function(...) return ser(...) end))
end

-- 8. method calls go through the string metatable to the same functions
record("methods", true, ("").find == find, ("").match == match, ("").gmatch == gmatch, ("").gsub == gsub, ("").rep == rep)
record("method-calls", pcall(function()
  local s = "key = value; other = thing"
  local k, v = s:match("(%w+) = (%w+)", 5)
  local r, n = s:gsub("(%w+) = (%w+)", "%2=%1")
  local words = {}
  for w in s:gmatch("%a+") do words[#words + 1] = w end
  return k, v, r, n, concat(words, "/"), s:find("=", 1, true), s:find("%s*;%s*"), ("x"):rep(3, ",")
end))
"""#
}
