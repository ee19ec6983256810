import CLua
import CLuaSupport
import LuaRuntime
import Reactor
import WebSocketCodec

/// The Lua API scripts see: `websocketInfo`, the `Websocket` and `Keystore` services, `Http`, `sleep`,
/// `jwt`, `to_json`, `from_json`, `print`.
/// Every function finds its worker through the Lua state's extra space, so none allocates a closure.
enum ScriptAPI {
    /// In a cluster the `Keystore` functions wait for Redis.
    static func install(in lua: LuaState, cluster: Bool) {
        let L = lua.L
        lua.setBaseGlobal("Websocket") {
            let service = LuaTable(pushedOn: L, fields: 14)
            // These reach sockets of other nodes in a cluster, where they wait for the answer.
            for (name, function) in [("list", websocketList), ("info", websocketInfo), ("send", websocketSend),
                                     ("close", websocketClose), ("closeAll", websocketCloseAll),
                                     ("subscribe", websocketSubscribe), ("unsubscribe", websocketUnsubscribe),
                                     ("publish", websocketPublish), ("subscriptions", websocketSubscriptions),
                                     ("subscribers", websocketSubscribers)] {
                cls_push_waiting_function(L, function, "Websocket." + name)
                lua_setfield(L, -2, name)
            }
            service.set("connect", websocketConnect)
            service.set("disconnect", websocketDisconnect)
            service.set("reset", websocketReset)
            service.set("outbound", websocketOutbound)
        }
        installJWT(in: lua)
        installSleep(in: lua)
        installHTTP(in: lua)
        installKeystore(in: lua, waiting: cluster)
        lua.setBaseGlobal("to_json") { lua_pushcfunction(L, toJSON) }
        lua.setBaseGlobal("from_json") { lua_pushcfunction(L, fromJSON) }
        // print converts its arguments in Lua, where a failing __tostring is an ordinary script error.
        lua.setBaseGlobal("print") {
            let wrapper = "local log = ... return function(...) local n = select('#', ...) local parts = {...} "
                + "for i = 1, n do parts[i] = tostring(parts[i]) end return log(table.concat(parts, '\\t', 1, n)) end"
            guard luaL_loadstring(L, wrapper) == LUA_OK else { fatalError("print wrapper does not compile") }
            lua_pushcfunction(L, printToLog)
            guard lua_pcall(L, 1, 1, 0) == LUA_OK else { fatalError("print wrapper failed") }
        }
    }

    /// Runs a C function's body with the state's memory limit lifted: a Lua memory error raised here
    /// would unwind through Swift frames. Script allocations stay limited.
    @inline(__always)
    static func withoutMemoryLimit(_ L: OpaquePointer?, _ body: (OpaquePointer) -> Int32) -> Int32 {
        LuaState.withMemoryLimitSuspended(L!) { body(L!) }
    }

    @inline(__always)
    static func worker(_ L: OpaquePointer?) -> Worker {
        LuaState.owner(of: L!, as: ScriptRunner.self).worker
    }

    // MARK: websocketInfo

    /// Sets every socket field `websocketInfo` builds on first read (uri, route, socket_id,
    /// subprotocol, extensions, headers, parameters, claims), all at once.
    static func pushInfoFields(_ table: LuaTable, _ info: ConnectionInfo) {
        for (field, name) in WebsocketInfoView.socketFields.enumerated() {
            WebsocketInfoView.pushSocketField(table.L, field, info)
            table.setFromTop(name)
        }
    }

    /// A table of name → value; the first of repeated names wins.
    static func pushPairs(_ L: OpaquePointer, _ pairs: [(name: String, value: String)]) {
        lua_createtable(L, 0, Int32(pairs.count))
        for (name, value) in pairs.reversed() {
            lua_pushswift(L, value)
            lua_setfield(L, -2, name)
        }
    }

