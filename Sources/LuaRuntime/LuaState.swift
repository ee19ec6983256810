import CLua

/// The Lua C API macros that do not import into Swift, as the functions behind them.
@inline(__always) public func lua_pop(_ L: OpaquePointer, _ n: Int32) { lua_settop(L, -n - 1) }
@inline(__always) public func lua_newtable(_ L: OpaquePointer) { lua_createtable(L, 0, 0) }
@inline(__always) public func lua_pushcfunction(_ L: OpaquePointer, _ f: lua_CFunction) { lua_pushcclosure(L, f, 0) }
@inline(__always) public func lua_isnoneornil(_ L: OpaquePointer, _ i: Int32) -> Bool { lua_type(L, i) <= LUA_TNIL }
@inline(__always) public func lua_pcall(_ L: OpaquePointer, _ nargs: Int32, _ nresults: Int32, _ msgh: Int32) -> Int32 {
    lua_pcallk(L, nargs, nresults, msgh, 0, nil)
}
@inline(__always) public func luaL_typename(_ L: OpaquePointer, _ i: Int32) -> UnsafePointer<CChar> { lua_typename(L, lua_type(L, i)) }
@inline(__always) public func lua_registryIndex() -> Int32 { -LUAI_MAXSTACK - 1000 }

/// Pushes a Swift string without going through a C string (embedded NULs survive).
@inline(__always)
public func lua_pushswift(_ L: OpaquePointer, _ s: String) {
    var s = s
    s.withUTF8 { buffer in _ = lua_pushlstring(L, buffer.baseAddress.map { UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self) }, buffer.count) }
}

/// The string at `index` (numbers are converted as Lua's tostring would), or nil for other types.
public func lua_swiftstring(_ L: OpaquePointer, _ index: Int32) -> String? {
    let t = lua_type(L, index)
    guard t == LUA_TSTRING || t == LUA_TNUMBER else { return nil }
    var length = 0
    guard let p = lua_tolstring(L, index, &length) else { return nil }
    return String(decoding: UnsafeRawBufferPointer(start: p, count: length), as: UTF8.self)
}

/// The bytes of the string at `index`, without copying; valid while the value stays on the stack.
public func lua_bytes(_ L: OpaquePointer, _ index: Int32) -> UnsafeRawBufferPointer? {
    guard lua_type(L, index) == LUA_TSTRING else { return nil }
    var length = 0
    guard let p = lua_tolstring(L, index, &length) else { return nil }
    return UnsafeRawBufferPointer(start: p, count: length)
}

public struct LuaError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// One Lua state with a sandboxed base environment. Each script run gets a fresh global table whose
/// misses fall through to the shared base, so globals set by one run are never seen by another.
public final class LuaState {
    public let L: OpaquePointer
    private let envMetatableRef: Int32
    private let tracebackRef: Int32

    public init() {
        guard let state = luaL_newstate() else { fatalError("cannot create a Lua state") }
        L = state
        luaL_openlibs(L)
        // Every event makes a few short-lived tables: the generational collector suits that best.
        // (lua_gc is variadic and does not import, so ask through Lua itself.)
        if luaL_loadstring(L, "collectgarbage('generational')") == LUA_OK { _ = lua_pcall(L, 0, 0, 0) }
        // The base environment is the standard globals minus what a sandboxed script must not reach.
        lua_rawgeti(L, lua_registryIndex(), lua_Integer(LUA_RIDX_GLOBALS))
        for name in ["io", "package", "require", "debug", "dofile", "loadfile"] {
            lua_pushnil(L)
            lua_setfield(L, -2, name)
        }
        lua_getfield(L, -1, "os")
        for name in ["execute", "exit", "getenv", "remove", "rename", "tmpname", "setlocale"] {
            lua_pushnil(L)
            lua_setfield(L, -2, name)
        }
        lua_pop(L, 1)
        // Metatable for per-run environments: reads fall back to the base globals.
        lua_createtable(L, 0, 1)
        lua_pushvalue(L, -2)
        lua_setfield(L, -2, "__index")
        envMetatableRef = luaL_ref(L, lua_registryIndex())
        lua_pop(L, 1)
        lua_pushcfunction(L) { L in
            let message = lua_tolstring(L!, 1, nil).map { String(cString: $0) } ?? "(error object is a \(String(cString: luaL_typename(L!, 1))) value)"
            luaL_traceback(L, L, message, 1)
            return 1
        }
        tracebackRef = luaL_ref(L, lua_registryIndex())
    }

    deinit { lua_close(L) }

    /// A pointer-sized slot inside the state, for the owner to find itself from C callbacks.
    public var extraSpace: UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(L) - MemoryLayout<UnsafeRawPointer>.size
    }

    /// Sets a global in the shared base environment (visible to every run, read-only by convention).
    public func setBaseGlobal(_ name: String, _ push: () -> Void) {
        lua_rawgeti(L, lua_registryIndex(), lua_Integer(LUA_RIDX_GLOBALS))
        push()
        lua_setfield(L, -2, name)
        lua_pop(L, 1)
    }

    /// Compiles a text chunk; returns a registry reference to the function.
    public func compile(_ source: [UInt8], chunkName: String) -> Result<Int32, LuaError> {
        let status = source.withUnsafeBytes { buffer in
            luaL_loadbufferx(L, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), buffer.count, "@" + chunkName, "t")
        }
        if status != LUA_OK {
            let message = lua_swiftstring(L, -1) ?? "unknown compile error"
            lua_pop(L, 1)
            return .failure(LuaError(message: message))
        }
        return .success(luaL_ref(L, lua_registryIndex()))
    }

    public func release(_ ref: Int32) { luaL_unref(L, lua_registryIndex(), ref) }

    /// Pushes a fresh, empty global environment for one run.
    public func pushFreshEnvironment(slots: Int32 = 2) {
        lua_createtable(L, 0, slots)
        lua_rawgeti(L, lua_registryIndex(), lua_Integer(envMetatableRef))
        lua_setmetatable(L, -2)
    }

    /// Runs the compiled chunk `ref` with the environment on top of the stack (which is consumed).
    /// `after` runs once the chunk succeeded, given the environment's stack index, for handler-style
    /// scripts that define a function to call; it returns an error message or nil.
    /// Returns the error message with traceback on failure.
    public func run(_ ref: Int32, after: ((Int32) -> String?)? = nil) -> String? {
        let base = lua_gettop(L) - 1
        lua_rawgeti(L, lua_registryIndex(), lua_Integer(tracebackRef))  // base+2
        lua_rawgeti(L, lua_registryIndex(), lua_Integer(ref))  // base+3
        lua_pushvalue(L, base + 1)
        lua_setupvalue(L, -2, 1)
        var failure: String?
        if lua_pcall(L, 0, 0, base + 2) != LUA_OK {
            failure = lua_swiftstring(L, -1) ?? "error object is not a string"
        } else if let after {
            failure = after(base + 1)
        }
        lua_settop(L, base)
        return failure
    }

    /// Calls the function at -2 with one argument at -1 under the traceback handler; pops both.
    public func protectedCall() -> String? {
        lua_rawgeti(L, lua_registryIndex(), lua_Integer(tracebackRef))
        lua_rotate(L, -3, 1)
        let handler = lua_gettop(L) - 2
        var failure: String?
        if lua_pcall(L, 1, 0, handler) != LUA_OK {
            failure = lua_swiftstring(L, -1) ?? "error object is not a string"
            lua_pop(L, 1)
        }
        lua_pop(L, 1)
        return failure
    }
}
