import CLua
import Foundation
import LuaRuntime
import WebSocketCodec

/// The event a socket's script runs for.
enum ScriptEvent {
    case open, data, close

    var name: String {
        switch self {
        case .open: return "open"
        case .data: return "data"
        case .close: return "close"
        }
    }
}

/// One loop's Lua state and the scripts compiled in it: runs a socket's events (`websocketInfo`)
/// and an outbound connection's (`wsEvent`), each in a fresh environment over the sandboxed base
/// with the services installed (`ScriptAPI`). Knows which run is in progress, for the services.
final class ScriptRunner {
    /// Unchecked: the worker owns its runner (see Connection.worker).
    unowned(unsafe) let worker: Worker
    let lua: LuaState
    /// Compiled scripts by file relative to the endpoints folder.
    private(set) var scripts: [String: EndpointScript] = [:]

    /// The connection and event type of the script run in progress.
    private(set) var current: Connection?
    private(set) var currentEvent = ScriptEvent.open
    /// The outbound connection whose script is running, if it is one.
    private(set) var currentLink: OutboundLink?
    /// Scratch space for JSON and base64 text built for one call.
    var jsonScratch: [UInt8] = []
    var textScratch = ByteBuffer()
    /// The `websocketInfo` of this loop's runs.
    let infoView: WebsocketInfoView
    /// The globals that bring events to socket scripts and outbound scripts.
    private let websocketInfoGlobal: LuaState.EventGlobal
    private let wsEventGlobal: LuaState.EventGlobal
    /// The latest binary message a script was given: its base64 string, held in the registry so it
    /// cannot be collected and its memory reused, and its bytes. Sending that very string back
    /// (an echo, a relay) then sends the bytes without decoding anything.
    private let binaryMessageRef: Int32
    private var binaryMessageBase64: UnsafeRawPointer?
    private var binaryMessageBytes = ByteBuffer()

    init(worker: Worker, config: GatewayConfig) {
        self.worker = worker
        lua = LuaState(memoryLimit: config.scriptMemoryBytes)
        lua.timeoutNanos = UInt64(config.scriptTimeoutMs) * 1_000_000
        lua.setOwner(worker)
        ScriptAPI.install(in: lua)
        infoView = WebsocketInfoView(lua.L)
        websocketInfoGlobal = lua.eventGlobal(named: "websocketInfo", keepsValue: true)
        wsEventGlobal = lua.eventGlobal(named: "wsEvent", keepsValue: false)
        lua_pushboolean(lua.L, 0)
        binaryMessageRef = luaL_ref(lua.L, lua_registryIndex())
        lua.sealBaseEnvironment()
    }

    /// Remembers the binary message `bytes` whose base64 is the string at `index`.
    func keepBinaryMessage(base64At index: Int32, bytes: UnsafeRawBufferPointer) {
        let L = lua.L
        lua_pushvalue(L, index)
        lua_rawseti(L, lua_registryIndex(), lua_Integer(binaryMessageRef))
        binaryMessageBase64 = UnsafeRawPointer(lua_tolstring(L, index, nil))
        binaryMessageBytes.clear(keepingUpTo: 1 << 20)
        binaryMessageBytes.append(bytes)
    }

    /// The bytes of the kept binary message when `base64` is its very string (same memory).
    func binaryMessage(encodedAs base64: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        guard let kept = binaryMessageBase64, base64.baseAddress == kept,
              base64.count == Base64.encodedLength(binaryMessageBytes.count) else { return nil }
        return UnsafeRawBufferPointer(binaryMessageBytes.readable)
    }

    func configChanged(_ config: GatewayConfig) {
        lua.timeoutNanos = UInt64(config.scriptTimeoutMs) * 1_000_000
    }

    /// Compiles new and changed scripts; a script that no longer compiles keeps its previous
    /// version, and a removed one is marked `removed` (its sockets are the worker's to close).
    func apply(_ set: ScriptSet) {
        var next: [String: EndpointScript] = [:]
        for (file, source) in set.sources {
            let name = (worker.shared.endpointsFolder as NSString).appendingPathComponent(file)
            if let script = scripts[file] {
                if script.source != source {
                    switch lua.compile(source, chunkName: name) {
                    case .success(let ref):
                        lua.release(script.ref)
                        script.ref = ref
                        script.source = source
                    case .failure(let error):
                        Log.error("script \(name) does not compile, keeping the previous version: \(error.message)")
                    }
                }
                next[file] = script
            } else if case .success(let ref) = lua.compile(source, chunkName: name) {
                next[file] = EndpointScript(file: file, source: source, ref: ref)
            }
        }
        for (file, script) in scripts where next[file] == nil {
            script.removed = true
            lua.release(script.ref)
        }
        scripts = next
    }

    func runScript(_ connection: Connection, event: ScriptEvent, message: UnsafeRawBufferPointer?, binary: Bool) {
        guard let script = connection.script, !script.removed else { return }
        let L = lua.L
        // Restored after the run: a run that closes another socket of this loop may run that
        // socket's close event inside it.
        let (previous, previousEvent) = (current, currentEvent)
        current = connection
        currentEvent = event
        defer { (current, currentEvent) = (previous, previousEvent) }
        let reusedView = infoView.push(event: event, message: message, binary: binary, runner: self)
        lua.pushEnvironment(for: websocketInfoGlobal)
        let failure: String?
        if !script.isEventHandler {
            failure = lua.run(script.ref, in: websocketInfoGlobal)
        } else {
            failure = lua.run(script.ref, in: websocketInfoGlobal) { [lua] env in
                lua_getfield(L, env, "handle_websocket_websocket_info")
                guard lua_type(L, -1) == LUA_TFUNCTION else {
                    lua_pop(L, 1)
                    return "\(Router.eventHandlerFile) does not define function handle_websocket_websocket_info"
                }
                lua_getfield(L, env, "websocketInfo")
                return lua.protectedCall()
            }
        }
        infoView.finish(reused: reusedView)
        if let failure {
            Log.error("script error route=\(connection.info?.route ?? "-") socket=\(connection.socketId) event=\(event.name): \(failure)")
            if lua.timeoutNanos > 0 && lua.lastRunTimedOut && connection.isOpen {
                // The loop just spent a whole timeout on this socket: serve the others before its
                // next message.
                connection.pauseReading(for: lua.timeoutNanos)
            }
        }
    }

    func runOutboundScript(_ link: OutboundLink, event: OutboundEvent, message: UnsafeRawBufferPointer?, binary: Bool) {
        guard let script = scripts[link.scriptFile], !script.removed else {
            Log.error("outbound \(link.name): script \(link.scriptFile) is gone; its \(event.name) event is not handled")
            return
        }
        let L = lua.L
        currentLink = link
        defer { currentLink = nil }
        ScriptAPI.pushWsEvent(L, runner: self, link: link, event: event, message: message, binary: binary)
        lua.pushEnvironment(for: wsEventGlobal)
        if let failure = lua.run(script.ref, in: wsEventGlobal) {
            Log.error("script error outbound=\(link.name) script=\(link.scriptFile) event=\(event.name): \(failure)")
            if lua.timeoutNanos > 0 && lua.lastRunTimedOut, let connection = link.connection, connection.isOpen {
                connection.pauseReading(for: lua.timeoutNanos)
            }
        }
    }
}