    /// The request's headers as a table of lower-case name → value; the first of repeated names wins.
    static func pushHeaders(_ L: OpaquePointer, _ request: HTTPRequestHead) {
        lua_createtable(L, 0, Int32(request.fields.count))
        request.bytes.withUnsafeBytes { bytes in
            for field in request.fields.reversed() {
                let name = bytes.baseAddress! + Int(field.name.start)
                _ = lua_pushlstring(L, name.assumingMemoryBound(to: CChar.self), Int(field.name.end - field.name.start))
                let value = bytes.baseAddress! + Int(field.value.start)
                _ = lua_pushlstring(L, value.assumingMemoryBound(to: CChar.self), Int(field.value.end - field.value.start))
                lua_rawset(L, -3)
            }
        }
    }

    /// Sets `message` (base64 for a binary message) and `message_type`.
    static func pushMessage(_ table: LuaTable, runner: ScriptRunner, _ message: UnsafeRawBufferPointer, binary: Bool) {
        pushMessageString(table.L, runner: runner, message, binary: binary)
        table.setFromTop("message")
        table.set("message_type", literal: binary ? "data-binary" : "data-text")
    }

    /// Pushes a message as scripts get it: text as is, binary as base64 (whose bytes the runner
    /// keeps, so that sending that very string back needs no decoding).
    static func pushMessageString(_ L: OpaquePointer, runner: ScriptRunner, _ message: UnsafeRawBufferPointer, binary: Bool) {
        guard binary else {
            lua_pushlstring(L, message.baseAddress?.assumingMemoryBound(to: CChar.self), message.count)
            return
        }
        let length = Base64.encodedLength(message.count)
        let p = runner.textScratch.reserveWritable(length)
        Base64.encode(message, into: p)
        _ = lua_pushlstring(L, p.assumingMemoryBound(to: CChar.self), length)
        runner.textScratch.clear(keepingUpTo: 1 << 20)
        runner.keepBinaryMessage(base64At: -1, bytes: message)
    }

    // MARK: Error objects

    /// Pushes `{type=, error=, status=}` and returns 1 (the count of results).
    static func push(_ L: OpaquePointer, _ failure: ServiceFailure) -> Int32 {
        let table = LuaTable(pushedOn: L, fields: 3)
        table.set("type", failure.type)
        table.set("error", failure.message)
        table.set("status", failure.status)
        return 1
    }

    // MARK: Sending

    /// Sends text through the owner path, checked for UTF-8 first.
    static func send(text bytes: UnsafeRawBufferPointer, to ref: SocketRef, from worker: Worker) -> ServiceFailure? {
        guard worker.runner.isSendableText(bytes) else {
            if case .outbound = ref { return .badRequest("message is not valid UTF-8; use content_type \"binary\" for bytes") }
            return .badRequest("message is not valid UTF-8; send it with type \"data-binary\" as base64")
        }
        return worker.owners.send(to: ref, .text, bytes)
    }

    /// Sends a message with an explicit `type`, inbound or outbound: "data-text" as is,
    /// "data-binary" given as base64 and sent decoded, through the runner's scratch buffer.
    static func send(type: String, message: UnsafeRawBufferPointer, to ref: SocketRef, from worker: Worker) -> ServiceFailure? {
        switch type {
        case "data-text":
            return send(text: message, to: ref, from: worker)
        case "data-binary":
            switch withBinary(message, runner: worker.runner, { worker.owners.send(to: ref, .binary, $0) }) {
            case .success(let failure): return failure
            case .failure(let failure): return failure
            }
        default:
            return .badRequest("type must be \"data-text\" or \"data-binary\"")
        }
    }

    /// Hands `body` the bytes of a binary message given as base64: the kept message itself when
    /// `message` is its very string, else decoded into the runner's scratch buffer.
    static func withBinary<T>(_ message: UnsafeRawBufferPointer, runner: ScriptRunner, _ body: (UnsafeRawBufferPointer) -> T) -> Result<T, ServiceFailure> {
        if let original = runner.binaryMessage(encodedAs: message) { return .success(body(original)) }
        let p = runner.textScratch.reserveWritable(Base64.decodedCapacity(message.count))
        defer { runner.textScratch.clear(keepingUpTo: 1 << 20) }
        guard let count = Base64.decode(message, into: p) else { return .failure(.badRequest("message is not valid base64")) }
        return .success(body(UnsafeRawBufferPointer(start: p, count: count)))
    }

