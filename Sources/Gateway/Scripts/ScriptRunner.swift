import CLua
import CLuaSupport
import Foundation
import LuaRuntime
import Reactor
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
    /// Strong and a `let`, as `Connection.worker`: reading it needs no retain. The worker and its
    /// runner live as long as the process.
    let worker: Worker
    let lua: LuaState
    /// Compiled scripts by file relative to the endpoints folder.
    private(set) var scripts: [String: EndpointScript] = [:]

    /// What the run in progress serves, unless it is a socket's event (nil between runs); set
    /// around every start and resume, and restored after, since a run can start another (closing
    /// a socket of this loop runs its close event at once).
    private(set) var serving: ScriptRun.Subject?

    /// The socket whose event is running, if it is one. Unchecked and kept apart from `serving`:
    /// it is read by every `websocketInfo.send`, and set and restored around every message's run,
    /// where the retains and releases of an enum holding it cost more than the rest of that
    /// bookkeeping; the socket outlives its run (the worker and the caller hold it). Kept
    /// unmanaged: saving, restoring and reading it (`currentSocket`) retains nothing.
    private(set) var currentSocket: Unmanaged<Connection>?
    var current: Connection? { currentSocket?.takeUnretainedValue() }
    /// The event running for `current`.
    private(set) var currentEvent = ScriptEvent.open

    /// Sets what a run serves (a resumed run's subject, or the one around it, restored).
    private func serve(_ subject: ScriptRun.Subject?) {
        if case .socket(let connection, let event)? = subject {
            serving = nil
            (currentSocket, currentEvent) = (Unmanaged.passUnretained(connection), event)
        } else {
            serving = subject
            (currentSocket, currentEvent) = (nil, .open)
        }
    }

    /// What the run in progress serves, socket events included.
    private var subject: ScriptRun.Subject? {
        if let current { return .socket(current, currentEvent) }
        return serving
    }

    /// The outbound connection whose script is running, if it is one.
    var currentLink: OutboundLink? {
        if case .link(let link, _)? = serving { return link }
        return nil
    }

    /// The HTTP request whose endpoint script is running, if it is one.
    var currentCall: HTTPEndpointCall? {
        if case .http(let call)? = serving { return call }
        return nil
    }

    /// The upgrade whose connect hook is running, if it is one.
    var currentGate: ConnectGate? {
        if case .gate(let gate)? = serving { return gate }
        return nil
    }

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
    /// `websocketInfo` for the connect hook: a table of its own per upgrade.
    private let connectGlobal: LuaState.EventGlobal
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
        ScriptAPI.install(in: lua, cluster: worker.shared.cluster != nil)
        infoView = WebsocketInfoView(lua)
        websocketInfoGlobal = lua.eventGlobal(named: "websocketInfo", keepsValue: true)
        wsEventGlobal = lua.eventGlobal(named: "wsEvent", keepsValue: false)
        requestGlobal = lua.eventGlobal(named: "request", keepsValue: false)
        connectGlobal = lua.eventGlobal(named: "websocketInfo", keepsValue: false)
        lua_pushboolean(lua.L, 0)
        binaryMessageRef = luaL_ref(lua.L, lua_registryIndex())
        lua.sealBaseEnvironment()
        // The services find the runner (and through it the worker) from the state.
        lua.setOwner(self)
    }

    /// The text message of the socket event running, as the Lua string its script was given, while
    /// the reused `websocketInfo` holds that string (so it can be neither collected nor its memory
    /// reused): set by `WebsocketInfoView.push`, cleared when the run ends, waits or writes to
    /// `websocketInfo`. The session checked it on arrival, so sending that very string on (an
    /// echo, a relay) skips a second UTF-8 check.
    var receivedText: UnsafeRawBufferPointer?

    /// Whether `text` may go out in a text frame: the text message received, or valid UTF-8.
    func isSendableText(_ text: UnsafeRawBufferPointer) -> Bool {
        if let receivedText, text.baseAddress == receivedText.baseAddress, text.count == receivedText.count { return true }
        return UTF8Validator.isValid(text)
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
    private static let handlerFunction: StaticString = "handle_websocket_websocket_info"

    /// Runs a socket's event. While a run of the socket waits, its input is held, so the only event
    /// that can come is its close, which runs once the waiting run has ended.
    func runScript(_ connection: Connection, event: ScriptEvent, message: UnsafeRawBufferPointer?, binary: Bool) {
        // Neither is retained: the socket holds its script for good, and the socket around this
        // run (a nested one) outlives it.
        guard let unretained = connection.script.map(Unmanaged.passUnretained),
              !unretained._withUnsafeGuaranteedRef({ $0.removed }) else { return }
        if let waiting = connection.waitingRun {
            waiting.closeDeferred = true
            return
        }
        let startedAt = worker.loop.now
        // Usually nothing runs around this run: then nothing is retained to be restored.
        let outer = serving
        if outer != nil { serving = nil }
        let (outerSocket, outerEvent) = (currentSocket, currentEvent)
        (currentSocket, currentEvent) = (Unmanaged.passUnretained(connection), event)
        let reusedView = infoView.push(event: event, message: message, binary: binary, runner: self)
        lua.pushEnvironment(for: websocketInfoGlobal)
        let outcome = unretained._withUnsafeGuaranteedRef {
            lua.start($0.ref, in: websocketInfoGlobal, handler: $0.isEventHandler ? Self.handlerFunction : nil)
        }
        (currentSocket, currentEvent) = (outerSocket, outerEvent)
        if outer != nil { serving = outer }
        switch consume outcome {
        case .finished(let failure, let executed):
            infoView.finish(reused: reusedView, runner: self)
            unretained._withUnsafeGuaranteedRef { tally($0, executed: executed, failed: failure != nil) }
            if let failure { report(failure, subject: .socket(connection, event)) }
        case .suspended(let lua):
            // The pair goes with the waiting run; the next run gets a new one to reuse.
            if reusedView { infoView.detach(runner: self) }
            let run = ScriptRun(lua: lua, subject: .socket(connection, event), script: unretained.takeUnretainedValue(), startedAt: startedAt)
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
        let outer = subject
        serve(.link(link, event))
        ScriptAPI.pushWsEvent(lua.L, runner: self, link: link, event: event, message: message, binary: binary)
        lua.pushEnvironment(for: wsEventGlobal)
        let outcome = lua.start(script.ref, in: wsEventGlobal)
        serve(outer)
        switch outcome {
        case .finished(let failure, let executed):
            tally(script, executed: executed, failed: failure != nil)
            if let failure { report(failure, subject: .link(link, event)) }
        case .suspended(let lua):
            let run = ScriptRun(lua: lua, subject: .link(link, event), script: script, startedAt: startedAt)
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
        let outer = subject
        serve(.http(call))
        let host = request.head.header("host") ?? "\(worker.config.host):\(worker.listenPort)"
        call.pushRequest(L, head: request.head, parameters: parameters, body: body, host: host)
        lua.pushEnvironment(for: requestGlobal)
        call.setResponse(L, in: lua_gettop(L))
        let outcome = lua.start(script.ref, in: requestGlobal)
        serve(outer)
        switch outcome {
        case .finished(let failure, let executed):
            tally(script, executed: executed, failed: failure != nil)
            finished(.http(call), failure: failure)
        case .suspended(let lua):
            let run = ScriptRun(lua: lua, subject: .http(call), script: script, startedAt: startedAt)
            connection.scriptWaits(run)
            waitBegan(run)
        }
    }

    /// Runs `_connect.lua` for an upgrade; the 101 or the refusal follows when the run ends.
    func runConnectHook(_ gate: ConnectGate, script: EndpointScript) {
        let startedAt = worker.loop.now
        let outer = subject
        serve(.gate(gate))
        ScriptAPI.pushConnectInfo(lua.L, gate)
        lua.pushEnvironment(for: connectGlobal)
        let outcome = lua.start(script.ref, in: connectGlobal)
        serve(outer)
        switch outcome {
        case .finished(let failure, let executed):
            tally(script, executed: executed, failed: failure != nil)
            finished(.gate(gate), failure: failure)
        case .suspended(let lua):
            let run = ScriptRun(lua: lua, subject: .gate(gate), script: script, startedAt: startedAt)
            gate.connection.scriptWaits(run)
            waitBegan(run)
        }
    }

    // MARK: Runs that wait

    /// Set by a waiting function just before its run suspends: starts the wait, given the run and
    /// the wait's number (see `resume`).
    private var pendingWait: ((ScriptRun, Int) -> Void)?

    /// Called by a function that waits (from its `cls_push_waiting_function` prepare function,
    /// which then returns -1): `begin` starts the wait once the run has suspended, and must lead
    /// to one `resume` call. Where the call may not wait, nothing is kept: the waiting function
    /// raises its error instead of suspending.
    func suspendRun(_ L: OpaquePointer, _ begin: @escaping (ScriptRun, Int) -> Void) {
        guard cls_may_wait(L) != 0 else { return }
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
        let outer = subject
        serve(run.subject)
        let outcome = lua.resume(run.lua, pushing: push)
        serve(outer)
        switch outcome {
        case .finished(let failure, let executed):
            ended(run, failure: failure, executed: executed)
        case .suspended:
            waitBegan(run)
        }
    }

    /// Ends a waiting run where it is, with its wait cancelled, and logs why.
    private func abandon(_ run: ScriptRun, why: String) {
        run.cancelWait?()
        lua.abandon(run.lua)
        Log.error("script run abandoned \(run.what): \(why)", socket: run.socketId, route: run.route)
        ended(run, failure: nil, executed: run.lua.executedNanos, abandoned: "abandoned: \(why)")
    }

    /// A run finished without waiting: its failure is logged, an HTTP request answered, an upgrade
    /// decided.
    private func finished(_ subject: ScriptRun.Subject, failure: String?) {
        switch subject {
        case .socket, .link:
            if let failure { report(failure, subject: subject) }
        case .http(let call):
            answer(call, failure: failure)
        case .gate(let gate):
            worker.front.gateDecided(gate, failure: failure)
        }
    }

    /// Answers an HTTP request from its script's `response`, or 500 when the run failed or the
    /// table describes no valid answer.
    private func answer(_ call: HTTPEndpointCall, failure: String?) {
        var answer = call.answer(lua.L)
        if let failure { answer = .invalid(failure) }
        switch answer {
        case .response(let bytes):
            call.connection.respond(bytes, keepAlive: call.keepAlive)
        case .invalid(let why):
            Log.error("script error http: \(why)", route: call.route)
            call.connection.respond(HTTPResponse.make(status: 500, headers: [("Content-Type", "text/plain; charset=utf-8")],
                                                      body: HTTPEndpointCall.errorBody, keepAlive: call.keepAlive),
                                    keepAlive: call.keepAlive)
        }
    }

    /// A run that waited has ended (`abandoned` says why, if it did not finish): what it was for
    /// gets its outcome, then its socket or link its next events.
    private func ended(_ run: ScriptRun, failure: String?, executed: UInt64, abandoned: String? = nil) {
        run.end()
        tally(run.script, executed: executed, failed: failure != nil || abandoned != nil)
        switch run.subject {
        case .socket(let connection, _):
            if let failure { report(failure, subject: run.subject) }
            connection.scriptEnded()
            if run.closeDeferred { runScript(connection, event: .close, message: nil, binary: false) }
        case .http(let call):
            if abandoned != nil {
                call.release(lua.L)
                call.connection.respond(HTTPResponse.make(status: 504, headers: [("Content-Type", "text/plain; charset=utf-8")],
                                                          body: HTTPEndpointCall.timeoutBody, keepAlive: call.keepAlive),
                                        keepAlive: call.keepAlive)
            } else {
                answer(call, failure: failure)
            }
            call.connection.scriptEnded()
        case .gate(let gate):
            // The run lets go of the socket first: the open event the upgrade runs may wait in turn.
            gate.connection.scriptEnded()
            worker.front.gateDecided(gate, failure: abandoned ?? failure)
            gate.connection.gateOpened()
        case .link(let link, _):
            if let failure { report(failure, subject: run.subject) }
            link.scriptEnded()
            while link.waitingRun == nil, !link.deferredEvents.isEmpty {
                runOutboundScript(link, event: link.deferredEvents.removeFirst(), message: nil, binary: false)
            }
            if link.waitingRun == nil { link.connection?.scriptEnded() }
        }
    }

    /// Counts a run that ended, for /metrics: `executed` is the time it ran, waits excluded.
    @inline(__always)
    private func tally(_ script: EndpointScript, executed: UInt64, failed: Bool) {
        script.runs += 1
        if failed { script.errors += 1 }
        worker.metrics.scriptDuration.observe(nanos: executed)
    }

    /// Logs a failed run; one that used up its time has its socket read no more for a while.
    private func report(_ failure: String, subject: ScriptRun.Subject) {
        switch subject {
        case .socket(let connection, let event):
            Log.error("script error event=\(event.name): \(failure)", socket: connection.socketId, route: connection.info?.route)
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
        case .http, .gate:
            break
        }
    }
}
