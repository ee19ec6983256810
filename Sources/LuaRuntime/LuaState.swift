import CLua
import CLuaSupport

/// The Lua C API macros that do not import into Swift, as the functions behind them.
@inlinable @inline(__always) public func lua_pop(_ L: OpaquePointer, _ n: Int32) { lua_settop(L, -n - 1) }
@inlinable @inline(__always) public func lua_newtable(_ L: OpaquePointer) { lua_createtable(L, 0, 0) }
@inlinable @inline(__always) public func lua_pushcfunction(_ L: OpaquePointer, _ f: lua_CFunction) { lua_pushcclosure(L, f, 0) }
@inlinable @inline(__always) public func lua_isnoneornil(_ L: OpaquePointer, _ i: Int32) -> Bool { lua_type(L, i) <= LUA_TNIL }
@inlinable @inline(__always) public func lua_pcall(_ L: OpaquePointer, _ nargs: Int32, _ nresults: Int32, _ msgh: Int32) -> Int32 {
    lua_pcallk(L, nargs, nresults, msgh, 0, nil)
}
@inlinable @inline(__always) public func luaL_typename(_ L: OpaquePointer, _ i: Int32) -> UnsafePointer<CChar> { lua_typename(L, lua_type(L, i)) }
@inlinable @inline(__always) public func lua_registryIndex() -> Int32 { -LUAI_MAXSTACK - 1000 }
@inlinable @inline(__always) public func lua_replace(_ L: OpaquePointer, _ index: Int32) {
    lua_copy(L, -1, index)
    lua_settop(L, -2)
}

/// Pushes a Swift string without going through a C string (embedded NULs survive).
@inlinable @inline(__always)
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
@inlinable @inline(__always)
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
///
/// The sandbox: scripts see base (without dofile/loadfile; `load` text-only; `collectgarbage` limited
/// to collect/count/step/isrunning; `rawset` refusing read-only tables; `setmetatable` refusing
/// `__gc`), string (without dump), table, math, utf8, coroutine and os.time/clock/date/difftime.
/// Library tables are read-only proxies, the string metatable and the environment metatable are
/// hidden, and `_G` in a run is that run's own environment.
/// Runs are bounded by `timeoutNanos` and `memoryLimit`.
public final class LuaState {
    public let L: OpaquePointer
    let control: UnsafeMutablePointer<cls_control>
    private let envMetatableRef: Int32
    /// Pinned slot of the string "_G".
    let underscoreGSlot: Int32
    /// Values the host reaches on every event sit at the bottom of the main thread's stack, below
    /// this index: pushing one (`lua_pushvalue`) costs half a registry lookup. They are pinned at
    /// set-up, while the stack holds nothing else, and the stack never goes below them: host code
    /// pushes and pops above `stackBase`.
    public private(set) var stackBase: Int32 = 0
    /// Runs executing now: a run can start another inside a C function it calls.
    var runDepth = 0
    var timeoutArmed = false
    private var sealed = false
    /// Finished runs' coroutines with their registry slots, for the next runs: one in a slot of
    /// its own (one run at a time is the common case, and an array costs a uniqueness check and a
    /// length update each way), more while runs wait.
    var spareThread: (thread: OpaquePointer, ref: Int32)?
    var spareThreads: [(thread: OpaquePointer, ref: Int32)] = []

    /// Longest time one run may execute (`start`, including its handler, and every `resume`
    /// together; the time it waits suspended does not count); past it the script gets the error
    /// "script timed out after N ms", which it cannot catch for good. 0 = no limit. A watchdog thread
    /// looks every 10 ms (see timeout.c in CLuaSupport) and stops the run at its next VM instruction;
    /// the sandbox's own pattern matcher (string.find, match, gmatch, gsub) checks every 4096 steps
    /// of a match; other time spent inside a single C function is not interrupted (string.rep
    /// refuses results over 64 MiB).
    public var timeoutNanos: UInt64 = 0

