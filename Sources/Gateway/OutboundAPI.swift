import CLua
import LuaRuntime
import Reactor
import WebSocketCodec

/// The outbound half of the `Websocket` service: `connect`, `send{name=}`, `disconnect`, `reset`,
/// `outbound`, and the `wsEvent` global an outbound connection's script runs with.
extension ScriptAPI {
    static func pushWsEvent(_ L: OpaquePointer, worker: Worker, link: OutboundLink, event: OutboundEvent, message: UnsafeRawBufferPointer?, binary: Bool) {
        lua_createtable(L, 0, 10)
        lua_pushswift(L, link.name)
        lua_setfield(L, -2, "name")
        lua_pushswift(L, link.spec.url.description)
        lua_setfield(L, -2, "url")
        lua_pushswift(L, event.name)
        lua_setfield(L, -2, "type")
        lua_pushinteger(L, lua_Integer(EventLoop.wallMillis()))
        lua_setfield(L, -2, "timestamp")
        switch event {
        case .open:
            break
        case .data:
            guard let message else { break }
            pushMessage(L, worker: worker, message, binary: binary)
            switch link.spec.contentType {
            case .json:
                if let error = JSONBridge.decode(L, message) {
                    lua_pushswift(L, "message is not JSON: \(error)")
                    lua_setfield(L, -2, "error")
                } else {
                    lua_setfield(L, -2, "data")
                }
            case .text, .binary:
                lua_pushlstring(L, message.baseAddress?.assumingMemoryBound(to: CChar.self), message.count)
                lua_setfield(L, -2, "data")
            }
        case .close(let code, let reason):
            lua_pushinteger(L, lua_Integer(code))
            lua_setfield(L, -2, "code")
            lua_pushswift(L, reason)
            lua_setfield(L, -2, "reason")
        case .error(let text):
            lua_pushswift(L, text)
            lua_setfield(L, -2, "error")
        }
    }

    // MARK: Arguments

    /// The `name` argument, defaulting to the outbound connection whose script is running.
    private static func linkName(_ L: OpaquePointer, _ worker: Worker) -> Result<String, ServiceFailure> {
        guard lua_type(L, 1) == LUA_TTABLE else { return .failure(.badRequest("argument must be a table")) }
        switch optionalString(L, "name") {
        case .failure(let failure): return .failure(failure)
        case .success(let name?): return .success(name)
        case .success(nil):
            guard let link = worker.currentLink else { return .failure(.badRequest("name is required outside an outbound connection's script")) }
            return .success(link.name)
        }
    }

    private static func headersArgument(_ L: OpaquePointer) -> Result<[(name: String, value: String)], ServiceFailure> {
        lua_getfield(L, 1, "headers")
        defer { lua_pop(L, 1) }
        if lua_isnoneornil(L, -1) { return .success([]) }
        guard lua_type(L, -1) == LUA_TTABLE else { return .failure(.badRequest("headers must be a table of name = value strings")) }
        var headers: [(name: String, value: String)] = []
        lua_pushnil(L)
        while lua_next(L, -2) != 0 {
            defer { lua_pop(L, 1) }
            guard lua_type(L, -2) == LUA_TSTRING, lua_type(L, -1) == LUA_TSTRING,
                  let name = lua_swiftstring(L, -2), let value = lua_swiftstring(L, -1) else {
                lua_pop(L, 2)
                return .failure(.badRequest("headers must be a table of name = value strings"))
            }
            headers.append((name, value))
        }
        return .success(headers.sorted { $0.name < $1.name })
    }

    // MARK: Websocket.connect / disconnect / reset / outbound

