import CLua
import LuaRuntime
import Reactor

/// The `Keystore` service: `set`, `get`, `mget`, `delete`, `incr`, `list` on the process's one
/// store (`Keystore`), from any script on any loop.
extension ScriptAPI {
    static func installKeystore(in lua: LuaState) {
        let L = lua.L
        lua.setBaseGlobal("Keystore") {
            let service = LuaTable(pushedOn: L, fields: 6)
            service.set("set", keystoreSet)
            service.set("get", keystoreGet)
            service.set("mget", keystoreMget)
            service.set("delete", keystoreDelete)
            service.set("incr", keystoreIncr)
            service.set("list", keystoreList)
        }
    }

    private static func store(_ L: OpaquePointer) -> (Keystore, UInt64) {
        let worker = worker(L)
        return (worker.shared.keystore, EventLoop.monotonicNanos())
    }

    /// The `key` field of the table argument.
    private static func keyArgument(_ L: OpaquePointer) -> Result<String, ServiceFailure> {
        guard lua_type(L, 1) == LUA_TTABLE else { return .failure(.badRequest("argument must be a table")) }
        guard case .success(let key?) = optionalString(L, "key") else { return .failure(.badRequest("key is required and must be a string")) }
        return checkedKey(key)
    }

    private static func checkedKey(_ key: String) -> Result<String, ServiceFailure> {
        guard !key.isEmpty, key.utf8.count <= Keystore.maxKeyBytes else {
            return .failure(.badRequest("key must be 1 to \(Keystore.maxKeyBytes) bytes"))
        }
        return .success(key)
    }

    private static func pushValue(_ L: OpaquePointer, _ value: Keystore.Value?) {
        switch value {
        case nil: lua_pushnil(L)
        case .string(let text)?: lua_pushswift(L, text)
        case .integer(let n)?: lua_pushinteger(L, lua_Integer(n))
        case .number(let x)?: lua_pushnumber(L, x)
        }
    }

    private static func full(_ keystore: Keystore) -> ServiceFailure {
        .insufficientStorage("the keystore is full (keystore.maxBytes = \(keystore.maxBytes))")
    }

    private static let keystoreSet: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            let key: String
            switch keyArgument(L) {
            case .failure(let failure): return push(L, failure)
            case .success(let value): key = value
            }
            let value: Keystore.Value
            lua_getfield(L, 1, "value")
            switch lua_type(L, -1) {
            case LUA_TSTRING: value = .string(lua_swiftstring(L, -1)!)
            case LUA_TNUMBER: value = lua_isinteger(L, -1) != 0 ? .integer(Int64(lua_tointegerx(L, -1, nil))) : .number(lua_tonumberx(L, -1, nil))
            default: return push(L, .badRequest("value must be a string or a number"))
            }
            var ttl: UInt64?
            if lua_getfield(L, 1, "ttl_ms") != LUA_TNIL {
                var isInteger: Int32 = 0
                let ms = lua_tointegerx(L, -1, &isInteger)
                guard isInteger != 0, ms > 0, ms <= 365 * 86_400_000 else { return push(L, .badRequest("ttl_ms must be a whole number of milliseconds, 1 or more")) }
                ttl = UInt64(ms) * 1_000_000
            }
            lua_getfield(L, 1, "only_if_absent")
            guard lua_type(L, -1) == LUA_TNIL || lua_type(L, -1) == LUA_TBOOLEAN else { return push(L, .badRequest("only_if_absent must be a boolean")) }
            let onlyIfAbsent = lua_toboolean(L, -1) != 0
            let (keystore, now) = store(L)
            guard let stored = keystore.set(key, value, ttlNanos: ttl, onlyIfAbsent: onlyIfAbsent, now: now) else { return push(L, full(keystore)) }
            lua_pushboolean(L, stored ? 1 : 0)
            return 1
        }
    }

    private static let keystoreGet: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            switch keyArgument(L) {
            case .failure(let failure): return push(L, failure)
            case .success(let key):
                let (keystore, now) = store(L)
                pushValue(L, keystore.get(key, now: now))
                return 1
            }
        }
    }

    private static let keystoreMget: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            guard lua_type(L, 1) == LUA_TTABLE, lua_getfield(L, 1, "keys") == LUA_TTABLE else {
                return push(L, .badRequest("keys is required and must be a list of strings"))
            }
            let count = Int(luaL_len(L, -1))
            var keys: [String] = []
            keys.reserveCapacity(count)
            for i in 0..<count {
                lua_rawgeti(L, -1, lua_Integer(i + 1))
                guard lua_type(L, -1) == LUA_TSTRING, case .success(let key) = checkedKey(lua_swiftstring(L, -1)!) else {
                    return push(L, .badRequest("keys[\(i + 1)] must be a key (a string of 1 to \(Keystore.maxKeyBytes) bytes)"))
                }
                keys.append(key)
                lua_pop(L, 1)
            }
            let (keystore, now) = store(L)
            let values = keystore.get(keys, now: now)
            lua_createtable(L, Int32(values.count), 0)
            for (i, value) in values.enumerated() where value != nil {
                pushValue(L, value)
                lua_rawseti(L, -2, lua_Integer(i + 1))
            }
            return 1
        }
    }

    private static let keystoreDelete: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            switch keyArgument(L) {
            case .failure(let failure): return push(L, failure)
            case .success(let key):
                let (keystore, now) = store(L)
                lua_pushinteger(L, keystore.delete(key, now: now) ? 1 : 0)
                return 1
            }
        }
    }

    private static let keystoreIncr: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            let key: String
            switch keyArgument(L) {
            case .failure(let failure): return push(L, failure)
            case .success(let value): key = value
            }
            var by: Int64 = 1
            if lua_getfield(L, 1, "by") != LUA_TNIL {
                var isInteger: Int32 = 0
                let value = lua_tointegerx(L, -1, &isInteger)
                guard isInteger != 0 else { return push(L, .badRequest("by must be an integer")) }
                by = Int64(value)
            }
            let (keystore, now) = store(L)
            switch keystore.increment(key, by: by, now: now) {
            case .success(let n):
                lua_pushinteger(L, lua_Integer(n))
                return 1
            case .failure(.notAnInteger): return push(L, .badRequest("the value of \(key) is not an integer"))
            case .failure(.overflow): return push(L, .badRequest("incrementing \(key) would overflow a 64-bit integer"))
            case .failure(.full): return push(L, full(keystore))
            }
        }
    }

    /// `list{prefix=, cursor=}`: the keys, and the cursor of the next page when there are more.
    private static let keystoreList: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            guard lua_type(L, 1) == LUA_TTABLE || lua_isnoneornil(L, 1) else { return push(L, .badRequest("argument must be a table")) }
            var prefix = ""
            var cursor: String?
            if lua_type(L, 1) == LUA_TTABLE {
                guard case .success(let given) = optionalString(L, "prefix"), case .success(let after) = optionalString(L, "cursor") else {
                    return push(L, .badRequest("prefix and cursor must be strings"))
                }
                prefix = given ?? ""
                cursor = after
            }
            let (keystore, now) = store(L)
            let (keys, next) = keystore.list(prefix: prefix, after: cursor, now: now)
            let list = LuaTable(pushedOn: L, items: keys.count)
            for (i, key) in keys.enumerated() { list.set(i + 1, key) }
            guard let next else { return 1 }
            lua_pushswift(L, next)
            return 2
        }
    }
}