    /// Hands `body` a message of `type` as it goes out: text checked for UTF-8, binary decoded.
    static func decodedMessage<T>(type: String, message: UnsafeRawBufferPointer, runner: ScriptRunner,
                                  _ body: (Opcode, UnsafeRawBufferPointer) -> T) -> Result<T, ServiceFailure> {
        switch type {
        case "data-text":
            guard runner.isSendableText(message) else {
                return .failure(.badRequest("message is not valid UTF-8; send it with type \"data-binary\" as base64"))
            }
            return .success(body(.text, message))
        case "data-binary":
            return withBinary(message, runner: runner) { body(.binary, $0) }
        default:
            return .failure(.badRequest("type must be \"data-text\" or \"data-binary\""))
        }
    }

    /// Sends the message at `index` as text on a connection of this worker: a string as is, a table as JSON.
    private static func sendText(_ L: OpaquePointer, _ worker: Worker, _ index: Int32, on connection: Connection) -> ServiceFailure? {
        func sendValid(_ bytes: UnsafeRawBufferPointer) -> ServiceFailure? {
            guard LuaState.withOwner(of: L, as: ScriptRunner.self, { $0.isSendableText(bytes) }) else {
                return .badRequest("message is not valid UTF-8; send it with Websocket.send and type \"data-binary\" as base64")
            }
            return connection.offer(.text, bytes) ? nil : OwnerPath.slowReader(.socket(connection.socketId))
        }
        switch lua_type(L, index) {
        case LUA_TSTRING:
            return sendValid(lua_bytes(L, index)!)
        case LUA_TTABLE:
            worker.runner.jsonScratch.removeAll(keepingCapacity: true)
            if let error = JSONBridge.encode(L, index: index, into: &worker.runner.jsonScratch) {
                return .badRequest("message cannot be encoded as JSON: \(error)")
            }
            return worker.runner.jsonScratch.withUnsafeBytes { sendValid($0) }
        default:
            return .badRequest("message must be a string or a table, not \(String(cString: luaL_typename(L, index)))")
        }
    }

    // MARK: websocketInfo.send / close

    static let infoSend: lua_CFunction = { L in
        let L = L!
        // Neither the runner nor the socket is retained: both outlive the run.
        return LuaState.withOwner(of: L, as: ScriptRunner.self) { runner in
            let worker = runner.worker
            guard let current = runner.currentSocket, runner.currentEvent != .close else {
                return withoutMemoryLimit(L) { push($0, .notFound("socket \(runner.current?.socketId ?? "-") is closed")) }
            }
            return current._withUnsafeGuaranteedRef { connection in
                guard connection.isOpen else {
                    return withoutMemoryLimit(L) { push($0, .notFound("socket \(connection.socketId) is closed")) }
                }
                // A string to send allocates no Lua memory: only a failure needs the limit lifted.
                guard lua_type(L, 1) == LUA_TSTRING else {
                    return withoutMemoryLimit(L) { L in sendText(L, worker, 1, on: connection).map { push(L, $0) } ?? 0 }
                }
                guard let failure = sendText(L, worker, 1, on: connection) else { return 0 }
                return withoutMemoryLimit(L) { push($0, failure) }
            }
        }
    }