    /// Most bytes the state may hold while a script runs; an allocation that would pass it fails
    /// with Lua's "not enough memory" (after an emergency collection). 0 = unlimited. The host's own
    /// allocations between runs (compiling, pushing event data) are never refused, so they can
    /// never reach Lua's panic handler; they can leave the state over the limit, in which case the
    /// next script's first growing allocation fails.
    public var memoryLimit: Int {
        get { control.pointee.limit }
        set { control.pointee.limit = max(0, newValue) }
    }

    /// Bytes the state holds now, as Lua accounts them (garbage included until collected).
    public var memoryInUse: Int { control.pointee.in_use }

    /// Whether the last run was stopped by its deadline.
    public var lastRunTimedOut: Bool { control.pointee.timed_out != 0 }

    public init(memoryLimit: Int = 0) {
        control = .allocate(capacity: 1)
        cls_control_init(control)
        guard let state = cls_newstate(control) else { fatalError("cannot create a Lua state") }
        L = state
        // Setup runs unlimited (the limit is only enforced inside runs) and protected.
        lua_pushcfunction(L, cls_open_sandbox)
        guard lua_pcall(L, 0, 1, 0) == LUA_OK else {
            fatalError("cannot set up the Lua sandbox: \(lua_swiftstring(L, -1) ?? "?")")
        }
        envMetatableRef = luaL_ref(L, lua_registryIndex())
        lua_pushswift(L, "_G")
        underscoreGSlot = LuaState.pinTop(L, &stackBase)
        self.memoryLimit = memoryLimit
    }

    /// Leaves the value on top of the stack in a new pinned slot (see `stackBase`) and returns its
    /// index; only while the stack holds the pinned slots and that value.
    public func pinTop() -> Int32 { LuaState.pinTop(L, &stackBase) }

    private static func pinTop(_ L: OpaquePointer, _ stackBase: inout Int32) -> Int32 {
        precondition(lua_gettop(L) == stackBase + 1, "a value is pinned only while the stack holds nothing else")
        stackBase += 1
        // Host code above the pinned slots gets the room the API promises at the base of a stack.
        guard lua_checkstack(L, LUA_MINSTACK) != 0 else { fatalError("cannot grow the Lua stack") }
        return stackBase
    }

    deinit {
        lua_close(L)
        cls_control_release(control)
        control.deinitialize(count: 1)
        control.deallocate()
    }