    static let websocketConnect: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            guard lua_type(L, 1) == LUA_TTABLE else { return push(L, .badRequest("argument must be a table")) }
            var fields: [String: String] = [:]
            for field in OutboundSpec.stringFields {
                switch optionalString(L, field) {
                case .failure(let failure): return push(L, failure)
                case .success(let value): fields[field] = value
                }
            }
            if let missing = OutboundSpec.missingField(fields) { return push(L, .badRequest("\(missing) is required")) }
            let headers: [(name: String, value: String)]
            switch headersArgument(L) {
            case .failure(let failure): return push(L, failure)
            case .success(let value): headers = value
            }
            lua_getfield(L, 1, "insecure")
            let insecureType = lua_type(L, -1)
            let insecure = lua_toboolean(L, -1) != 0
            lua_pop(L, 1)
            guard insecureType == LUA_TNIL || insecureType == LUA_TBOOLEAN else { return push(L, .badRequest("insecure must be a boolean")) }
            switch OutboundSpec.make(fields, headers: headers, insecure: insecure) {
            case .failure(let problem):
                return push(L, .badRequest("\(problem.field) \(problem.message)"))
            case .success(let spec):
                if let failure = worker(L).connectOutbound(spec) { return push(L, failure) }
                return 0
            }
        }
    }

    static let websocketDisconnect: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            let worker = worker(L)
            switch linkName(L, worker) {
            case .failure(let failure): return push(L, failure)
            case .success(let name):
                if let failure = worker.owners.withLink(name, { $0.disconnect() }) { return push(L, failure) }
                return 0
            }
        }
    }

    static let websocketReset: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            let worker = worker(L)
            let name: String
            switch linkName(L, worker) {
            case .failure(let failure): return push(L, failure)
            case .success(let value): name = value
            }
            var url: WebSocketURL?
            switch optionalString(L, "url") {
            case .failure(let failure): return push(L, failure)
            case .success(nil): break
            case .success(let text?):
                switch WebSocketURL.parse(text) {
                case .failure(let error): return push(L, .badRequest("url \(error.message)"))
                case .success(let parsed): url = parsed
                }
            }
            if let failure = worker.owners.withLink(name, { $0.reset(to: url) }) { return push(L, failure) }
            return 0
        }
    }

    static let websocketOutbound: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            let entries = worker(L).shared.outbound.all()
            lua_createtable(L, Int32(entries.count), 0)
            for (i, item) in entries.enumerated() {
                lua_createtable(L, 0, 5)
                lua_pushswift(L, item.name)
                lua_setfield(L, -2, "name")
                lua_pushswift(L, item.entry.url)
                lua_setfield(L, -2, "url")
                lua_pushswift(L, item.entry.state.rawValue)
                lua_setfield(L, -2, "state")
                lua_pushinteger(L, lua_Integer(item.entry.since))
                lua_setfield(L, -2, "since")
                lua_pushboolean(L, item.entry.reconnecting ? 1 : 0)
                lua_setfield(L, -2, "reconnecting")
                lua_rawseti(L, -2, lua_Integer(i + 1))
            }
            return 1
        }
    }

    // MARK: Websocket.send{name=}

    /// A string is sent as is (as a binary frame on content_type "binary" connections), a table as
    /// JSON on content_type "json" ones; `type` overrides the frame type as on inbound sockets.
    static func sendOutbound(_ L: OpaquePointer, _ worker: Worker) -> Int32 {
        let name: String
        switch linkName(L, worker) {
        case .failure(let failure): return push(L, failure)
        case .success(let value): name = value
        }
        guard let entry = worker.shared.outbound.lookup(name) else { return push(L, .notFound("no outbound connection named \(name)")) }
        // An explicit type works as on inbound sockets: "data-binary" carries base64, sent decoded.
        let type: String?
        switch optionalString(L, "type") {
        case .failure(let failure): return push(L, failure)
        case .success(let value): type = value
        }
        lua_getfield(L, 1, "message")
        if let type {
            guard let message = lua_bytes(L, -1), lua_type(L, -1) == LUA_TSTRING else {
                return push(L, .badRequest("message must be a string when type is given"))
            }
            switch payload(type: type, message: message) {
            case .failure(let failure): return push(L, failure)
            case .success(let payload):
                if let failure = payload.send(to: .outbound(name), from: worker) { return push(L, failure) }
                return 0
            }
        }
        let failure: ServiceFailure?
        switch lua_type(L, -1) {
        case LUA_TSTRING where entry.contentType == .binary:
            failure = worker.owners.send(to: .outbound(name), .binary, lua_bytes(L, -1)!)
        case LUA_TSTRING:
            failure = ScriptAPI.Payload.text(lua_bytes(L, -1)!).send(to: .outbound(name), from: worker)
        case LUA_TTABLE:
            guard entry.contentType == .json else {
                return push(L, .badRequest("a table is sent as JSON on content_type json connections only; \(name) is \(entry.contentType.rawValue)"))
            }
            worker.jsonScratch.removeAll(keepingCapacity: true)
            if let error = JSONBridge.encode(L, index: lua_absindex(L, -1), into: &worker.jsonScratch) {
                return push(L, .badRequest("message cannot be encoded as JSON: \(error)"))
            }
            failure = worker.jsonScratch.withUnsafeBytes { ScriptAPI.Payload.text($0).send(to: .outbound(name), from: worker) }
        default:
            return push(L, .badRequest("message must be a string or a table"))
        }
        if let failure { return push(L, failure) }
        return 0
    }
}
