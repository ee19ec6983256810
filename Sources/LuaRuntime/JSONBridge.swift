import CLua

/// Converts between Lua values and JSON text without going through Foundation.
///
/// Both directions work directly on the Lua stack and on raw UTF-8 bytes, never raise
/// Lua errors (short of a memory error inside Lua itself) and leave the stack balanced
/// when they fail.
public enum JSONBridge {
    /// Maximum nesting depth of tables (encoding) and of arrays/objects (decoding).
    static let maxDepth = 64

    // MARK: - Encoding

    /// Encodes the Lua value at stack index `index` as compact JSON, appending UTF-8 bytes to `out`.
    /// Returns nil on success, or an error message (e.g. "cannot encode a function",
    /// "table nested too deeply (max 64)", "cyclic table").
    /// On failure `out` is restored to its original length and the stack is unchanged.
    public static func encode(_ L: OpaquePointer, index: Int32, into out: inout [UInt8]) -> String? {
        let top = lua_gettop(L)
        let start = out.count
        let absIndex = lua_absindex(L, index)
        let error: String? = withUnsafeTemporaryAllocation(of: UnsafeRawPointer?.self, capacity: maxDepth) { ancestors in
            encodeValue(L, absIndex, depth: 0, ancestors: ancestors, out: &out)
        }
        if let error {
            lua_settop(L, top)
            out.removeSubrange(start...)
            return error
        }
        return nil
    }

    /// Encodes the value at the absolute stack index `idx`. May leave extra values on the
    /// stack when it fails (the caller restores the top).
    private static func encodeValue(
        _ L: OpaquePointer, _ idx: Int32, depth: Int,
        ancestors: UnsafeMutableBufferPointer<UnsafeRawPointer?>, out: inout [UInt8]
    ) -> String? {
        switch lua_type(L, idx) {
        case LUA_TNIL, LUA_TNONE:
            appendASCII("null", to: &out)
            return nil
        case LUA_TBOOLEAN:
            appendASCII(lua_toboolean(L, idx) != 0 ? "true" : "false", to: &out)
            return nil
        case LUA_TNUMBER:
            if lua_isinteger(L, idx) != 0 {
                appendInteger(lua_tointegerx(L, idx, nil), to: &out)
                return nil
            }
            let d = lua_tonumberx(L, idx, nil)
            guard d.isFinite else { return "cannot encode NaN or infinity" }
            appendDouble(d, to: &out)
            return nil
        case LUA_TSTRING:
            appendStringValue(L, idx, to: &out)
            return nil
        case LUA_TTABLE:
            return encodeTable(L, idx, depth: depth + 1, ancestors: ancestors, out: &out)
        case LUA_TFUNCTION:
            return "cannot encode a function"
        case LUA_TUSERDATA, LUA_TLIGHTUSERDATA:
            return "cannot encode a userdata"
        case LUA_TTHREAD:
            return "cannot encode a thread"
        default:
            return "cannot encode a value of unknown type"
        }
    }

