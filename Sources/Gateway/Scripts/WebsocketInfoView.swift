import CLua
import Glibc
import LuaRuntime
import Reactor

/// The `websocketInfo` of one loop's runs: an empty table (the view) whose reads go to a data table
/// the runner fills for each event, and whose writes go there too but mark the pair as written.
/// Runs reuse one pair as long as no script wrote to it: an event then costs the fields it brings
/// (type, timestamp, message, message_type) instead of a new table, its metatable and six fields,
/// which were most of a small script's run; and of those only the ones that differ from what the
/// pair holds (a run of messages on one loop usually changes the message alone).
///
/// The socket's own fields (uri, route, socket_id, subprotocol, extensions, headers, parameters, claims)
/// are built from its `ConnectionInfo` on first read and cleared after the run; `pairs` builds them
/// all first. The view's metatable is hidden, its data table unreachable (the `pairs` iterator
/// holds it as an upvalue), so a pair nobody wrote to holds nothing of the run that used it. A run
/// inside another (a socket closed while a script runs has its close event run at once) gets a pair
/// of its own, and a run that waits keeps the pair it has (`detach`).
final class WebsocketInfoView {
    private let L: OpaquePointer
    /// Pinned slots (`LuaState.stackBase`): the reused view and its data table (`false` once
    /// written to), and the strings an event sets (`Strings`, in their order from `firstString`).
    /// The metatable every data table shares is in the registry.
    private let viewSlot: Int32
    private let dataSlot: Int32
    private let firstString: Int32
    private let dataMetatableRef: Int32
    /// A run is using the reused pair.
    private var inUse = false
    /// A script wrote to a view since it was made.
    private var written = false
    /// The socket fields the reused data table holds, by `socketFields` index.
    private var builtFields: UInt8 = 0
    /// What the reused data table holds of the last event. Nothing but `push` changes these fields
    /// while the pair is reused: a script's write goes through the view and discards the pair.
    private var held = Held()

    /// The event fields a data table holds; a new one holds none.
    private struct Held {
        var type: ScriptEvent?
        var timestamp: Int64 = -1
        /// message_type: whether the message is binary, nil for none.
        var binary: Bool?
        /// The size of the message, -1 for none.
        var messageBytes = -1
    }

    /// A message up to this size stays in the reused pair until the next event replaces it (letting
    /// go of it costs more than it holds); a larger one goes when its run ends.
    private static let keptMessageBytes = 4096

    /// The names of the fields an event sets, then the values of `type` and `message_type`. Kept
    /// as Lua strings, so setting a field hashes no string.
    private enum Strings: Int32, CaseIterable {
        case type = 1, timestamp, message, messageType
        case open, data, close, text, binary
        var text: StaticString {
            switch self {
            case .type: return "type"
            case .timestamp: return "timestamp"
            case .message: return "message"
            case .messageType: return "message_type"
            case .open: return "open"
            case .data: return "data"
            case .close: return "close"
            case .text: return "data-text"
            case .binary: return "data-binary"
            }
        }
    }

    /// The fields built from the socket's `ConnectionInfo` when first read.
    static let socketFields: [StaticString] = ["uri", "route", "socket_id", "subprotocol", "extensions", "headers", "parameters", "claims"]

    /// Pushes the value of `socketFields[field]` for the socket `info` describes.
    static func pushSocketField(_ L: OpaquePointer, _ field: Int, _ info: ConnectionInfo) {
        switch field {
        case 0: lua_pushswift(L, info.uri)
        case 1: lua_pushswift(L, info.route)
        case 2: lua_pushswift(L, info.socketId)
        case 3: lua_pushswift(L, info.subprotocol)
        case 4: lua_pushswift(L, info.extensions)
        case 5: ScriptAPI.pushHeaders(L, info.request)
        case 6: ScriptAPI.pushPairs(L, info.parameters)
        default:
            var claims = info.claimsJSON
            if claims.withUTF8({ JSONBridge.decode(L, UnsafeRawBufferPointer($0)) }) != nil { lua_createtable(L, 0, 0) }
        }
    }

