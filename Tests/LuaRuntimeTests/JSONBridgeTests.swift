import XCTest
import CLua
import LuaRuntime

final class JSONBridgeTests: XCTestCase {
    private var L: OpaquePointer!

    override func setUp() {
        super.setUp()
        L = luaL_newstate()
        luaL_openlibs(L)
        // Deep structural equality, used to compare values independently of key order.
        run("""
        function deq(a, b)
          if type(a) ~= type(b) then return false end
          if type(a) == "number" then return math.type(a) == math.type(b) and a == b end
          if type(a) ~= "table" then return a == b end
          for k, v in pairs(a) do if not deq(v, b[k]) then return false end end
          for k in pairs(b) do if a[k] == nil then return false end end
          return true
        end
        """)
    }

    override func tearDown() {
        lua_close(L)
        L = nil
        super.tearDown()
    }

    // MARK: helpers

    /// Runs a Lua chunk, failing the test if it raises.
    private func run(_ code: String, file: StaticString = #filePath, line: UInt = #line) {
        let top = lua_gettop(L)
        var status = luaL_loadstring(L, code)
        if status == LUA_OK {
            status = lua_pcallk(L, 0, 0, 0, 0, nil)
        }
        if status != LUA_OK {
            let message = lua_tolstring(L, -1, nil).map { String(cString: $0) } ?? "?"
            XCTFail("Lua error: \(message)", file: file, line: line)
        }
        lua_settop(L, top)
    }

    /// Evaluates a Lua expression and pushes its value.
    private func push(_ expression: String, file: StaticString = #filePath, line: UInt = #line) {
        guard luaL_loadstring(L, "return " + expression) == LUA_OK,
              lua_pcallk(L, 0, 1, 0, 0, nil) == LUA_OK else {
            let message = lua_tolstring(L, -1, nil).map { String(cString: $0) } ?? "?"
            XCTFail("Lua error: \(message)", file: file, line: line)
            return
        }
    }

    /// Encodes the value of a Lua expression. Checks the stack is balanced and that `out`
    /// is untouched on failure.
    private func encode(_ expression: String, file: StaticString = #filePath, line: UInt = #line) -> (json: String?, error: String?) {
        push(expression, file: file, line: line)
        let top = lua_gettop(L)
        let prefix: [UInt8] = Array("prefix".utf8)
        var out = prefix
        let error = JSONBridge.encode(L, index: -1, into: &out)
        XCTAssertEqual(lua_gettop(L), top, "stack not balanced", file: file, line: line)
        lua_settop(L, top - 1)
        if let error {
            XCTAssertEqual(out, prefix, "output modified on failure", file: file, line: line)
            return (nil, error)
        }
        XCTAssertEqual(Array(out.prefix(prefix.count)), prefix, file: file, line: line)
        return (String(decoding: out.dropFirst(prefix.count), as: UTF8.self), nil)
    }

    private func encodeOK(_ expression: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        let (json, error) = encode(expression, file: file, line: line)
        XCTAssertNil(error, file: file, line: line)
        return json ?? ""
    }

    private func decodeBytes(_ bytes: [UInt8]) -> (String?, pushed: Int32) {
        let top = lua_gettop(L)
        let error = bytes.withUnsafeBytes { JSONBridge.decode(L, $0) }
        return (error, lua_gettop(L) - top)
    }

    /// Decodes `json` into the global `v` and runs the Lua `assertions` against it.
    private func decode(_ json: String, _ assertions: String, file: StaticString = #filePath, line: UInt = #line) {
        let (error, pushed) = decodeBytes(Array(json.utf8))
        XCTAssertNil(error, "decoding \(json)", file: file, line: line)
        XCTAssertEqual(pushed, error == nil ? 1 : 0, file: file, line: line)
        guard error == nil else { return }
        lua_setglobal(L, "v")
        run(assertions, file: file, line: line)
    }

    /// Expects decoding to fail, push nothing, and return a message containing `fragment`.
    private func decodeFails(_ json: String, _ fragment: String = "offset", file: StaticString = #filePath, line: UInt = #line) {
        decodeFails(Array(json.utf8), fragment, file: file, line: line)
    }

