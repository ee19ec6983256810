import CLua
import LuaRuntime
import Reactor
import WebSocketCodec

/// One request to an HTTP endpoint script: the `request` global it sees, the `response` table it
/// fills (held in the registry while the run may wait), and the HTTP answer made from that table.
final class HTTPEndpointCall {
    unowned let connection: Connection
    let route: String
    let keepAlive: Bool
    /// Registry slot of the `response` table.
    private(set) var responseRef: Int32 = LUA_NOREF

    init(connection: Connection, route: String, keepAlive: Bool) {
        self.connection = connection
        self.route = route
        self.keepAlive = keepAlive
    }

    /// Pushes `request`: method, uri, route, path, headers, parameters, body, remote_addr.
    func pushRequest(_ L: OpaquePointer, head: HTTPRequestHead, parameters: [(name: String, value: String)], body: [UInt8], host: String) {
        let table = LuaTable(pushedOn: L, fields: 8)
        table.set("method", head.method)
        table.set("uri", "\(connection.isTLS ? "https" : "http")://\(host)\(head.target)")
        table.set("route", route)
        table.set("path", head.path)
        ScriptAPI.pushHeaders(L, head)
        table.setFromTop("headers")
        ScriptAPI.pushPairs(L, parameters)
        table.setFromTop("parameters")
        body.withUnsafeBytes { table.set("body", bytes: $0) }
        table.set("remote_addr", connection.remoteAddress)
    }

    /// Sets `response = {code = 200, headers = {}}` in the environment at `environment`, keeping the
    /// table for `answer`.
    func setResponse(_ L: OpaquePointer, in environment: Int32) {
        let table = LuaTable(pushedOn: L, fields: 3)
        table.set("code", 200)
        lua_createtable(L, 0, 0)
        table.setFromTop("headers")
        lua_pushvalue(L, -1)
        responseRef = luaL_ref(L, lua_registryIndex())
        lua_setfield(L, environment, "response")
    }

    static let errorBody = Array("internal error\n".utf8)
    static let timeoutBody = Array("the script took longer than scripts.waitTimeoutMs\n".utf8)

    /// Lets the `response` table go.
    func release(_ L: OpaquePointer) {
        luaL_unref(L, lua_registryIndex(), responseRef)
        responseRef = LUA_NOREF
    }

    enum Answer {
        case response([UInt8])
        /// The table describes no valid response; why (the request is answered 500).
        case invalid(String)
    }

    /// The answer the script's `response` table describes.
    func answer(_ L: OpaquePointer) -> Answer {
        let top = lua_gettop(L)
        defer {
            lua_settop(L, top)
            release(L)
        }
        lua_rawgeti(L, lua_registryIndex(), lua_Integer(responseRef))
        let response = lua_gettop(L)
        var isInteger: Int32 = 0
        lua_rawget_string(L, response, "code")
        let code = lua_tointegerx(L, -1, &isInteger)
        guard isInteger != 0, (100...599).contains(code), code != 101 else {
            return .invalid("response.code must be a whole number from 100 to 599 (not 101)")
        }
        var headers: [(name: String, value: String)] = []
        var hasContentType = false
        if lua_rawget_string(L, response, "headers") != LUA_TNIL {
            guard lua_type(L, -1) == LUA_TTABLE else { return .invalid("response.headers must be a table") }
            lua_pushnil(L)
            while lua_next(L, -2) != 0 {
                guard lua_type(L, -2) == LUA_TSTRING, lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER,
                      let name = lua_swiftstring(L, -2), let value = lua_swiftstring(L, -1) else {
                    return .invalid("response.headers must map names to strings")
                }
                if let problem = ClientHandshake.headerProblem(name: name, value: value) { return .invalid("response.headers: \(problem)") }
                let lower = name.lowercased()
                guard lower != "content-length" && lower != "transfer-encoding" && lower != "connection" else {
                    return .invalid("response.headers: \(name) is set by the gateway")
                }
                if lower == "content-type" { hasContentType = true }
                headers.append((name, value))
                lua_pop(L, 1)
            }
        }
        lua_settop(L, response)
        var body: [UInt8] = []
        switch lua_rawget_string(L, response, "message") {
        case LUA_TNIL:
            break
        case LUA_TSTRING, LUA_TNUMBER:
            body = Array(lua_bytes(L, -1) ?? UnsafeRawBufferPointer(start: nil, count: 0))
            if lua_type(L, -1) == LUA_TNUMBER, let text = lua_swiftstring(L, -1) { body = Array(text.utf8) }
            if !hasContentType { headers.append(("Content-Type", "text/plain; charset=utf-8")) }
        case LUA_TTABLE:
            if let error = JSONBridge.encode(L, index: -1, into: &body) { return .invalid("response.message cannot be encoded as JSON: \(error)") }
            if !hasContentType { headers.append(("Content-Type", "application/json")) }
        default:
            return .invalid("response.message must be a string or a table")
        }
        let status = Int(code)
        // No body for 1xx, 204 and 304 (RFC 9110 6.4.1).
        if status < 200 || status == 204 || status == 304 { body = [] }
        return .response(HTTPResponse.make(status: status, headers: headers, body: body, keepAlive: keepAlive))
    }
}

/// t[key] without metamethods; pushes the value and returns its type.
@discardableResult
private func lua_rawget_string(_ L: OpaquePointer, _ table: Int32, _ key: StaticString) -> Int32 {
    key.withUTF8Buffer { _ = lua_pushlstring(L, UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), $0.count) }
    return lua_rawget(L, table)
}