    private static func encodeTable(
        _ L: OpaquePointer, _ idx: Int32, depth: Int,
        ancestors: UnsafeMutableBufferPointer<UnsafeRawPointer?>, out: inout [UInt8]
    ) -> String? {
        let identity = lua_topointer(L, idx)
        for i in 0..<(depth - 1) where ancestors[i] == identity {
            return "cyclic table"
        }
        guard depth <= maxDepth else { return "table nested too deeply (max \(maxDepth))" }
        ancestors[depth - 1] = identity
        // key + value + copy of key + child's own needs.
        guard lua_checkstack(L, 4) != 0 else { return "Lua stack overflow while encoding" }

        // First pass: decide between array and object. The table is an array when its keys
        // are exactly the integers 1...n. Stop at the first key that rules that out.
        var count: lua_Integer = 0
        var maxKey: lua_Integer = 0
        var isArray = true
        lua_pushnil(L)
        while lua_next(L, idx) != 0 {
            if lua_type(L, -2) == LUA_TNUMBER && lua_isinteger(L, -2) != 0 {
                let k = lua_tointegerx(L, -2, nil)
                if k >= 1 {
                    count += 1
                    if k > maxKey { maxKey = k }
                    lua_settop(L, -2)  // pop value, keep key for lua_next
                    continue
                }
            }
            isArray = false
            lua_settop(L, -3)  // pop key and value, abandon the traversal
            break
        }
        if count == 0 { isArray = false }

        if isArray && maxKey == count {
            out.append(UInt8(ascii: "["))
            var i: lua_Integer = 1
            while i <= count {
                if i > 1 { out.append(UInt8(ascii: ",")) }
                lua_rawgeti(L, idx, i)
                if let error = encodeValue(L, lua_gettop(L), depth: depth, ancestors: ancestors, out: &out) {
                    return error
                }
                lua_settop(L, -2)
                i += 1
            }
            out.append(UInt8(ascii: "]"))
            return nil
        }

        out.append(UInt8(ascii: "{"))
        var first = true
        lua_pushnil(L)
        while lua_next(L, idx) != 0 {
            // Stack: ... key value. Keys are never converted in place (numbers are
            // formatted by hand), so lua_next sees the original key.
            if first { first = false } else { out.append(UInt8(ascii: ",")) }
            let keyIndex = lua_gettop(L) - 1
            switch lua_type(L, keyIndex) {
            case LUA_TSTRING:
                appendStringValue(L, keyIndex, to: &out)
            case LUA_TNUMBER:
                out.append(UInt8(ascii: "\""))
                if lua_isinteger(L, keyIndex) != 0 {
                    appendInteger(lua_tointegerx(L, keyIndex, nil), to: &out)
                } else {
                    // NaN cannot be a key; infinities are written as "inf" / "-inf".
                    appendDouble(lua_tonumberx(L, keyIndex, nil), to: &out)
                }
                out.append(UInt8(ascii: "\""))
            default:
                return "table key must be a string or number"
            }
            out.append(UInt8(ascii: ":"))
            if let error = encodeValue(L, keyIndex + 1, depth: depth, ancestors: ancestors, out: &out) {
                return error
            }
            lua_settop(L, -2)  // pop value, keep key
        }
        out.append(UInt8(ascii: "}"))
        return nil
    }

    @inline(__always)
    private static func appendASCII(_ s: StaticString, to out: inout [UInt8]) {
        s.withUTF8Buffer { out.append(contentsOf: $0) }
    }

