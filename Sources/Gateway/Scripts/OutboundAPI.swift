import CLua
import LuaRuntime
import Reactor
import WebSocketCodec

/// The outbound half of the `Websocket` service: `connect`, `send{name=}`, `disconnect`, `reset`,
/// `outbound`, and the `wsEvent` global an outbound connection's script runs with.
extension ScriptAPI {
    static func pushWsEvent(_ L: OpaquePointer, runner: ScriptRunner, link: OutboundLink, event: OutboundEvent, message: UnsafeRawBufferPointer?, binary: Bool) {
        let table = LuaTable(pushedOn: L, fields: 10)
        table.set("name", link.name)
        table.set("url", link.spec.url.description)
        table.set("type", event.name)
        table.set("timestamp", Int(EventLoop.wallMillis()))
        switch event {
        case .open:
            break
        case .data:
            guard let message else { break }
            pushMessage(table, runner: runner, message, binary: binary)
            switch link.spec.contentType {
            case .json:
                if let error = JSONBridge.decode(L, message) {
                    table.set("error", "message is not JSON: \(error)")
                } else {
                    table.setFromTop("data")
                }
            case .text, .binary:
                table.set("data", bytes: message)
            }
        case .close(let code, let reason):
            table.set("code", Int(code))
            table.set("reason", reason)
        case .error(let text):
            table.set("error", text)
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
            guard let link = worker.runner.currentLink else { return .failure(.badRequest("name is required outside an outbound connection's script")) }
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
            let list = LuaTable(pushedOn: L, items: entries.count)
            for (i, item) in entries.enumerated() {
                list.set(i + 1) {
                    let table = LuaTable(pushedOn: L, fields: 5)
                    table.set("name", item.name)
                    table.set("url", item.entry.url)
                    table.set("state", item.entry.state.rawValue)
                    table.set("since", Int(item.entry.since))
                    table.set("reconnecting", item.entry.reconnecting)
                }
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
            if let failure = send(type: type, message: message, to: .outbound(name), from: worker) { return push(L, failure) }
            return 0
        }
        let failure: ServiceFailure?
        switch lua_type(L, -1) {
        case LUA_TSTRING where entry.contentType == .binary:
            failure = worker.owners.send(to: .outbound(name), .binary, lua_bytes(L, -1)!)
        case LUA_TSTRING:
            failure = send(text: lua_bytes(L, -1)!, to: .outbound(name), from: worker)
        case LUA_TTABLE:
            guard entry.contentType == .json else {
                return push(L, .badRequest("a table is sent as JSON on content_type json connections only; \(name) is \(entry.contentType.rawValue)"))
            }
            worker.runner.jsonScratch.removeAll(keepingCapacity: true)
            if let error = JSONBridge.encode(L, index: lua_absindex(L, -1), into: &worker.runner.jsonScratch) {
                return push(L, .badRequest("message cannot be encoded as JSON: \(error)"))
            }
            failure = worker.runner.jsonScratch.withUnsafeBytes { send(text: $0, to: .outbound(name), from: worker) }
        default:
            return push(L, .badRequest("message must be a string or a table"))
        }
        if let failure { return push(L, failure) }
        return 0
    }
}