    init(_ lua: LuaState) {
        let L = lua.L
        self.L = L
        var slots: [Int32] = []
        for string in Strings.allCases {
            string.text.withUTF8Buffer { _ = lua_pushlstring(L, UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), $0.count) }
            slots.append(lua.pinTop())
        }
        firstString = slots[0]
        let metatable = LuaTable(pushedOn: L, fields: 1)
        metatable.set("__index", WebsocketInfoView.dataIndex)
        dataMetatableRef = luaL_ref(L, lua_registryIndex())
        lua_pushboolean(L, 0)
        viewSlot = lua.pinTop()
        lua_pushboolean(L, 0)
        dataSlot = lua.pinTop()
    }

    private func slot(_ string: Strings) -> Int32 { firstString + string.rawValue - 1 }

    /// Pushes the view for one event of the socket `ScriptRunner.current` names. Must be followed,
    /// once the run is over, by `finish(reused:)` with the value returned here.
    func push(event: ScriptEvent, message: UnsafeRawBufferPointer?, binary: Bool, runner: ScriptRunner) -> Bool {
        let reused = !inUse
        let data: Int32
        if reused {
            inUse = true
            if lua_type(L, dataSlot) != LUA_TTABLE {
                makePair()
                lua_replace(L, dataSlot)
                lua_replace(L, viewSlot)
                written = false
                builtFields = 0
                held = Held()
            }
            data = dataSlot
        } else {
            // Stack: view, data.
            makePair()
            data = lua_gettop(L)
        }
        // Only the fields that differ from what the pair holds are set.
        func string(_ string: Strings) { lua_pushvalue(L, slot(string)) }
        func set(_ key: Strings, _ push: () -> Void) {
            string(key)
            push()
            lua_rawset(L, data)
        }
        var last = reused ? held : Held()
        if last.type != event {
            set(.type) {
                switch event {
                case .open: string(.open)
                case .data: string(.data)
                case .close: string(.close)
                }
            }
            last.type = event
        }
        let timestamp = runner.worker.loop.wallNowMillis
        if last.timestamp != timestamp {
            set(.timestamp) { lua_pushinteger(L, lua_Integer(timestamp)) }
            last.timestamp = timestamp
        }
        runner.receivedText = nil
        if let message {
            set(.message) {
                if binary {
                    ScriptAPI.pushMessageString(L, runner: runner, message, binary: true)
                } else {
                    let text = lua_pushlstring(L, message.baseAddress?.assumingMemoryBound(to: CChar.self), message.count)
                    // Only the reused pair is held (in its pinned slot) until `finish`.
                    if reused { runner.receivedText = UnsafeRawBufferPointer(start: text, count: message.count) }
                }
            }
            last.messageBytes = message.count
        } else if last.messageBytes >= 0 {
            set(.message) { lua_pushnil(L) }
            last.messageBytes = -1
        }
        let messageType: Bool? = message == nil ? nil : binary
        if last.binary != messageType {
            set(.messageType) {
                if let binary = messageType { string(binary ? .binary : .text) } else { lua_pushnil(L) }
            }
            last.binary = messageType
        }
        if reused {
            held = last
            lua_pushvalue(L, viewSlot)
        } else {
            lua_settop(L, data - 1)
        }
        return reused
    }

    /// Ends the run of the view `push` returned `reused` for: the reused pair is kept for the next
    /// run unless a script wrote to it, without the socket's fields and a large message.
    func finish(reused: Bool, runner: ScriptRunner) {
        runner.receivedText = nil
        guard reused else { return }
        inUse = false
        guard lua_type(L, dataSlot) == LUA_TTABLE else { return }
        // A `rawset` on the view itself leaves a key in it.
        if written || {
            lua_pushnil(L)
            guard lua_next(L, viewSlot) != 0 else { return false }
            lua_pop(L, 2)
            return true
        }() {
            discardPair()
            return
        }
        if held.messageBytes > WebsocketInfoView.keptMessageBytes {
            lua_pushvalue(L, slot(.message))
            lua_pushnil(L)
            lua_rawset(L, dataSlot)
            held.messageBytes = -1
        }
        if builtFields != 0 {
            for (i, name) in WebsocketInfoView.socketFields.enumerated() where builtFields & (1 << i) != 0 {
                name.withUTF8Buffer { _ = lua_pushlstring(L, UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), $0.count) }
                lua_pushnil(L)
                lua_rawset(L, dataSlot)
            }
            builtFields = 0
        }
    }

    /// Lets go of the reused pair: the next run makes a new one.
    private func discardPair() {
        lua_pushboolean(L, 0)
        lua_replace(L, dataSlot)
        lua_pushboolean(L, 0)
        lua_replace(L, viewSlot)
    }

    /// Gives the reused pair to the run that holds it, which waits: the pair is no longer reused,
    /// and the next run gets a new one.
    func detach(runner: ScriptRunner) {
        runner.receivedText = nil
        inUse = false
        written = false
        builtFields = 0
        discardPair()
    }

    /// Pushes a new view and its data table (with `send` and `close`).
    private func makePair() {
        lua_createtable(L, 0, 0)
        let view = lua_gettop(L)
        let data = LuaTable(pushedOn: L, fields: 8)
        data.set("send", ScriptAPI.infoSend)
        data.set("close", ScriptAPI.infoClose)
        lua_rawgeti(L, lua_registryIndex(), lua_Integer(dataMetatableRef))
        lua_setmetatable(L, -2)
        let metatable = LuaTable(pushedOn: L, fields: 4)
        lua_pushvalue(L, view + 1)
        metatable.setFromTop("__index")
        lua_pushvalue(L, view + 1)
        lua_pushcclosure(L, WebsocketInfoView.viewNewIndex, 1)
        metatable.setFromTop("__newindex")
        lua_pushvalue(L, view + 1)
        lua_pushcclosure(L, WebsocketInfoView.viewPairs, 1)
        metatable.setFromTop("__pairs")
        // Scripts may neither read nor replace it.
        metatable.set("__metatable", false)
        lua_setmetatable(L, view)
    }

    private static func runner(_ L: OpaquePointer?) -> ScriptRunner { LuaState.owner(of: L!, as: ScriptRunner.self) }

    /// The data table's `__index`: builds a socket field on first read and keeps it there.
    private static let dataIndex: lua_CFunction = { L in
        ScriptAPI.withoutMemoryLimit(L) { L in
            let runner = runner(L)
            guard let info = runner.current?.info, let key = lua_bytes(L, 2),
                  let field = socketFields.firstIndex(where: { $0.utf8CodeUnitCount == key.count && memcmp($0.utf8Start, key.baseAddress!, key.count) == 0 })
            else { return 0 }
            pushSocketField(L, field, info)
            lua_pushvalue(L, 2)
            lua_pushvalue(L, -2)
            lua_rawset(L, 1)
            runner.infoView.noteBuilt(field, in: L, data: 1)
            return 1
        }
    }

    /// Records that the reused data table holds socket field `field` (the table at `data` may be a
    /// nested run's own).
    private func noteBuilt(_ field: Int, in L: OpaquePointer, data: Int32) {
        // The reused table is on the main thread's stack; `L` may be a run's coroutine.
        if lua_topointer(L, data) == lua_topointer(self.L, dataSlot) { builtFields |= 1 << field }
    }

    /// The view's `__newindex` (upvalue: the data table): the write lands in the data table, and the
    /// pair is not reused.
    private static let viewNewIndex: lua_CFunction = { L in
        ScriptAPI.withoutMemoryLimit(L) { L in
            let runner = runner(L)
            runner.infoView.written = true
            // The write may drop the message string the runner points to.
            runner.receivedText = nil
            lua_settop(L, 3)
            lua_rawset(L, lua_registryIndex() - 1)
            return 0
        }
    }

    /// The view's `__pairs` (upvalue: the data table): builds every socket field, then iterates the
    /// data table through a closure, so the table itself never reaches the script.
    private static let viewPairs: lua_CFunction = { L in
        ScriptAPI.withoutMemoryLimit(L) { L in
            let data = lua_registryIndex() - 1
            for name in socketFields {
                _ = name.withUTF8Buffer { lua_getfield(L, data, UnsafeRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self)) }
            }
            lua_settop(L, 1)
            lua_pushvalue(L, data)
            lua_pushcclosure(L, dataNext, 1)
            lua_pushvalue(L, 1)
            lua_pushnil(L)
            return 3
        }
    }

    /// `next` over the data table (upvalue), whatever the state argument.
    private static let dataNext: lua_CFunction = { L in
        lua_settop(L, 2)
        if lua_next(L, lua_registryIndex() - 1) != 0 { return 2 }
        lua_pushnil(L)
        return 1
    }
}