    private static func appendInteger(_ value: Int64, to out: inout [UInt8]) {
        if value >= 0 && value < 10 {
            out.append(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: value))
            return
        }
        // 20 digits + sign is enough for any Int64.
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 24) { buf in
            var magnitude = value.magnitude
            var pos = 24
            repeat {
                pos -= 1
                buf[pos] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude % 10)
                magnitude /= 10
            } while magnitude != 0
            if value < 0 {
                pos -= 1
                buf[pos] = UInt8(ascii: "-")
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: buf[pos..<24]))
        }
    }

    /// Appends the shortest representation that round-trips. Swift's description of a
    /// finite Double ("3.0", "0.1", "1e+20", "5e-324", "-0.0") is already a valid JSON
    /// number, and it keeps floats distinguishable from integers when decoded again.
    private static func appendDouble(_ value: Double, to out: inout [UInt8]) {
        var text = value.description
        text.withUTF8 { out.append(contentsOf: $0) }
    }

    private static func appendStringValue(_ L: OpaquePointer, _ idx: Int32, to out: inout [UInt8]) {
        var length = 0
        guard let chars = lua_tolstring(L, idx, &length) else {
            appendASCII("\"\"", to: &out)
            return
        }
        let bytes = UnsafeBufferPointer(start: UnsafeRawPointer(chars).assumingMemoryBound(to: UInt8.self), count: length)
        appendEscaped(bytes, to: &out)
    }

    private static let hexDigits: StaticString = "0123456789abcdef"

    /// Writes a quoted JSON string. Runs of bytes that need no escaping are copied in bulk;
    /// bytes >= 0x80 are passed through unchanged.
    private static func appendEscaped(_ bytes: UnsafeBufferPointer<UInt8>, to out: inout [UInt8]) {
        // Grow geometrically: reserving exactly count + n on every string would make
        // Array reallocate each time (it does not round up), i.e. quadratic copying.
        let needed = out.count + bytes.count + 8
        if needed > out.capacity {
            out.reserveCapacity(Swift.max(needed, out.capacity &* 2))
        }
        out.append(UInt8(ascii: "\""))
        var runStart = 0
        var i = 0
        let n = bytes.count
        while i < n {
            let c = bytes[i]
            if c >= 0x20 && c != UInt8(ascii: "\"") && c != UInt8(ascii: "\\") {
                i += 1
                continue
            }
            if runStart < i {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<i]))
            }
            out.append(UInt8(ascii: "\\"))
            switch c {
            case UInt8(ascii: "\""): out.append(UInt8(ascii: "\""))
            case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\"))
            case 0x0A: out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(UInt8(ascii: "r"))
            case 0x09: out.append(UInt8(ascii: "t"))
            case 0x08: out.append(UInt8(ascii: "b"))
            case 0x0C: out.append(UInt8(ascii: "f"))
            default:
                out.append(UInt8(ascii: "u"))
                out.append(UInt8(ascii: "0"))
                out.append(UInt8(ascii: "0"))
                hexDigits.withUTF8Buffer { hex in
                    out.append(hex[Int(c >> 4)])
                    out.append(hex[Int(c & 0x0F)])
                }
            }
            i += 1
            runStart = i
        }
        if runStart < n {
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<n]))
        }
        out.append(UInt8(ascii: "\""))
    }

    // MARK: - Decoding

    /// Parses JSON bytes and pushes exactly one Lua value on success (returns nil);
    /// on failure pushes nothing and returns an error message with the byte offset,
    /// e.g. "unexpected character 'x' at offset 7".
    ///
    /// Objects become tables with string keys (members whose value is null are absent),
    /// arrays become tables indexed from 1 (a null leaves a hole, later elements keep
    /// their JSON position). Integer literals that fit in 64 bits become Lua integers,
    /// every other number a float. Bytes >= 0x80 inside strings are copied unchanged.
    public static func decode(_ L: OpaquePointer, _ bytes: UnsafeRawBufferPointer) -> String? {
        let top = lua_gettop(L)
        var parser = Parser(L: L, bytes: bytes.assumingMemoryBound(to: UInt8.self))
        if let error = parser.parseDocument() {
            lua_settop(L, top)
            return error
        }
        return nil
    }

    private struct Parser {
        let L: OpaquePointer
        let bytes: UnsafeBufferPointer<UInt8>
        var pos = 0
        /// Reused buffer for strings that contain escapes.
        var scratch: [UInt8] = []

        init(L: OpaquePointer, bytes: UnsafeBufferPointer<UInt8>) {
            self.L = L
            self.bytes = bytes
        }

        mutating func parseDocument() -> String? {
            guard lua_checkstack(L, 3) != 0 else { return "Lua stack overflow while decoding" }
            skipWhitespace()
            if let error = parseValue(depth: 0) { return error }
            skipWhitespace()
            if pos < bytes.count { return unexpected() }
            return nil
        }

        @inline(__always)
        mutating func skipWhitespace() {
            while pos < bytes.count {
                switch bytes[pos] {
                case 0x20, 0x09, 0x0A, 0x0D: pos += 1
                default: return
                }
            }
        }

        /// Error for the byte at `pos` (or for the end of input).
        func unexpected() -> String {
            guard pos < bytes.count else { return "unexpected end of input at offset \(pos)" }
            let c = bytes[pos]
            if c > 0x20 && c < 0x7F {
                return "unexpected character '\(Character(Unicode.Scalar(c)))' at offset \(pos)"
            }
            return "unexpected byte 0x\(String(c, radix: 16, uppercase: true).leftPadded(to: 2)) at offset \(pos)"
        }

        /// Parses one value at `pos` (whitespace already skipped) and pushes it.
        /// JSON null pushes nil.
        mutating func parseValue(depth: Int) -> String? {
            guard pos < bytes.count else { return unexpected() }
            switch bytes[pos] {
            case UInt8(ascii: "{"):
                return parseObject(depth: depth + 1)
            case UInt8(ascii: "["):
                return parseArray(depth: depth + 1)
            case UInt8(ascii: "\""):
                return parseString()
            case UInt8(ascii: "t"):
                if let error = expectLiteral("true") { return error }
                lua_pushboolean(L, 1)
                return nil
            case UInt8(ascii: "f"):
                if let error = expectLiteral("false") { return error }
                lua_pushboolean(L, 0)
                return nil
            case UInt8(ascii: "n"):
                if let error = expectLiteral("null") { return error }
                lua_pushnil(L)
                return nil
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return parseNumber()
            default:
                return unexpected()
            }
        }

        mutating func expectLiteral(_ literal: StaticString) -> String? {
            return literal.withUTF8Buffer { word -> String? in
                for c in word {
                    if pos >= bytes.count || bytes[pos] != c { return unexpected() }
                    pos += 1
                }
                return nil
            }
        }

        mutating func parseObject(depth: Int) -> String? {
            guard depth <= JSONBridge.maxDepth else {
                return "nested too deeply (max \(JSONBridge.maxDepth)) at offset \(pos)"
            }
            // table + key + value
            guard lua_checkstack(L, 3) != 0 else { return "Lua stack overflow at offset \(pos)" }
            pos += 1  // '{'
            lua_createtable(L, 0, 0)
            skipWhitespace()
            if pos < bytes.count && bytes[pos] == UInt8(ascii: "}") {
                pos += 1
                return nil
            }
            while true {
                guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else { return unexpected() }
                if let error = parseString() { return error }
                skipWhitespace()
                guard pos < bytes.count, bytes[pos] == UInt8(ascii: ":") else { return unexpected() }
                pos += 1
                skipWhitespace()
                if let error = parseValue(depth: depth) { return error }
                if lua_type(L, -1) == LUA_TNIL {
                    lua_settop(L, -3)  // null member: drop key and nil
                } else {
                    lua_rawset(L, -3)
                }
                skipWhitespace()
                guard pos < bytes.count else { return unexpected() }
                switch bytes[pos] {
                case UInt8(ascii: ","):
                    pos += 1
                    skipWhitespace()
                case UInt8(ascii: "}"):
                    pos += 1
                    return nil
                default:
                    return unexpected()
                }
            }
        }

        mutating func parseArray(depth: Int) -> String? {
            guard depth <= JSONBridge.maxDepth else {
                return "nested too deeply (max \(JSONBridge.maxDepth)) at offset \(pos)"
            }
            guard lua_checkstack(L, 3) != 0 else { return "Lua stack overflow at offset \(pos)" }
            pos += 1  // '['
            lua_createtable(L, 0, 0)
            skipWhitespace()
            if pos < bytes.count && bytes[pos] == UInt8(ascii: "]") {
                pos += 1
                return nil
            }
            var index: lua_Integer = 1
            while true {
                if let error = parseValue(depth: depth) { return error }
                if lua_type(L, -1) == LUA_TNIL {
                    lua_settop(L, -2)  // null element: leave a hole
                } else {
                    lua_rawseti(L, -2, index)
                }
                index += 1
                skipWhitespace()
                guard pos < bytes.count else { return unexpected() }
                switch bytes[pos] {
                case UInt8(ascii: ","):
                    pos += 1
                    skipWhitespace()
                case UInt8(ascii: "]"):
                    pos += 1
                    return nil
                default:
                    return unexpected()
                }
            }
        }

        @inline(__always)
        static func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }

        mutating func parseNumber() -> String? {
            let start = pos
            let n = bytes.count
            var negative = false
            if bytes[pos] == UInt8(ascii: "-") {
                negative = true
                pos += 1
            }
            guard pos < n, Self.isDigit(bytes[pos]) else {
                return "invalid number at offset \(start)"
            }
            // Accumulate the integer part (negatively, so Int64.min fits) while checking overflow.
            var value: Int64 = 0
            var overflow = false
            if bytes[pos] == UInt8(ascii: "0") {
                pos += 1
                if pos < n && Self.isDigit(bytes[pos]) {
                    return "invalid number (leading zero) at offset \(start)"
                }
            } else {
                while pos < n && Self.isDigit(bytes[pos]) {
                    if !overflow {
                        let digit = Int64(bytes[pos] &- UInt8(ascii: "0"))
                        let (m, o1) = value.multipliedReportingOverflow(by: 10)
                        let (s, o2) = m.subtractingReportingOverflow(digit)
                        if o1 || o2 { overflow = true } else { value = s }
                    }
                    pos += 1
                }
            }
            var isFloat = false
            if pos < n && bytes[pos] == UInt8(ascii: ".") {
                isFloat = true
                pos += 1
                guard pos < n, Self.isDigit(bytes[pos]) else { return "invalid number at offset \(start)" }
                while pos < n && Self.isDigit(bytes[pos]) { pos += 1 }
            }
            if pos < n && (bytes[pos] == UInt8(ascii: "e") || bytes[pos] == UInt8(ascii: "E")) {
                isFloat = true
                pos += 1
                if pos < n && (bytes[pos] == UInt8(ascii: "+") || bytes[pos] == UInt8(ascii: "-")) { pos += 1 }
                guard pos < n, Self.isDigit(bytes[pos]) else { return "invalid number at offset \(start)" }
                while pos < n && Self.isDigit(bytes[pos]) { pos += 1 }
            }
            if !isFloat && !overflow {
                if negative {
                    lua_pushinteger(L, value)
                    return nil
                }
                if value != Int64.min {
                    lua_pushinteger(L, -value)
                    return nil
                }
                // 9223372036854775808 does not fit: fall through to a float.
            }
            // The syntax has been validated, so the conversion cannot fail; Double's parser
            // is locale independent (unlike strtod) and correctly rounded.
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<pos]), as: UTF8.self)
            guard let d = Double(text), d.isFinite else {
                return "number out of range at offset \(start)"
            }
            lua_pushnumber(L, d)
            return nil
        }

        /// Parses a string starting at the opening quote and pushes it.
        mutating func parseString() -> String? {
            pos += 1  // opening quote
            let n = bytes.count
            let contentStart = pos
            // Fast path: no escapes, push directly from the input.
            while pos < n {
                let c = bytes[pos]
                if c == UInt8(ascii: "\"") {
                    pushBytes(UnsafeBufferPointer(rebasing: bytes[contentStart..<pos]))
                    pos += 1
                    return nil
                }
                if c == UInt8(ascii: "\\") { break }
                if c < 0x20 { return "control character in string at offset \(pos)" }
                pos += 1
            }
            guard pos < n else { return "unterminated string at offset \(contentStart - 1)" }

            // Slow path: copy into the scratch buffer, decoding escapes.
            scratch.removeAll(keepingCapacity: true)
            scratch.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[contentStart..<pos]))
            var runStart = pos
            while pos < n {
                let c = bytes[pos]
                if c == UInt8(ascii: "\"") {
                    scratch.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<pos]))
                    pos += 1
                    scratch.withUnsafeBufferPointer { pushBytes($0) }
                    return nil
                }
                if c < 0x20 { return "control character in string at offset \(pos)" }
                if c != UInt8(ascii: "\\") {
                    pos += 1
                    continue
                }
                scratch.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<pos]))
                let escapeStart = pos
                pos += 1
                guard pos < n else { break }
                switch bytes[pos] {
                case UInt8(ascii: "\""): scratch.append(UInt8(ascii: "\""))
                case UInt8(ascii: "\\"): scratch.append(UInt8(ascii: "\\"))
                case UInt8(ascii: "/"): scratch.append(UInt8(ascii: "/"))
                case UInt8(ascii: "b"): scratch.append(0x08)
                case UInt8(ascii: "f"): scratch.append(0x0C)
                case UInt8(ascii: "n"): scratch.append(0x0A)
                case UInt8(ascii: "r"): scratch.append(0x0D)
                case UInt8(ascii: "t"): scratch.append(0x09)
                case UInt8(ascii: "u"):
                    pos += 1
                    guard var scalar = readHex4() else { return "invalid \\u escape at offset \(escapeStart)" }
                    if scalar >= 0xDC00 && scalar <= 0xDFFF {
                        return "lone surrogate at offset \(escapeStart)"
                    }
                    if scalar >= 0xD800 && scalar <= 0xDBFF {
                        // Must be followed by \u and a low surrogate.
                        guard pos + 1 < n, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") else {
                            return "lone surrogate at offset \(escapeStart)"
                        }
                        pos += 2
                        guard let low = readHex4() else { return "invalid \\u escape at offset \(pos - 2)" }
                        guard low >= 0xDC00 && low <= 0xDFFF else {
                            return "lone surrogate at offset \(escapeStart)"
                        }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    appendUTF8(scalar)
                    runStart = pos
                    continue
                default:
                    return "invalid escape at offset \(escapeStart)"
                }
                pos += 1
                runStart = pos
            }
            return "unterminated string at offset \(contentStart - 1)"
        }

        /// Reads four hex digits at `pos`, advancing past them.
        mutating func readHex4() -> UInt32? {
            guard pos + 4 <= bytes.count else { return nil }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = bytes[pos]
                let d: UInt8
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
                default: return nil
                }
                v = v << 4 | UInt32(d)
                pos += 1
            }
            return v
        }

        mutating func appendUTF8(_ scalar: UInt32) {
            switch scalar {
            case 0..<0x80:
                scratch.append(UInt8(scalar))
            case 0x80..<0x800:
                scratch.append(UInt8(0xC0 | (scalar >> 6)))
                scratch.append(UInt8(0x80 | (scalar & 0x3F)))
            case 0x800..<0x10000:
                scratch.append(UInt8(0xE0 | (scalar >> 12)))
                scratch.append(UInt8(0x80 | ((scalar >> 6) & 0x3F)))
                scratch.append(UInt8(0x80 | (scalar & 0x3F)))
            default:
                scratch.append(UInt8(0xF0 | (scalar >> 18)))
                scratch.append(UInt8(0x80 | ((scalar >> 12) & 0x3F)))
                scratch.append(UInt8(0x80 | ((scalar >> 6) & 0x3F)))
                scratch.append(UInt8(0x80 | (scalar & 0x3F)))
            }
        }

        func pushBytes(_ buffer: UnsafeBufferPointer<UInt8>) {
            if buffer.isEmpty {
                lua_pushlstring(L, "", 0)
                return
            }
            buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: buffer.count) {
                _ = lua_pushlstring(L, $0, buffer.count)
            }
        }
    }
}

private extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
