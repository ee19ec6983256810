import CLua
import CLuaSupport
import LuaRuntime
import Reactor

/// The `Keystore` service: `set`, `get`, `mget`, `delete`, `incr`, `list`, from any script on any
/// loop. Each call is checked into a `KeystoreOperation`; the process's own store answers it at
/// once, and in a cluster Redis answers it while the run waits (the functions are then waiting
/// functions, like `Http.request`).
extension ScriptAPI {
    static func installKeystore(in lua: LuaState, waiting: Bool) {
        let L = lua.L
        lua.setBaseGlobal("Keystore") {
            lua_createtable(L, 0, 6)
            for (name, function) in [("set", keystoreSet), ("get", keystoreGet), ("mget", keystoreMget),
                                     ("delete", keystoreDelete), ("incr", keystoreIncr), ("list", keystoreList)] {
                if waiting { cls_push_waiting_function(L, function, "Keystore." + name) } else { lua_pushcfunction(L, function) }
                lua_setfield(L, -2, name)
            }
        }
    }

    /// Answers the call: pushes the results and returns their count, or -1 once the run waits.
    private static func perform(_ L: OpaquePointer, _ parsed: Result<KeystoreOperation, ServiceFailure>) -> Int32 {
        let operation: KeystoreOperation
        switch parsed {
        case .failure(let failure): return push(L, failure)
        case .success(let checked): operation = checked
        }
        let worker = worker(L)
        guard let cluster = worker.shared.cluster, let link = worker.redis else {
            return push(L, worker.shared.keystore.perform(operation, now: EventLoop.monotonicNanos()))
        }
        worker.runner.suspendRun(L) { [unowned worker] run, wait in
            RedisKeystore(cluster: cluster, link: link).perform(operation) { [weak run] result in
                guard let run else { return }
                worker.runner.resume(run, wait: wait) { thread in
                    LuaState.withMemoryLimitSuspended(thread) { push(thread, result) }
                }
            }
        }
        return -1
    }

    private static func push(_ L: OpaquePointer, _ result: Result<KeystoreAnswer, ServiceFailure>) -> Int32 {
        switch result {
        case .failure(let failure):
            return push(L, failure)
        case .success(.stored(let stored)):
            lua_pushboolean(L, stored ? 1 : 0)
            return 1
        case .success(.deleted(let deleted)):
            lua_pushinteger(L, deleted ? 1 : 0)
            return 1
        case .success(.value(let value)):
            pushValue(L, value)
            return 1
        case .success(.values(let values)):
            lua_createtable(L, Int32(values.count), 0)
            for (i, value) in values.enumerated() where value != nil {
                pushValue(L, value)
                lua_rawseti(L, -2, lua_Integer(i + 1))
            }
            return 1
        case .success(.integer(let n)):
            lua_pushinteger(L, lua_Integer(n))
            return 1
        case .success(.keys(let keys, let next)):
            let list = LuaTable(pushedOn: L, items: keys.count)
            for (i, key) in keys.enumerated() { list.set(i + 1, key) }
            guard let next else { return 1 }
            lua_pushswift(L, next)
            return 2
        }
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

    private static let keystoreSet: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in perform(L, setArguments(L)) }
    }

    private static func setArguments(_ L: OpaquePointer) -> Result<KeystoreOperation, ServiceFailure> {
        let key: String
        switch keyArgument(L) {
        case .failure(let failure): return .failure(failure)
        case .success(let value): key = value
        }
        let value: Keystore.Value
        lua_getfield(L, 1, "value")
        switch lua_type(L, -1) {
        case LUA_TSTRING: value = .string(lua_swiftstring(L, -1)!)
        case LUA_TNUMBER: value = lua_isinteger(L, -1) != 0 ? .integer(Int64(lua_tointegerx(L, -1, nil))) : .number(lua_tonumberx(L, -1, nil))
        default: return .failure(.badRequest("value must be a string or a number"))
        }
        var ttlMs: Int?
        if lua_getfield(L, 1, "ttl_ms") != LUA_TNIL {
            var isInteger: Int32 = 0
            let ms = lua_tointegerx(L, -1, &isInteger)
            guard isInteger != 0, ms > 0, ms <= 365 * 86_400_000 else { return .failure(.badRequest("ttl_ms must be a whole number of milliseconds, 1 or more")) }
            ttlMs = Int(ms)
        }
        lua_getfield(L, 1, "only_if_absent")
        guard lua_type(L, -1) == LUA_TNIL || lua_type(L, -1) == LUA_TBOOLEAN else { return .failure(.badRequest("only_if_absent must be a boolean")) }
        return .success(.set(key: key, value: value, ttlMs: ttlMs, onlyIfAbsent: lua_toboolean(L, -1) != 0))
    }

    private static let keystoreGet: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in perform(L, keyArgument(L).map { .get($0) }) }
    }

    private static let keystoreMget: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in perform(L, mgetArguments(L)) }
    }

    private static func mgetArguments(_ L: OpaquePointer) -> Result<KeystoreOperation, ServiceFailure> {
        guard lua_type(L, 1) == LUA_TTABLE, lua_getfield(L, 1, "keys") == LUA_TTABLE else {
            return .failure(.badRequest("keys is required and must be a list of strings"))
        }
        let count = Int(luaL_len(L, -1))
        var keys: [String] = []
        keys.reserveCapacity(count)
        for i in 0..<count {
            lua_rawgeti(L, -1, lua_Integer(i + 1))
            guard lua_type(L, -1) == LUA_TSTRING, case .success(let key) = checkedKey(lua_swiftstring(L, -1)!) else {
                return .failure(.badRequest("keys[\(i + 1)] must be a key (a string of 1 to \(Keystore.maxKeyBytes) bytes)"))
            }
            keys.append(key)
            lua_pop(L, 1)
        }
        return .success(.mget(keys))
    }

    private static let keystoreDelete: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in perform(L, keyArgument(L).map { .delete($0) }) }
    }

    private static let keystoreIncr: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in perform(L, incrArguments(L)) }
    }

    private static func incrArguments(_ L: OpaquePointer) -> Result<KeystoreOperation, ServiceFailure> {
        let key: String
        switch keyArgument(L) {
        case .failure(let failure): return .failure(failure)
        case .success(let value): key = value
        }
        var by: Int64 = 1
        if lua_getfield(L, 1, "by") != LUA_TNIL {
            var isInteger: Int32 = 0
            let value = lua_tointegerx(L, -1, &isInteger)
            guard isInteger != 0 else { return .failure(.badRequest("by must be an integer")) }
            by = Int64(value)
        }
        return .success(.incr(key, by: by))
    }

    /// `list{prefix=, cursor=}`: the keys, and the cursor of the next page when there are more.
    private static let keystoreList: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in perform(L, listArguments(L)) }
    }

    private static func listArguments(_ L: OpaquePointer) -> Result<KeystoreOperation, ServiceFailure> {
        guard lua_type(L, 1) == LUA_TTABLE || lua_isnoneornil(L, 1) else { return .failure(.badRequest("argument must be a table")) }
        guard lua_type(L, 1) == LUA_TTABLE else { return .success(.list(prefix: "", cursor: nil)) }
        guard case .success(let prefix) = optionalString(L, "prefix"), case .success(let cursor) = optionalString(L, "cursor") else {
            return .failure(.badRequest("prefix and cursor must be strings"))
        }
        return .success(.list(prefix: prefix ?? "", cursor: cursor))
    }
}
