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
    /// The HTTP request whose endpoint script is running, if it is one.
    private(set) var currentCall: HTTPEndpointCall?
    /// Scratch space for JSON and base64 text built for one call.
    var jsonScratch: [UInt8] = []
    var textScratch = ByteBuffer()
    /// The `websocketInfo` of this loop's runs.
    let infoView: WebsocketInfoView
    /// The globals that bring events to socket scripts and outbound scripts.
    private let websocketInfoGlobal: LuaState.EventGlobal
    private let wsEventGlobal: LuaState.EventGlobal
    /// The global that brings HTTP endpoint scripts their request.
    private let requestGlobal: LuaState.EventGlobal
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
        requestGlobal = lua.eventGlobal(named: "request", keepsValue: false)
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

    /// The name of the function an event handler script defines.
    private static let handlerFunction = "handle_websocket_websocket_info"

    /// Runs a socket's event. While a run of the socket waits, its input is held, so the only event
    /// that can come is its close, which runs once the waiting run has ended.
    func runScript(_ connection: Connection, event: ScriptEvent, message: UnsafeRawBufferPointer?, binary: Bool) {
        guard let script = connection.script, !script.removed else { return }
        if let waiting = connection.waitingRun {
            waiting.closeDeferred = true
            return
        }
        let startedAt = worker.loop.now
        // Restored after the run: a run that closes another socket of this loop may run that
        // socket's close event inside it.
        let outer = (current, currentEvent, currentLink, currentCall)
        (current, currentEvent, currentLink, currentCall) = (connection, event, nil, nil)
        let reusedView = infoView.push(event: event, message: message, binary: binary, runner: self)
        lua.pushEnvironment(for: websocketInfoGlobal)
        let outcome = lua.start(script.ref, in: websocketInfoGlobal, handler: script.isEventHandler ? Self.handlerFunction : nil)
        (current, currentEvent, currentLink, currentCall) = outer
        switch outcome {
        case .finished(let failure):
            infoView.finish(reused: reusedView)
            if let failure { report(failure, subject: .socket(connection, event)) }
        case .suspended(let lua):
            // The pair goes with the waiting run; the next run gets a new one to reuse.
            if reusedView { infoView.detach() }
            let run = ScriptRun(lua: lua, subject: .socket(connection, event), startedAt: startedAt)
            connection.scriptWaits(run)
            waitBegan(run)
        }
    }

    /// Runs an outbound connection's event; while a run of the link waits, its events queue.
    func runOutboundScript(_ link: OutboundLink, event: OutboundEvent, message: UnsafeRawBufferPointer?, binary: Bool) {
        if link.waitingRun != nil {
            // Data cannot come: the connection's input is held.
            if case .data = event { return }
            link.deferredEvents.append(event)
            return
        }
        guard let script = scripts[link.scriptFile], !script.removed else {
            Log.error("outbound \(link.name): script \(link.scriptFile) is gone; its \(event.name) event is not handled")
            return
        }
        let startedAt = worker.loop.now
        let outer = (current, currentEvent, currentLink, currentCall)
        (current, currentEvent, currentLink, currentCall) = (nil, .open, link, nil)
        ScriptAPI.pushWsEvent(lua.L, runner: self, link: link, event: event, message: message, binary: binary)
        lua.pushEnvironment(for: wsEventGlobal)
        let outcome = lua.start(script.ref, in: wsEventGlobal)
        (current, currentEvent, currentLink, currentCall) = outer
        switch outcome {
        case .finished(let failure):
            if let failure { report(failure, subject: .link(link, event)) }
        case .suspended(let lua):
            let run = ScriptRun(lua: lua, subject: .link(link, event), startedAt: startedAt)
            link.scriptWaits(run)
            waitBegan(run)
        }
    }

    /// Runs an HTTP endpoint script for a request whose body has arrived; the answer is written
    /// when the run ends (at once, or after its waits).
    func runHTTPScript(_ connection: Connection, script: EndpointScript, request: IncomingRequest, route: String,
                       parameters: [(name: String, value: String)], body: [UInt8]) {
        let call = HTTPEndpointCall(connection: connection, route: route, keepAlive: request.keepAlive)
        guard !script.removed else {
            finished(.http(call), failure: "the script was removed")
            return
        }
        let L = lua.L
        let startedAt = worker.loop.now
        let outer = (current, currentEvent, currentLink, currentCall)
        (current, currentEvent, currentLink, currentCall) = (nil, .open, nil, call)
        let host = request.head.header("host") ?? "\(worker.config.host):\(worker.listenPort)"
        call.pushRequest(L, head: request.head, parameters: parameters, body: body, host: host)
        lua.pushEnvironment(for: requestGlobal)
        call.setResponse(L, in: lua_gettop(L))
        let outcome = lua.start(script.ref, in: requestGlobal)
        (current, currentEvent, currentLink, currentCall) = outer
        switch outcome {
        case .finished(let failure):
            finished(.http(call), failure: failure)
        case .suspended(let lua):
            let run = ScriptRun(lua: lua, subject: .http(call), startedAt: startedAt)
            connection.scriptWaits(run)
            waitBegan(run)
        }
    }

    // MARK: Runs that wait

    /// Set by a waiting function just before its run suspends: starts the wait, given the run and
    /// the wait's number (see `resume`).
    private var pendingWait: ((ScriptRun, Int) -> Void)?

    /// Called by a function that waits (from its `cls_push_waiting_function` prepare function):
    /// `begin` starts the wait once the run has suspended, and must lead to one `resume` call.
    func suspendRun(_ begin: @escaping (ScriptRun, Int) -> Void) {
        pendingWait = begin
    }

    /// A run just suspended: starts its wait, and bounds the whole run by scripts.waitTimeoutMs.
    private func waitBegan(_ run: ScriptRun) {
        let begin = pendingWait
        pendingWait = nil
        if run.wait == 0, worker.config.scriptWaitTimeoutMs > 0 {
            let limit = UInt64(worker.config.scriptWaitTimeoutMs) * 1_000_000
            let elapsed = worker.loop.now &- run.startedAt
            worker.loop.schedule(after: limit > elapsed ? limit - elapsed : 0) { [weak self, weak run] in
                guard let self, let run, !run.ended else { return }
                self.abandon(run, why: "it took longer than scripts.waitTimeoutMs (\(self.worker.config.scriptWaitTimeoutMs) ms)")
            }
        }
        let number = run.nextWait()
        guard let begin else {
            // Only a waiting function suspends a run; anything else is a bug of ours, not the script's.
            abandon(run, why: "it suspended without waiting for anything")
            return
        }
        beginningWait = true
        begin(run, number)
        beginningWait = false
    }

    /// A wait is being started: an answer that comes at once is held until the loop's next turn,
    /// so that a run never resumes inside the event dispatch that suspended it.
    private var beginningWait = false

    /// Resumes `run` with the answer to its wait `number`, which `push` pushes on the run's
    /// coroutine (returning the count); does nothing if the run has ended or waits for something
    /// else by now.
    func resume(_ run: ScriptRun, wait number: Int, pushing push: @escaping (OpaquePointer) -> Int32) {
        guard run.accepts(number) else { return }
        if beginningWait {
            worker.loop.schedule(after: 0) { [weak self, weak run] in
                guard let self, let run else { return }
                self.resume(run, wait: number, pushing: push)
            }
            return
        }
        let outer = (current, currentEvent, currentLink, currentCall)
        switch run.subject {
        case .socket(let connection, let event): (current, currentEvent, currentLink, currentCall) = (connection, event, nil, nil)
        case .link(let link, _): (current, currentEvent, currentLink, currentCall) = (nil, .open, link, nil)
        case .http(let call): (current, currentEvent, currentLink, currentCall) = (nil, .open, nil, call)
        }
        let outcome = lua.resume(run.lua, pushing: push)
        (current, currentEvent, currentLink, currentCall) = outer
        switch outcome {
        case .finished(let failure):
            finished(run.subject, failure: failure)
            ended(run)
        case .suspended:
            waitBegan(run)
        }
    }

    /// Ends a waiting run where it is, with its wait cancelled, and logs why. An HTTP request whose
    /// script is abandoned is answered 504.
    private func abandon(_ run: ScriptRun, why: String) {
        run.cancelWait?()
        lua.abandon(run.lua)
        Log.error("script run abandoned route=\(run.route) socket=\(run.socketId) event=\(run.eventName): \(why)")
        if case .http(let call) = run.subject {
            call.release(lua.L)
            call.connection.respond(HTTPResponse.make(status: 504, headers: [("Content-Type", "text/plain; charset=utf-8")],
                                                      body: HTTPEndpointCall.timeoutBody, keepAlive: call.keepAlive),
                                    keepAlive: call.keepAlive)
        }
        ended(run)
    }

    /// A run finished: a failure is logged, an HTTP request answered.
    private func finished(_ subject: ScriptRun.Subject, failure: String?) {
        guard case .http(let call) = subject else {
            if let failure { report(failure, subject: subject) }
            return
        }
        var answer = call.answer(lua.L)
        if let failure { answer = .invalid(failure) }
        switch answer {
        case .response(let bytes):
            call.connection.respond(bytes, keepAlive: call.keepAlive)
        case .invalid(let why):
            Log.error("script error route=\(call.route) http: \(why)")
            call.connection.respond(HTTPResponse.make(status: 500, headers: [("Content-Type", "text/plain; charset=utf-8")],
                                                      body: HTTPEndpointCall.errorBody, keepAlive: call.keepAlive),
                                    keepAlive: call.keepAlive)
        }
    }

    /// The socket or link of a run that ended gets its next events.
    private func ended(_ run: ScriptRun) {
        run.end()
        switch run.subject {
        case .socket(let connection, _):
            connection.scriptEnded()
            if run.closeDeferred { runScript(connection, event: .close, message: nil, binary: false) }
        case .http(let call):
            call.connection.scriptEnded()
        case .link(let link, _):
            link.scriptEnded()
            while link.waitingRun == nil, !link.deferredEvents.isEmpty {
                runOutboundScript(link, event: link.deferredEvents.removeFirst(), message: nil, binary: false)
            }
            if link.waitingRun == nil { link.connection?.scriptEnded() }
        }
    }

    /// Logs a failed run; one that used up its time has its socket read no more for a while.
    private func report(_ failure: String, subject: ScriptRun.Subject) {
        switch subject {
        case .socket(let connection, let event):
            Log.error("script error route=\(connection.info?.route ?? "-") socket=\(connection.socketId) event=\(event.name): \(failure)")
            if lua.timeoutNanos > 0 && lua.lastRunTimedOut && connection.isOpen {
                // The loop just spent a whole timeout on this socket: serve the others before its
                // next message.
                connection.pauseReading(for: lua.timeoutNanos)
            }
        case .link(let link, let event):
            Log.error("script error outbound=\(link.name) script=\(link.scriptFile) event=\(event.name): \(failure)")
            if lua.timeoutNanos > 0 && lua.lastRunTimedOut, let connection = link.connection, connection.isOpen {
                connection.pauseReading(for: lua.timeoutNanos)
            }
        case .http:
            break
        }
    }
}