    /// A pointer-sized slot inside the state, for the owner to find itself from C callbacks.
    public var extraSpace: UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(L) - MemoryLayout<UnsafeRawPointer>.size
    }

    /// Sets a global in the shared base environment (visible to every run). Tables stay writable
    /// for scripts until `sealBaseEnvironment()`; after it, a table set here is sealed at once.
    public func setBaseGlobal(_ name: String, _ push: () -> Void) {
        lua_rawgeti(L, lua_registryIndex(), lua_Integer(LUA_RIDX_GLOBALS))
        push()
        if sealed && lua_type(L, -1) == LUA_TTABLE {
            lua_pushcfunction(L, cls_seal_value)
            lua_rotate(L, -2, 1)
            guard lua_pcall(L, 1, 1, 0) == LUA_OK else { fatalError("cannot seal \(name): \(lua_swiftstring(L, -1) ?? "?")") }
        }
        lua_setfield(L, -2, name)
        lua_pop(L, 1)
    }

    /// Makes every table in the base environment (the gateway's globals, and tables inside them)
    /// read-only for scripts: they get proxies whose writes raise "attempt to modify read-only
    /// table". The standard library tables are sealed from the start. Call once after installing
    /// the host's globals; host code must not write into these tables through the globals
    /// afterwards (the proxies would raise outside any protected call). Idempotent.
    public func sealBaseEnvironment() {
        lua_pushcfunction(L, cls_seal_globals)
        guard lua_pcall(L, 0, 0, 0) == LUA_OK else { fatalError("cannot seal the base environment: \(lua_swiftstring(L, -1) ?? "?")") }
        sealed = true
    }

    /// Compiles a text chunk; returns a registry reference to a function that runs it with its
    /// environment as the first argument. Each run passes its own environment, so runs of one
    /// script that are suspended at the same time never share their globals (a chunk's `_ENV` is
    /// an upvalue, one per closure, which every run would have to swap).
    public func compile(_ source: [UInt8], chunkName: String) -> Result<Int32, LuaError> {
        // The chunk alone first: its errors are the ones to report, and a chunk that compiles is
        // a block, so it cannot close the function it is wrapped in below.
        if let error = load(source, chunkName: chunkName) { return .failure(error) }
        lua_pop(L, 1)
        // Lines stay the script's own: the prefix adds none. The wrapper takes `...` (always empty,
        // as a main chunk's is here) only for a chunk that uses it: a vararg function costs every
        // call an adjustment of its frame.
        let wrapped = Array("return function(_ENV) ".utf8) + source + Array("\nend".utf8)
        if load(wrapped, chunkName: chunkName) != nil {
            let vararg = Array("return function(_ENV, ...) ".utf8) + source + Array("\nend".utf8)
            if let error = load(vararg, chunkName: chunkName) { return .failure(error) }
        }
        // The wrapper reads no global; its own _ENV is left empty.
        lua_pushnil(L)
        lua_setupvalue(L, -2, 1)
        guard lua_pcall(L, 0, 1, 0) == LUA_OK, lua_type(L, -1) == LUA_TFUNCTION else {
            let message = lua_swiftstring(L, -1) ?? "cannot wrap the chunk"
            lua_pop(L, 1)
            return .failure(LuaError(message: message))
        }
        return .success(luaL_ref(L, lua_registryIndex()))
    }

    /// Loads a text chunk onto the stack, or returns the compile error (leaving nothing).
    private func load(_ source: [UInt8], chunkName: String) -> LuaError? {
        let status = source.withUnsafeBytes { buffer in
            luaL_loadbufferx(L, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), buffer.count, "@" + chunkName, "t")
        }
        guard status != LUA_OK else { return nil }
        let message = lua_swiftstring(L, -1) ?? "unknown compile error"
        lua_pop(L, 1)
        return LuaError(message: message)
    }

    public func release(_ ref: Int32) { luaL_unref(L, lua_registryIndex(), ref) }

    /// The global that brings each run its event (`websocketInfo`, `wsEvent`), with the environment
    /// the last run of that kind left as fresh as it got it, kept for the next one: a new
    /// environment and its collection per run cost more than the rest of a small script's run.
    public struct EventGlobal {
        /// The global's name as a Lua string in the registry (for a run's coroutine) and in a pinned
        /// slot; the spare environment or `false`, pinned.
        let nameRef: Int32
        let nameSlot: Int32
        let spareSlot: Int32
        let keepsValue: Bool
        /// This global's bit in `sparesInUse`.
        let bit: UInt64
    }

    /// The event globals whose spare environment a run is using; `pushEnvironment` makes a new one
    /// for such a global (a run nested in another, or running while another waits).
    private var sparesInUse: UInt64 = 0
    private var eventGlobals = 0
    /// Whether the environment `pushEnvironment` pushed last is its global's spare, for `start`.
    var pushedSpare = false

    /// `keepsValue`: the spare environment keeps the global's value, for a value that outlives its
    /// runs anyway (one object reused by every run); otherwise it is cleared after each run, so that
    /// nothing of the event is held until the next one.
    public func eventGlobal(named name: String, keepsValue: Bool) -> EventGlobal {
        precondition(eventGlobals < 64, "at most 64 event globals")
        lua_pushswift(L, name)
        lua_pushvalue(L, -1)
        let nameRef = luaL_ref(L, lua_registryIndex())
        let nameSlot = pinTop()
        lua_pushboolean(L, 0)
        eventGlobals += 1
        return EventGlobal(nameRef: nameRef, nameSlot: nameSlot, spareSlot: pinTop(), keepsValue: keepsValue,
                           bit: 1 << UInt64(eventGlobals - 1))
    }

    /// Replaces the value on top of the stack by an environment for one run that has it as `global`:
    /// an empty global table over the sandboxed base whose `_G` is itself, new or the spare, which no
    /// script can tell from a new one (see `run`). The spare stays in its pinned slot while the
    /// run uses it.
    public func pushEnvironment(for global: EventGlobal) {
        let event = lua_gettop(L)
        pushedSpare = sparesInUse & global.bit == 0 && lua_type(L, global.spareSlot) == LUA_TTABLE
        if pushedSpare {
            sparesInUse |= global.bit
            // Stack: event, environment.
            lua_pushvalue(L, global.spareSlot)
            lua_pushvalue(L, global.nameSlot)
            if global.keepsValue {
                lua_pushvalue(L, -1)
                if lua_rawget(L, event + 1) == LUA_TTABLE && lua_rawequal(L, -1, event) != 0 {
                    lua_copy(L, event + 1, event)
                    lua_settop(L, event)
                    return
                }
                lua_pop(L, 1)
            }
        } else {
            lua_createtable(L, 0, 2)
            lua_rawgeti(L, lua_registryIndex(), lua_Integer(envMetatableRef))
            lua_setmetatable(L, -2)
            lua_pushvalue(L, -1)
            lua_setfield(L, -2, "_G")
            lua_pushvalue(L, global.nameSlot)
        }
        // Stack: event, environment, name.
        lua_pushvalue(L, event)
        lua_rawset(L, event + 1)
        lua_copy(L, event + 1, event)
        lua_settop(L, event)
    }

    /// Ends a run's use of its environment at `index`: `fresh` when the run succeeded and added no
    /// key to it (the sandbox notes every new global, `rawset` included). The spare goes back
    /// unless the run spoiled it; a new environment becomes the spare when there is none. Either
    /// is kept only while its `_G` is still itself. The global is cleared unless it keeps its
    /// value; if the script replaced it, `pushEnvironment` sets it anew.
    func finishEnvironment(at index: Int32, fresh: Bool, spare: Bool, global: EventGlobal) {
        if spare { sparesInUse &= ~global.bit }
        // `_G` is a key of its own: assigning it calls no metamethod.
        let keep = fresh && {
            lua_pushvalue(L, underscoreGSlot)
            defer { lua_pop(L, 1) }
            return lua_rawget(L, index) == LUA_TTABLE && lua_rawequal(L, -1, index) != 0
        }()
        if keep && !global.keepsValue {
            lua_pushvalue(L, global.nameSlot)
            lua_pushnil(L)
            lua_rawset(L, index)
        }
        if spare {
            if !keep { releaseSpare(of: global) }
        } else if keep && sparesInUse & global.bit == 0 {
            lua_pushvalue(L, index)
            lua_replace(L, global.spareSlot)
        }
    }

    /// Empties `global`'s spare slot: its environment went to a run that waits, or was spoiled.
    func releaseSpare(of global: EventGlobal) {
        sparesInUse &= ~global.bit
        lua_pushboolean(L, 0)
        lua_replace(L, global.spareSlot)
    }

    /// Runs `body` with the memory limit of the state `L` belongs to lifted. For C functions written
    /// in Swift that allocate Lua memory (push strings or tables) while a script runs: a refused
    /// allocation raises a Lua error, whose longjmp must never cross Swift frames. The memory
    /// still counts; the script's next growing allocation fails instead.
    @inlinable
    public static func withMemoryLimitSuspended<T>(_ L: OpaquePointer, _ body: () throws -> T) rethrows -> T {
        guard let control = cls_control_of(L) else { return try body() }
        let saved = control.pointee.enforcing
        control.pointee.enforcing = 0
        defer { control.pointee.enforcing = saved }
        return try body()
    }
}
