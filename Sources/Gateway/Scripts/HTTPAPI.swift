import CLua
import CLuaSupport
import LuaRuntime
import WebSocketCodec

/// `Http.request{url=, method="GET", headers={}, body=nil, timeout_ms=10000, ca_file=nil,
/// insecure=false}`: the run waits for the response, `{status=, headers=, body=}`, or gets an error
/// object (`BadRequest` at once for bad arguments; `BadGateway`, `GatewayTimeout` after the wait).
extension ScriptAPI {
    static func installHTTP(in lua: LuaState) {
        lua.setBaseGlobal("Http") {
            lua_createtable(lua.L, 0, 1)
            cls_push_waiting_function(lua.L, request, "Http.request")
            lua_setfield(lua.L, -2, "request")
        }
    }

    private static let defaultTimeoutMs = 10_000

    private static let request: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            let worker = worker(L)
            let request: HTTPClientRequest
            switch Result(catching: { () throws(ServiceFailure) in try requestArgument(L) }) {
            case .success(let checked): request = checked
            case .failure(let failure): return push(L, failure)
            }
            worker.runner.suspendRun(L) { [unowned worker] run, wait in
                let exchange = HTTPExchange(worker: worker, request: request, maxBodyBytes: worker.config.httpResponseBytes) { [weak run] result in
                    guard let run else { return }
                    worker.runner.resume(run, wait: wait) { thread in
                        LuaState.withMemoryLimitSuspended(thread) {
                            switch result {
                            case .success(let response): return pushResponse(thread, response)
                            case .failure(let failure): return push(thread, failure)
                            }
                        }
                    }
                }
                run.cancelWait = { exchange.cancel() }
                exchange.start()
            }
            return -1
        }
    }

    /// `{status=, headers=, body=}`: header names in lower case, a repeated header's values joined
    /// with ", ".
    private static func pushResponse(_ L: OpaquePointer, _ response: HTTPResponseReader.Response) -> Int32 {
        let table = LuaTable(pushedOn: L, fields: 3)
        table.set("status", response.status)
        var joined: [(name: String, value: String)] = []
        for (name, value) in response.headers {
            if let i = joined.firstIndex(where: { $0.name == name }) {
                joined[i].value += ", " + value
            } else {
                joined.append((name, value))
            }
        }
        pushPairs(L, joined)
        table.setFromTop("headers")
        response.body.withUnsafeBytes { _ = lua_pushlstring(L, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
        table.setFromTop("body")
        return 1
    }

    /// The table argument, checked.
    private static func requestArgument(_ L: OpaquePointer) throws(ServiceFailure) -> HTTPClientRequest {
        guard lua_type(L, 1) == LUA_TTABLE else { throw .badRequest("Http.request expects a table") }
        guard case .success(let url?) = optionalString(L, "url") else { throw .badRequest("url is required and must be a string") }
        let method = try optionalString(L, "method").get()?.uppercased() ?? "GET"
        var headers: [(name: String, value: String)] = []
        if lua_getfield(L, 1, "headers") != LUA_TNIL {
            guard lua_type(L, -1) == LUA_TTABLE else { throw .badRequest("headers must be a table of name = value strings") }
            lua_pushnil(L)
            while lua_next(L, -2) != 0 {
                guard lua_type(L, -2) == LUA_TSTRING, lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER,
                      let name = lua_swiftstring(L, -2), let value = lua_swiftstring(L, -1) else {
                    lua_pop(L, 3)
                    throw .badRequest("headers must be a table of name = value strings")
                }
                headers.append((name, value))
                lua_pop(L, 1)
            }
        }
        lua_pop(L, 1)
        var body: [UInt8]?
        switch lua_getfield(L, 1, "body") {
        case LUA_TNIL: break
        case LUA_TSTRING: body = Array(lua_bytes(L, -1)!)
        default:
            lua_pop(L, 1)
            throw .badRequest("body must be a string")
        }
        lua_pop(L, 1)
        var timeoutMs = defaultTimeoutMs
        if lua_getfield(L, 1, "timeout_ms") != LUA_TNIL {
            var isInteger: Int32 = 0
            let value = lua_tointegerx(L, -1, &isInteger)
            guard isInteger != 0 else {
                lua_pop(L, 1)
                throw .badRequest("timeout_ms must be a whole number of milliseconds")
            }
            timeoutMs = Int(clamping: value)
        }
        lua_pop(L, 1)
        let caFile = try optionalString(L, "ca_file").get()
        var insecure = false
        switch lua_getfield(L, 1, "insecure") {
        case LUA_TNIL: break
        case LUA_TBOOLEAN: insecure = lua_toboolean(L, -1) != 0
        default:
            lua_pop(L, 1)
            throw .badRequest("insecure must be a boolean")
        }
        lua_pop(L, 1)
        return try HTTPClientRequest(url: url, method: method, headers: headers, body: body, timeoutMs: timeoutMs,
                                     caFile: caFile, insecure: insecure)
    }
}