    private func decodeFails(_ bytes: [UInt8], _ fragment: String = "offset", file: StaticString = #filePath, line: UInt = #line) {
        lua_pushinteger(L, 42)  // sentinel: must still be on top afterwards
        let (error, pushed) = decodeBytes(bytes)
        XCTAssertEqual(pushed, 0, "stack changed for \(String(decoding: bytes, as: UTF8.self))", file: file, line: line)
        XCTAssertEqual(lua_tointegerx(L, -1, nil), 42, file: file, line: line)
        lua_settop(L, -2)
        guard let error else {
            XCTFail("expected an error for \(String(decoding: bytes, as: UTF8.self))", file: file, line: line)
            return
        }
        XCTAssertTrue(error.contains(fragment), "'\(error)' does not contain '\(fragment)'", file: file, line: line)
    }

    /// Encodes the Lua expression, decodes the result again and checks deep equality.
    /// Works on raw bytes so strings that are not valid UTF-8 survive.
    private func roundTrip(_ expression: String, file: StaticString = #filePath, line: UInt = #line) {
        push(expression, file: file, line: line)
        var json: [UInt8] = []
        XCTAssertNil(JSONBridge.encode(L, index: -1, into: &json), file: file, line: line)
        lua_setglobal(L, "original")
        let (error, pushed) = decodeBytes(json)
        XCTAssertNil(error, file: file, line: line)
        XCTAssertEqual(pushed, 1, file: file, line: line)
        guard error == nil else { return }
        lua_setglobal(L, "v")
        run("assert(deq(v, original), 'round trip mismatch')", file: file, line: line)
    }

    // MARK: encoding

    func testEncodeScalars() {
        XCTAssertEqual(encodeOK("nil"), "null")
        XCTAssertEqual(encodeOK("true"), "true")
        XCTAssertEqual(encodeOK("false"), "false")
        XCTAssertEqual(encodeOK("0"), "0")
        XCTAssertEqual(encodeOK("42"), "42")
        XCTAssertEqual(encodeOK("-7"), "-7")
        XCTAssertEqual(encodeOK("math.maxinteger"), "9223372036854775807")
        XCTAssertEqual(encodeOK("math.mininteger"), "-9223372036854775808")
        XCTAssertEqual(encodeOK("'hi'"), "\"hi\"")
        XCTAssertEqual(encodeOK("''"), "\"\"")
    }

    func testEncodeIntegerVersusFloat() {
        XCTAssertEqual(encodeOK("3.0"), "3.0")
        XCTAssertEqual(encodeOK("0.1"), "0.1")
        XCTAssertEqual(encodeOK("-2.5"), "-2.5")
        XCTAssertEqual(encodeOK("1e20"), "1e+20")
        XCTAssertEqual(encodeOK("1e-7"), "1e-07")
        XCTAssertEqual(encodeOK("2^53"), "9007199254740992.0")
        // Floats stay floats and integers stay integers through a round trip.
        decode(encodeOK("{3, 3.0, 0.1, 1e300, -0.0}"), """
        assert(math.type(v[1]) == 'integer' and v[1] == 3)
        assert(math.type(v[2]) == 'float' and v[2] == 3.0)
        assert(v[3] == 0.1 and v[4] == 1e300 and math.type(v[5]) == 'float')
        """)
    }

    func testEncodeNaNAndInfinityFail() {
        XCTAssertEqual(encode("0/0").error, "cannot encode NaN or infinity")
        XCTAssertEqual(encode("math.huge").error, "cannot encode NaN or infinity")
        XCTAssertEqual(encode("-math.huge").error, "cannot encode NaN or infinity")
        XCTAssertEqual(encode("{a = {1, 2, 0/0}}").error, "cannot encode NaN or infinity")
    }

