import CLua

/// A table on top of the stack, being filled: one typed call per field instead of a push and a
/// `lua_setfield`. Keys are static strings, so no key is converted to a C string at run time.
public struct LuaTable {
    public let L: OpaquePointer

    /// Pushes a new table sized for `items` array entries and `fields` named ones.
    @inline(__always)
    public init(pushedOn L: OpaquePointer, items: Int = 0, fields: Int = 0) {
        self.L = L
        lua_createtable(L, Int32(items), Int32(fields))
    }

    @inline(__always)
    private func setField(_ key: StaticString) {
        key.withUTF8Buffer { lua_setfield(L, -2, UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self)) }
    }

    @inline(__always)
    public func set(_ key: StaticString, _ value: String) {
        lua_pushswift(L, value)
        setField(key)
    }

    @inline(__always)
    public func set(_ key: StaticString, literal value: StaticString) {
        value.withUTF8Buffer { _ = lua_pushlstring(L, UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), $0.count) }
        setField(key)
    }

    @inline(__always)
    public func set(_ key: StaticString, _ value: Int) {
        lua_pushinteger(L, lua_Integer(value))
        setField(key)
    }

    @inline(__always)
    public func set(_ key: StaticString, _ value: Bool) {
        lua_pushboolean(L, value ? 1 : 0)
        setField(key)
    }

    @inline(__always)
    public func set(_ key: StaticString, _ function: lua_CFunction) {
        lua_pushcfunction(L, function)
        setField(key)
    }

    /// A string field holding `bytes` as they are (binary-safe).
    @inline(__always)
    public func set(_ key: StaticString, bytes: UnsafeRawBufferPointer) {
        lua_pushlstring(L, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
        setField(key)
    }

    /// Sets the field from the value `push` leaves on top of the stack (a nested table, say).
    @inline(__always)
    public func set(_ key: StaticString, _ push: () -> Void) {
        push()
        setField(key)
    }

    /// Sets the field from the value already on top of the stack, above the table.
    @inline(__always)
    public func setFromTop(_ key: StaticString) {
        setField(key)
    }

    /// Copies field `key` of the table at `source` (an absolute index) into this one.
    @inline(__always)
    public func copy(_ key: StaticString, from source: Int32) {
        key.withUTF8Buffer { _ = lua_getfield(L, source, UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self)) }
        setField(key)
    }

    /// Sets array entry `index` (1-based) to `value`.
    @inline(__always)
    public func set(_ index: Int, _ value: String) {
        lua_pushswift(L, value)
        lua_rawseti(L, -2, lua_Integer(index))
    }

    /// Sets array entry `index` (1-based) from the value `push` leaves on top of the stack.
    @inline(__always)
    public func set(_ index: Int, _ push: () -> Void) {
        push()
        lua_rawseti(L, -2, lua_Integer(index))
    }
}

extension LuaState {
    /// Keeps `owner` (unretained: it must outlive the state's use) where C functions called from
    /// this state find it with `owner(of:as:)`, without a closure or a registry lookup.
    public func setOwner(_ owner: AnyObject) {
        extraSpace.storeBytes(of: Unmanaged.passUnretained(owner).toOpaque(), as: UnsafeMutableRawPointer.self)
    }

    /// The object given to `setOwner` of the state `L` belongs to (a coroutine's included).
    @inline(__always)
    public static func owner<T: AnyObject>(of L: OpaquePointer, as type: T.Type) -> T {
        unmanagedOwner(of: L, as: type).takeUnretainedValue()
    }

    /// Calls `body` with the owner of `L` without retaining it: for the calls every message makes,
    /// when the owner outlives the state's runs.
    @inline(__always)
    public static func withOwner<T: AnyObject, R>(of L: OpaquePointer, as type: T.Type, _ body: (T) -> R) -> R {
        unmanagedOwner(of: L, as: type)._withUnsafeGuaranteedRef(body)
    }

    @inline(__always)
    private static func unmanagedOwner<T: AnyObject>(of L: OpaquePointer, as type: T.Type) -> Unmanaged<T> {
        let raw = (UnsafeMutableRawPointer(L) - MemoryLayout<UnsafeRawPointer>.size).load(as: UnsafeMutableRawPointer.self)
        return Unmanaged<T>.fromOpaque(raw)
    }
}