    static let infoClose: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            let worker = worker(L)
            guard let connection = worker.runner.current, worker.runner.currentEvent != .close, connection.isOpen else {
                return push(L, .notFound("socket \(worker.runner.current?.socketId ?? "-") is closed"))
            }
            connection.startClose(.normal)
            return 0
        }
    }

    // MARK: Websocket service

    /// A string field of the argument table: nil when absent, a failure when of another type.
    static func optionalString(_ L: OpaquePointer, _ field: String) -> Result<String?, ServiceFailure> {
        lua_getfield(L, 1, field)
        defer { lua_pop(L, 1) }
        if lua_isnoneornil(L, -1) { return .success(nil) }
        guard lua_type(L, -1) == LUA_TSTRING, let value = lua_swiftstring(L, -1) else {
            return .failure(.badRequest("\(field) must be a string"))
        }
        return .success(value)
    }

    /// The optional `wait` field of a call that may reach another node: false asks it not to wait
    /// for that node's answer.
    static func waitArgument(_ L: OpaquePointer) -> Result<Bool, ServiceFailure> {
        defer { lua_pop(L, 1) }
        switch lua_getfield(L, 1, "wait") {
        case LUA_TNIL: return .success(true)
        case LUA_TBOOLEAN: return .success(lua_toboolean(L, -1) != 0)
        default: return .failure(.badRequest("wait must be a boolean"))
        }
    }

    /// The fields of a message to send or publish: `wait` (see `waitArgument`), `type` and
    /// `message`, whose bytes stay valid while the call runs (its value stays on the stack).
    static func messageArguments(_ L: OpaquePointer) -> Result<(wait: Bool, type: String, message: UnsafeRawBufferPointer), ServiceFailure> {
        let wait: Bool
        switch waitArgument(L) {
        case .failure(let failure): return .failure(failure)
        case .success(let value): wait = value
        }
        lua_getfield(L, 1, "type")
        let type = lua_isnoneornil(L, -1) ? "data-text" : (lua_type(L, -1) == LUA_TSTRING ? lua_swiftstring(L, -1)! : "")
        lua_getfield(L, 1, "message")
        guard let message = lua_bytes(L, -1) else { return .failure(.badRequest("message must be a string (encode tables with to_json)")) }
        return .success((wait, type, message))
    }

    /// The `socket_id` field of the table argument, or the failure to report.
    static func socketIdArgument(_ L: OpaquePointer) -> Result<String, ServiceFailure> {
        guard lua_type(L, 1) == LUA_TTABLE else { return .failure(.badRequest("argument must be a table")) }
        guard case .success(let id?) = optionalString(L, "socket_id") else {
            return .failure(.badRequest("socket_id is required and must be a string"))
        }
        return .success(id)
    }

    /// Every node's open sockets; in a cluster the other nodes are asked.
    private static let websocketList: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            let worker = worker(L)
            let local = worker.shared.registry.all().map(\.info.socketId)
            guard worker.remoteCalls != nil else { return pushList(L, local) }
            return waitForAllNodes(L, worker, .list) { L, replies in pushList(L, local + replies.flatMap { NodeMessage.lines($0.payload) }) }
        }
    }

    static func pushList(_ L: OpaquePointer, _ ids: [String]) -> Int32 {
        let list = LuaTable(pushedOn: L, items: ids.count)
        for (i, id) in ids.enumerated() { list.set(i + 1, id) }
        return 1
    }

    private static let websocketInfo: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            switch socketIdArgument(L) {
            case .failure(let failure): return push(L, failure)
            case .success(let id):
                let worker = worker(L)
                let later = LaterAnswer(L, worker.runner)
                switch worker.owners.describe(id, forAdmin: false, then: later?.then(pushDescription)) {
                case .now(let description): return pushDescription(L, description)
                case .later: return later?.wait(L) ?? -1
                }
            }
        }
    }

    /// `Websocket.info`'s table: the socket's fields and `type = "open"`.
    private static func pushDescription(_ L: OpaquePointer, _ description: Result<OwnerPath.Description, ServiceFailure>) -> Int32 {
        switch description {
        case .failure(let failure):
            return push(L, failure)
        case .success(.here(let info)):
            let table = LuaTable(pushedOn: L, fields: 10)
            pushInfoFields(table, info)
            table.set("timestamp", Int(info.openedAt))
        case .success(.json(let fields)):
            if fields.withUnsafeBytes({ JSONBridge.decode(L, $0) }) != nil { return push(L, .badGateway("the owner's answer is not JSON")) }
        }
        lua_pushswift(L, "open")
        lua_setfield(L, -2, "type")
        return 1
    }

    private static let websocketSend: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            let worker = worker(L)
            if lua_type(L, 1) == LUA_TTABLE {
                let named = lua_getfield(L, 1, "name") != LUA_TNIL
                let bySocket = lua_getfield(L, 1, "socket_id") != LUA_TNIL
                lua_pop(L, 2)
                // In an outbound script, a send without socket_id goes to the connection of the event.
                if named || (!bySocket && worker.runner.currentLink != nil) { return sendOutbound(L, worker) }
            }
            let id: String
            switch socketIdArgument(L) {
            case .failure(let failure): return push(L, failure)
            case .success(let value): id = value
            }
            let (wait, type, message): (Bool, String, UnsafeRawBufferPointer)
            switch messageArguments(L) {
            case .failure(let failure): return push(L, failure)
            case .success(let fields): (wait, type, message) = fields
            }
            guard wait else {
                switch decodedMessage(type: type, message: message, runner: worker.runner, { worker.owners.sendUnanswered(to: id, $0, $1) }) {
                case .failure(let failure): return push(L, failure)
                case .success(let failure): return pushOutcome(L, failure)
                }
            }
            let later = LaterAnswer(L, worker.runner)
            switch decodedMessage(type: type, message: message, runner: worker.runner, { opcode, payload in
                worker.owners.send(to: id, opcode, payload, then: later?.then(pushOutcome))
            }) {
            case .failure(let failure): return push(L, failure)
            case .success(.now(let failure)): return pushOutcome(L, failure)
            case .success(.later): return later?.wait(L) ?? -1
            }
        }
    }

    private static let websocketClose: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            switch socketIdArgument(L) {
            case .failure(let failure): return push(L, failure)
            case .success(let id):
                let worker = worker(L)
                let later = LaterAnswer(L, worker.runner)
                switch worker.owners.close(id, then: later?.then(pushOutcome)) {
                case .now(let failure): return pushOutcome(L, failure)
                case .later: return later?.wait(L) ?? -1
                }
            }
        }
    }

    private static let websocketCloseAll: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            let worker = worker(L)
            var closed = 0
            for entry in worker.shared.registry.all() where worker.owners.close(.socket(entry.info.socketId)) == nil {
                closed += 1
            }
            guard worker.remoteCalls != nil else {
                lua_pushinteger(L, lua_Integer(closed))
                return 1
            }
            return waitForAllNodes(L, worker, .closeAll) { L, replies in
                lua_pushinteger(L, lua_Integer(closed + replies.reduce(0) { $0 + (Int(String(decoding: $1.payload, as: UTF8.self)) ?? 0) }))
                return 1
            }
        }
    }

    // MARK: JSON and print

    private static let toJSON: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            let worker = worker(L)
            worker.runner.jsonScratch.removeAll(keepingCapacity: true)
            if let error = JSONBridge.encode(L, index: 1, into: &worker.runner.jsonScratch) {
                lua_pushnil(L)
                lua_pushswift(L, error)
                return 2
            }
            worker.runner.jsonScratch.withUnsafeBytes { _ = lua_pushlstring(L, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
            return 1
        }
    }

    private static let fromJSON: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            guard let text = lua_bytes(L, 1) else {
                lua_pushnil(L)
                lua_pushswift(L, "from_json expects a string")
                return 2
            }
            if let error = JSONBridge.decode(L, text) {
                lua_pushnil(L)
                lua_pushswift(L, error)
                return 2
            }
            return 1
        }
    }

    private static let printToLog: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            let worker = worker(L)
            let text = lua_swiftstring(L, 1) ?? ""
            if let link = worker.runner.currentLink {
                Log.info("script print outbound=\(link.name): \(text)")
            } else if let call = worker.runner.currentCall {
                Log.info("script print http: \(text)", route: call.route)
            } else {
                Log.info("script print: \(text)", socket: worker.runner.current?.socketId, route: worker.runner.current?.info?.route)
            }
            return 0
        }
    }
}