    func testEncodeEscaping() {
        XCTAssertEqual(encodeOK(#"'a"b\\c'"#), #""a\"b\\c""#)
        XCTAssertEqual(encodeOK(#"'\n\r\t\b\f'"#), #""\n\r\t\b\f""#)
        XCTAssertEqual(encodeOK(#"'\0\1\31\127'"#), "\"\\u0000\\u0001\\u001f\u{7F}\"")
        XCTAssertEqual(encodeOK("'/'"), "\"/\"")
        // UTF-8 and arbitrary high bytes pass through unchanged.
        XCTAssertEqual(encodeOK("'héllo €'"), "\"héllo €\"")
        push(#"'\255\128x'"#)
        var out: [UInt8] = []
        XCTAssertNil(JSONBridge.encode(L, index: -1, into: &out))
        lua_settop(L, -2)
        XCTAssertEqual(out, [0x22, 0xFF, 0x80, 0x78, 0x22])
        roundTrip(#"'quote " backslash \\ nl \n ctl \1\2\31 del \127 high \200'"#)
    }

    func testEncodeArraysAndObjects() {
        XCTAssertEqual(encodeOK("{}"), "{}")
        XCTAssertEqual(encodeOK("{1, 2, 3}"), "[1,2,3]")
        XCTAssertEqual(encodeOK("{'a', true, false}"), #"["a",true,false]"#)
        XCTAssertEqual(encodeOK("{[1] = 'x', [2] = 'y'}"), #"["x","y"]"#)
        XCTAssertEqual(encodeOK("{a = 1}"), #"{"a":1}"#)
        // Not exactly 1..n: objects with number keys as strings.
        XCTAssertEqual(encodeOK("{[5] = true}"), #"{"5":true}"#)
        XCTAssertEqual(encodeOK("{[0] = 1}"), #"{"0":1}"#)
        XCTAssertEqual(encodeOK("{[-3] = 1}"), #"{"-3":1}"#)
        XCTAssertEqual(encodeOK("{[1.5] = 1}"), #"{"1.5":1}"#)
        XCTAssertEqual(encodeOK("{[2.0] = 1}"), #"{"2":1}"#)  // Lua normalises 2.0 keys to 2
        decode(encodeOK("{1, 2, nil, 4}"), "assert(deq(v, {['1']=1, ['2']=2, ['4']=4}))")
        decode(encodeOK("{1, 2, x = 3}"), "assert(deq(v, {['1']=1, ['2']=2, x=3}))")
        XCTAssertEqual(encode("{[true] = 1}").error, "table key must be a string or number")
        XCTAssertEqual(encode("{[{}] = 1}").error, "table key must be a string or number")
        // Keys get escaped too.
        XCTAssertEqual(encodeOK(#"{['a"\n'] = 1}"#), #"{"a\"\n":1}"#)
    }

    func testEncodeNested() {
        XCTAssertEqual(encodeOK("{{1, {2}}, {}}"), "[[1,[2]],{}]")
        XCTAssertEqual(encodeOK("{a = {b = {c = {1, 'x'}}}}"), #"{"a":{"b":{"c":[1,"x"]}}}"#)
        roundTrip("{name = 'n', list = {1, 2.5, 'three', {x = false}}, empty = {}, s = 'é'}")
        roundTrip("{[1] = {}, [2] = {{}, {{}}}}")
        // Shared (non-cyclic) subtables are fine.
        run("shared = {1, 2}")
        XCTAssertEqual(encodeOK("{shared, shared}"), "[[1,2],[1,2]]")
    }

    func testEncodeUnsupportedTypes() {
        XCTAssertEqual(encode("print").error, "cannot encode a function")
        XCTAssertEqual(encode("{f = function() end}").error, "cannot encode a function")
        XCTAssertEqual(encode("{1, 2, print}").error, "cannot encode a function")
        XCTAssertEqual(encode("coroutine.create(function() end)").error, "cannot encode a thread")
        XCTAssertEqual(encode("io.stdout").error, "cannot encode a userdata")
    }

    func testEncodeDepthLimitAndCycles() {
        run("""
        function nest(n) local t = {} for _ = 1, n do t = {t} end return t end
        """)
        // nest(n) has n + 1 tables.
        XCTAssertEqual(encodeOK("nest(63)"), String(repeating: "[", count: 63) + "{}" + String(repeating: "]", count: 63))
        XCTAssertEqual(encode("nest(64)").error, "table nested too deeply (max 64)")
        XCTAssertEqual(encode("nest(1000)").error, "table nested too deeply (max 64)")
        run("cyc = {} cyc.self = cyc")
        XCTAssertEqual(encode("cyc").error, "cyclic table")
        run("a = {} b = {a} a[1] = b")
        XCTAssertEqual(encode("{x = a}").error, "cyclic table")
    }

    func testEncodeNegativeAndAbsoluteIndices() {
        push("{1}")
        push("'x'")
        var out: [UInt8] = []
        XCTAssertNil(JSONBridge.encode(L, index: -2, into: &out))
        XCTAssertEqual(String(decoding: out, as: UTF8.self), "[1]")
        out.removeAll()
        XCTAssertNil(JSONBridge.encode(L, index: lua_gettop(L), into: &out))
        XCTAssertEqual(String(decoding: out, as: UTF8.self), "\"x\"")
        XCTAssertEqual(lua_gettop(L), 2)
        lua_settop(L, 0)
    }

    // MARK: decoding

    func testDecodeScalars() {
        decode("null", "assert(v == nil)")
        decode("true", "assert(v == true)")
        decode(" false ", "assert(v == false)")
        decode("0", "assert(math.type(v) == 'integer' and v == 0)")
        decode("-0", "assert(math.type(v) == 'integer' and v == 0)")
        decode("123", "assert(math.type(v) == 'integer' and v == 123)")
        decode("-45", "assert(math.type(v) == 'integer' and v == -45)")
        decode("1.5", "assert(math.type(v) == 'float' and v == 1.5)")
        decode("-0.25e2", "assert(math.type(v) == 'float' and v == -25.0)")
        decode("1E3", "assert(math.type(v) == 'float' and v == 1000.0)")
        decode("2e-3", "assert(v == 0.002)")
        decode("1.0", "assert(math.type(v) == 'float' and v == 1.0)")
        decode("\"hello\"", "assert(v == 'hello')")
        decode("\"\"", "assert(v == '')")
        decode("\t\r\n [ ] \n", "assert(type(v) == 'table' and next(v) == nil)")
    }

    func testDecodeIntegerLimits() {
        decode("9223372036854775807", "assert(math.type(v) == 'integer' and v == math.maxinteger)")
        decode("-9223372036854775808", "assert(math.type(v) == 'integer' and v == math.mininteger)")
        decode("9223372036854775808", "assert(math.type(v) == 'float' and v == 2^63)")
        decode("-9223372036854775809", "assert(math.type(v) == 'float' and v == -2^63)")
        decode("123456789012345678901234567890", "assert(math.type(v) == 'float' and v == 1.2345678901234568e29)")
        decodeFails("1e400", "out of range")
    }

    func testDecodeStringEscapes() {
        decode(#""a\"b\\c\/d\be\ff\ng\rh\ti""#, #"assert(v == 'a"b\\c/d\be\ff\ng\rh\ti')"#)
        decode(#""\u0041\u00e9\u20AC\u0000x""#, #"assert(v == 'A\u{e9}\u{20ac}\0x')"#)
        // Surrogate pair: U+1F600.
        decode(#""\ud83d\ude00""#, #"assert(v == '\u{1F600}' and #v == 4)"#)
        decode(#""x\uD834\uDD1Ey""#, #"assert(v == 'x\u{1D11E}y')"#)
        // Raw UTF-8 passes through.
        decode("\"héllo €\"", "assert(v == 'h\\u{e9}llo \\u{20ac}')")
        // Escapes within a longer string keep the surrounding text.
        decode(#""start \"mid\" end""#, #"assert(v == 'start "mid" end')"#)
    }

    func testDecodeArraysAndObjects() {
        decode("[1, \"two\", true, false, 2.5]", """
        assert(#v == 5 and v[1] == 1 and v[2] == 'two' and v[3] == true and v[4] == false and v[5] == 2.5)
        """)
        decode(#"{"a": 1, "b": {"c": [1, {}]}, "": "empty key"}"#, """
        assert(deq(v, {a = 1, b = {c = {1, {}}}, [''] = 'empty key'}))
        """)
        decode(#"{"5": 1}"#, "assert(v['5'] == 1 and v[5] == nil)")
        decode(#"{"k": 1, "k": 2}"#, "assert(v.k == 2)")
        decode("[[[]], [[1]]]", "assert(deq(v, {{{}}, {{1}}}))")
    }

    func testDecodeNullInObjectAndArray() {
        decode(#"{"a": null, "b": 2}"#, "assert(v.b == 2 and v.a == nil and next(v, next(v)) == nil)")
        decode("[null, 2, null, 4]", "assert(v[1] == nil and v[2] == 2 and v[3] == nil and v[4] == 4)")
        decode("[null]", "assert(next(v) == nil)")
    }

    func testDecodeDepthLimit() {
        let ok = String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        decode(ok, "local d = 0 local t = v while t do d = d + 1 t = t[1] end assert(d == 64)")
        let deep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        decodeFails(deep, "nested too deeply (max 64)")
        decodeFails(String(repeating: #"{"a":"#, count: 100_000), "nested too deeply")
        decodeFails(String(repeating: "[", count: 1_000_000), "nested too deeply")
    }

    func testDecodeMalformedInputs() {
        decodeFails("", "unexpected end of input at offset 0")
        decodeFails("   ", "unexpected end of input at offset 3")
        decodeFails("{", "unexpected end of input at offset 1")
        decodeFails("[1,]", "unexpected character ']' at offset 3")
        decodeFails(#"{"a":1,}"#, "unexpected character '}' at offset 7")
        decodeFails("01", "leading zero")
        decodeFails("-01", "leading zero")
        decodeFails("[1.]", "invalid number at offset 1")
        decodeFails("1e", "invalid number")
        decodeFails("-", "invalid number")
        decodeFails(".5", "unexpected character '.'")
        decodeFails("+1", "unexpected character '+'")
        decodeFails("\"\u{01}\"", "control character in string at offset 1")
        decodeFails("\"a\nb\"", "control character")
        decodeFails("tru", "unexpected end of input at offset 3")
        decodeFails("trux", "unexpected character 'x' at offset 3")
        decodeFails("nul", "unexpected end of input")
        decodeFails("True", "unexpected character 'T' at offset 0")
        decodeFails(#"{"a" 1}"#, "unexpected character '1' at offset 5")
        decodeFails(#"{a: 1}"#, "unexpected character 'a' at offset 1")
        decodeFails(#"{"a": 1 "b": 2}"#, "unexpected character '\"' at offset 8")
        decodeFails("[1 2]", "unexpected character '2' at offset 3")
        decodeFails("1 2", "unexpected character '2' at offset 2")
        decodeFails("{} x", "unexpected character 'x' at offset 3")
        decodeFails("\"abc", "unterminated string at offset 0")
        decodeFails(#""abc\"#, "unterminated string")
        decodeFails(#""\x41""#, "invalid escape at offset 1")
        decodeFails(#""\u12""#, "invalid \\u escape")
        decodeFails(#""\u12G4""#, "invalid \\u escape")
        decodeFails(#""\ud83d""#, "lone surrogate at offset 1")
        decodeFails(#""\ud83dx""#, "lone surrogate")
        decodeFails(#""\ud83d\u0041""#, "lone surrogate")
        decodeFails(#""\ude00""#, "lone surrogate at offset 1")
        decodeFails("[\"a\", NaN]", "unexpected character 'N' at offset 6")
        decodeFails("[1, Infinity]", "unexpected character 'I'")
        decodeFails([0xEF, 0xBB, 0xBF, 0x31], "unexpected byte 0xEF at offset 0")
        decodeFails("1\u{0}", "unexpected byte 0x00 at offset 1")
        decodeFails(#"["ok", {"a": [1, 2, {"b": tru}]}]"#, "unexpected character '}'")
    }

    func testDecodeLeavesExistingStackAlone() {
        lua_pushinteger(L, 7)
        let (error, pushed) = decodeBytes(Array(#"{"x": [1, 2]}"#.utf8))
        XCTAssertNil(error)
        XCTAssertEqual(pushed, 1)
        XCTAssertEqual(lua_type(L, -1), LUA_TTABLE)
        XCTAssertEqual(lua_tointegerx(L, -2, nil), 7)
        lua_settop(L, 0)
    }

    func testRoundTrips() {
        roundTrip("{1, 2, 3}")
        roundTrip("{a = 'b', c = {d = {1, 2, {e = true}}}, n = -12, f = 0.5}")
        roundTrip("{['key with \"quotes\"'] = 'value\\n', ['\\0'] = '\\0'}")
        roundTrip("{math.maxinteger, math.mininteger, 1e308, -1e-308, 5e-324}")
        roundTrip("'\\u{10FFFF}\\u{7FF}\\u{800}'")
        roundTrip("{{}, {{}}, {{{}}}}")
    }
}
