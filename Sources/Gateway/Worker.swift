import CLua
import Foundation
import LuaRuntime
import Reactor
import Synchronization
import WebSocketCodec

/// What all workers share: the socket registry, the worker list, start-up settings.
final class SharedState {
    let registry = Registry()
    /// Upgraded sockets not yet closed, closing ones included (the registry lists only open ones):
    /// what shutdown waits for.
    let liveSockets = Atomic<Int>(0)
    let endpointsFolder: String
    /// Makes socket ids unique across restarts: random per process.
    let socketIdPrefix: String
    var workers: [Worker] = []
    let outbound = OutboundRegistry()
    /// TLS client contexts by CA file ("" for the system trust store): loading a trust store is
    /// slow, and a context serves any number of connections on any loop.
    private var tlsClientContexts: [String: TLSClientContext] = [:]
    private let tlsClientLock = Lock()

    init(endpointsFolder: String) {
        self.endpointsFolder = endpointsFolder
        var random = SystemRandomNumberGenerator()
        socketIdPrefix = String(random.next() & 0xFFFF_FFFF_FFFF, radix: 36)
    }
}

extension SharedState {
    func tlsClientContext(caFile: String?) throws(TLSError) -> TLSClientContext {
        try tlsClientLock.locked { () -> Result<TLSClientContext, TLSError> in
            if let existing = tlsClientContexts[caFile ?? ""] { return .success(existing) }
            let loaded = Result { () throws(TLSError) in try TLSClientContext.load(caFile: caFile) }
            if case .success(let context) = loaded { tlsClientContexts[caFile ?? ""] = context }
            return loaded
        }.get()
    }
}

/// One event loop, its Lua state and the sockets it owns. Everything here is touched only on the
/// loop's thread; other threads reach it through `loop.post`.
final class Worker {
    static let healthPath = "/api/v1/solution/health"

    let index: Int
    let loop: EventLoop
    let shared: SharedState
    private(set) var config: GatewayConfig
    private var originPolicy: OriginPolicy
    let lua: LuaState
    private var router = Router(routes: [])
    private var routeScripts: [EndpointScript] = []
    private var eventHandler: EndpointScript?
    private var scripts: [String: EndpointScript] = [:]
    private let listenFd: Int32
    let listenPort: Int
    /// Set by `beginShutdown`: upgrades and the health route answer 503.
    private(set) var shuttingDown = false

    /// Upgraded sockets by id.
    var connections: [String: Connection] = [:]
    /// The outbound connections opened on this loop, by name.
    var links: [String: OutboundLink] = [:]
    /// Connections with output queued during this loop iteration.
    var flushList: [Connection] = []
    /// Every socket reads into this one buffer first; only leftovers are copied per connection.
    let readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
    private var socketCounter = 0

    /// The connection and event type of the script run in progress.
    var current: Connection?
    var currentEvent = ScriptEvent.open
    /// The outbound connection whose script is running, if it is one.
    var currentLink: OutboundLink?
    /// Scratch space for JSON and base64 text built for one call.
    var jsonScratch: [UInt8] = []
    var textScratch = ByteBuffer()
    /// zlib streams and buffers for permessage-deflate, shared by this loop's connections.
    let zlib = SharedZlib()
    /// Set when the port speaks TLS; replaced on SIGHUP, used by connections accepted afterwards.
    var tlsContext: TLSServerContext?

    init(index: Int, shared: SharedState, config: GatewayConfig, scripts: ScriptSet, listenFd: Int32, tls: TLSServerContext?) {
        self.index = index
        tlsContext = tls
        self.shared = shared
        self.config = config
        originPolicy = OriginPolicy(patterns: config.approvedSocketDomains)
        self.listenFd = listenFd
        listenPort = Socket.localPort(listenFd)
        loop = EventLoop(index: index)
        lua = LuaState(memoryLimit: config.scriptMemoryBytes)
        lua.timeoutNanos = UInt64(config.scriptTimeoutMs) * 1_000_000
        lua.extraSpace.storeBytes(of: Unmanaged.passUnretained(self).toOpaque(), as: UnsafeMutableRawPointer.self)
        ScriptAPI.install(in: lua)
        lua.sealBaseEnvironment()
        apply(scripts)
        loop.afterIteration = { [unowned self] in self.flushAll() }
        let listener = Listener(worker: self, fd: listenFd)
        listener.registration = loop.register(fd: listenFd, events: IOEvents.readable, handler: listener)
        scheduleSweep()
    }

    func start() {
        let thread = Thread { [self] in loop.run() }
        thread.name = "wsgate-loop-\(index)"
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// Flushes until no connection has output left: a flush can close a socket, whose close script
    /// may queue output for others.
    private func flushAll() {
        while !flushList.isEmpty {
            let list = flushList
            flushList.removeAll(keepingCapacity: true)
            for connection in list where !connection.isClosed { connection.flush() }
        }
    }

    // MARK: Live changes (run on this loop through its mailbox)

    /// Compiles new and changed scripts; sockets of a removed route are closed with 1001.
    func apply(_ set: ScriptSet) {
        var next: [String: EndpointScript] = [:]
        for (file, source) in set.sources {
            let name = (shared.endpointsFolder as NSString).appendingPathComponent(file)
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
        router = Router(routes: set.routes.filter { next[$0.file] != nil })
        routeScripts = router.routes.map { next[$0.file]! }
        eventHandler = next[Router.eventHandlerFile]
        for connection in connections.values where connection.script?.removed == true {
            connection.startClose(.goingAway, reason: "endpoint removed")
        }
        for link in links.values where next[link.scriptFile] == nil && !link.stopped {
            Log.warn("outbound \(link.name): script \(link.scriptFile) was removed; disconnecting")
            link.disconnect(.goingAway)
        }
    }

    func update(_ newConfig: GatewayConfig) {
        config = newConfig
        for connection in connections.values { connection.configChanged() }
        for link in links.values { link.connection?.configChanged() }
        lua.timeoutNanos = UInt64(newConfig.scriptTimeoutMs) * 1_000_000
        originPolicy = OriginPolicy(patterns: newConfig.approvedSocketDomains)
    }

    func beginShutdown() {
        shuttingDown = true
        for connection in connections.values { connection.startClose(.goingAway, reason: "server shutting down") }
        for link in links.values where !link.stopped { link.disconnect(.goingAway) }
    }

    // MARK: Pings and idle timeouts

    private func scheduleSweep() {
        let periods = [config.pingIntervalMs, config.idleTimeoutMs].filter { $0 > 0 }
        let every = min(max((periods.min() ?? 1000) / 4, 50), 1000)
        loop.schedule(after: UInt64(every) * 1_000_000) { [unowned self] in
            self.sweep()
            self.scheduleSweep()
        }
    }

    private func sweep() {
        let ping = UInt64(config.pingIntervalMs) * 1_000_000
        let idle = UInt64(config.idleTimeoutMs) * 1_000_000
        guard ping > 0 || idle > 0 else { return }
        for connection in connections.values { connection.tick(ping: ping, idle: idle) }
        // Outbound connections too: a server that stopped answering is found and dialled again.
        for link in links.values { link.connection?.tick(ping: ping, idle: idle) }
    }

    // MARK: HTTP

    func handleRequest(_ connection: Connection, head bytes: UnsafeRawBufferPointer) {
        let head: HTTPRequestHead
        switch HTTPRequestParser.parse(bytes) {
        case .success(let parsed): head = parsed
        case .failure(.malformed(let why)):
            Log.debug("bad request: \(why)")
            connection.respondAndClose(HTTPResponse.make(status: 400, reason: "Bad Request"))
            return
        }
        let path = head.path
        if path == Worker.healthPath {
            let response: [UInt8]
            if !shuttingDown, case .upgrade(let key) = Handshake.evaluate(head) {
                answerHealthUpgrade(connection, key: key)
                return
            }
            if head.method != "GET" && head.method != "HEAD" {
                response = HTTPResponse.make(status: 405, reason: "Method Not Allowed", headers: ["Allow: GET"])
            } else if shuttingDown {
                response = HTTPResponse.make(status: 503, reason: "Service Unavailable", body: "shutting down\n")
            } else {
                response = HTTPResponse.make(status: 200, reason: "OK", body: "OK")
            }
            connection.respondAndClose(response)
            return
        }
        let match = router.match(path: path)
        guard match != nil || eventHandler != nil else {
            connection.respondAndClose(HTTPResponse.make(status: 404, reason: "Not Found"))
            return
        }
        switch Handshake.evaluate(head) {
        case .notUpgrade:
            connection.respondAndClose(HTTPResponse.make(status: 426, reason: "Upgrade Required", body: "This is a WebSocket endpoint.\n",
                                                         headers: ["Upgrade: websocket", "Sec-WebSocket-Version: 13"]))
        case .badRequest(let why):
            Log.debug("rejected upgrade on \(path): \(why)")
            connection.respondAndClose(HTTPResponse.make(status: 400, reason: "Bad Request", body: why + "\n"))
        case .upgradeRequired:
            connection.respondAndClose(HTTPResponse.make(status: 426, reason: "Upgrade Required", headers: ["Sec-WebSocket-Version: 13"]))
        case .upgrade(let key):
            let origin = head.header("origin")
            if !originPolicy.allows(origin: origin) {
                Log.warn("refused upgrade on \(path) from origin \(origin.map { "\"\($0)\"" } ?? "(none)"): not in websocket.approvedSocketDomains")
                connection.respondAndClose(HTTPResponse.make(status: 403, reason: "Forbidden", body: "origin not allowed\n"))
            } else if shuttingDown {
                connection.respondAndClose(HTTPResponse.make(status: 503, reason: "Service Unavailable", body: "shutting down\n", headers: ["Retry-After: 5"]))
            } else if shared.registry.count >= config.maxConnections {
                Log.warn("refused upgrade on \(path): limits.maxConnections (\(config.maxConnections)) reached")
                connection.respondAndClose(HTTPResponse.make(status: 503, reason: "Service Unavailable", body: "too many connections\n", headers: ["Retry-After: 5"]))
            } else {
                upgrade(connection, head: head, key: key, match: match)
            }
        }
    }

    /// A WebSocket client on the health route (`wsgate probe`, in a container's health check) gets
    /// "OK" and a close: proof that this loop upgrades and serves frames, whatever the scripts are.
    private func answerHealthUpgrade(_ connection: Connection, key: String) {
        let session = WebSocketSession(role: .server, maxMessageBytes: config.maxMessageBytes, now: loop.now)
        connection.open(response: Handshake.switchingProtocols(key: key), session: session, info: nil, script: nil, luaFieldsRef: 0)
        _ = Array("OK".utf8).withUnsafeBytes { connection.offer(.text, $0) }
        connection.startClose(.normal)
    }

    /// The first protocol the client offers that we support, or "".
    private func chooseSubprotocol(_ head: HTTPRequestHead) -> String {
        guard !config.subprotocols.isEmpty else { return "" }
        for header in head.headers where header.name == "sec-websocket-protocol" {
            for offered in header.value.split(separator: ",") {
                let name = offered.trimmingCharacters(in: .whitespaces)
                if config.subprotocols.contains(name) { return name }
            }
        }
        return ""
    }

    private func upgrade(_ connection: Connection, head: HTTPRequestHead, key: String, match: Router.Match?) {
        socketCounter += 1
        let socketId = "\(shared.socketIdPrefix)-\(index)-\(socketCounter)"
        var parameters = match?.parameters ?? []
        for item in URLComponentsDecoding.queryItems(head.query) where !parameters.contains(where: { $0.name == item.name }) {
            parameters.append(item)
        }
        let host = head.header("host") ?? "\(config.host):\(listenPort)"
        let subprotocol = chooseSubprotocol(head)
        var extraHeaders = subprotocol.isEmpty ? [] : ["Sec-WebSocket-Protocol: \(subprotocol)"]
        let offers = head.headers.filter { $0.name == "sec-websocket-extensions" }.map(\.value).joined(separator: ", ")
        var deflate: DeflateSession?
        var extensions = ""
        if config.compressionEnabled, !offers.isEmpty,
           let (settings, response) = PerMessageDeflate.negotiate(offers: offers, policy: config.deflatePolicy) {
            deflate = DeflateSession(settings: settings, role: .server)
            extensions = response
            extraHeaders.append("Sec-WebSocket-Extensions: \(response)")
        }
        let scheme = connection.isTLS ? "wss" : "ws"
        let info = ConnectionInfo(socketId: socketId, uri: "\(scheme)://\(host)\(head.target)",
                                  route: match.map { router.routes[$0.routeIndex].pattern } ?? head.path,
                                  headers: head.headers, parameters: parameters, subprotocol: subprotocol,
                                  extensions: extensions, openedAt: EventLoop.wallMillis())
        let session = WebSocketSession(role: .server, maxMessageBytes: config.maxMessageBytes, deflate: deflate, zlib: zlib,
                                       compressionMinBytes: config.compressionMinBytes, now: loop.now)
        connection.open(response: Handshake.switchingProtocols(key: key, extraHeaders: extraHeaders), session: session, info: info,
                        script: match.map { routeScripts[$0.routeIndex] } ?? eventHandler,
                        luaFieldsRef: ScriptAPI.makeConstantFields(lua.L, info))
        connections[socketId] = connection
        shared.registry.add(info, worker: index)
        shared.liveSockets.add(1, ordering: .relaxed)
        Log.debug("socket \(socketId) opened on \(info.route)")
        runScript(connection, event: .open, message: nil, binary: false)
    }

    // MARK: Scripts

    func dispatchData(_ connection: Connection, _ payload: UnsafeRawBufferPointer, binary: Bool) {
        if let link = connection.link {
            runOutboundScript(link, event: .data, message: payload, binary: binary)
        } else {
            runScript(connection, event: .data, message: payload, binary: binary)
        }
    }

    func connectionClosed(_ connection: Connection) {
        if let link = connection.link {
            link.connectionEnded(connection)
            return
        }
        guard let info = connection.info else { return }
        connections.removeValue(forKey: info.socketId)
        shared.liveSockets.subtract(1, ordering: .relaxed)
        Log.debug("socket \(info.socketId) closed")
        runScript(connection, event: .close, message: nil, binary: false)
        lua.release(connection.luaFieldsRef)
    }

    private func runScript(_ connection: Connection, event: ScriptEvent, message: UnsafeRawBufferPointer?, binary: Bool) {
        guard let script = connection.script, !script.removed else { return }
        let L = lua.L
        current = connection
        currentEvent = event
        defer { current = nil }
        lua.pushFreshEnvironment()
        ScriptAPI.pushWebsocketInfo(L, worker: self, connection: connection, event: event, message: message, binary: binary)
        lua_setfield(L, -2, "websocketInfo")
        let failure: String?
        if !script.isEventHandler {
            failure = lua.run(script.ref)
        } else {
            failure = lua.run(script.ref) { [lua] env in
                lua_getfield(L, env, "handle_websocket_websocket_info")
                guard lua_type(L, -1) == LUA_TFUNCTION else {
                    lua_pop(L, 1)
                    return "\(Router.eventHandlerFile) does not define function handle_websocket_websocket_info"
                }
                lua_getfield(L, env, "websocketInfo")
                return lua.protectedCall()
            }
        }
        if let failure {
            Log.error("script error route=\(connection.info?.route ?? "-") socket=\(connection.socketId) event=\(event.name): \(failure)")
            if lua.timeoutNanos > 0 && lua.lastRunTimedOut && connection.isOpen {
                // The loop just spent a whole timeout on this socket: serve the others before its
                // next message.
                connection.pauseReading(for: lua.timeoutNanos)
            }
        }
    }

    // MARK: Outbound connections

    /// Opens a named outbound connection on this loop; the failure is what `Websocket.connect` returns.
    func connectOutbound(_ spec: OutboundSpec) -> ServiceFailure? {
        guard scripts[spec.script] != nil else {
            return .badRequest("script \(spec.script) is not in the endpoints folder (or does not compile)")
        }
        if spec.url.secure {
            // A CA file that cannot serve is the caller's mistake: say so now, not in an error event.
            do {
                _ = try shared.tlsClientContext(caFile: spec.caFile)
            } catch {
                return .badRequest(error.message)
            }
        }
        let sendQueue = SendQueueGauge()
        let (claim, replaced) = shared.outbound.claim(spec.name, worker: index, url: spec.url.description, contentType: spec.contentType,
                                                      sendQueue: sendQueue)
        guard case .claimed(let id) = claim else {
            return .conflict("an outbound connection named \(spec.name) exists; disconnect it first")
        }
        if let replaced, replaced.worker != index {
            let owner = shared.workers[replaced.worker]
            owner.loop.post { owner.dropLink(spec.name, id: replaced.id) }
        }
        let link = OutboundLink(id: id, spec: spec, worker: self, sendQueue: sendQueue)
        links[spec.name] = link
        link.start()
        return nil
    }

    /// Forgets a disconnected link whose name a new connection took.
    private func dropLink(_ name: String, id: Int) {
        if links[name]?.id == id { links[name] = nil }
    }

    /// The link of `name` on this loop, if it is still connection `id`.
    func link(_ name: String, id: Int) -> OutboundLink? {
        guard let link = links[name], link.id == id else { return nil }
        return link
    }

    func runOutboundScript(_ link: OutboundLink, event: OutboundEvent, message: UnsafeRawBufferPointer?, binary: Bool) {
        guard let script = scripts[link.scriptFile], !script.removed else {
            Log.error("outbound \(link.name): script \(link.scriptFile) is gone; its \(event.name) event is not handled")
            return
        }
        let L = lua.L
        currentLink = link
        defer { currentLink = nil }
        lua.pushFreshEnvironment()
        ScriptAPI.pushWsEvent(L, worker: self, link: link, event: event, message: message, binary: binary)
        lua_setfield(L, -2, "wsEvent")
        if let failure = lua.run(script.ref) {
            Log.error("script error outbound=\(link.name) script=\(link.scriptFile) event=\(event.name): \(failure)")
            if lua.timeoutNanos > 0 && lua.lastRunTimedOut, let connection = link.connection, connection.isOpen {
                connection.pauseReading(for: lua.timeoutNanos)
            }
        }
    }
}

/// Accepts connections for one worker; every worker has its own SO_REUSEPORT socket.
final class Listener: IOHandler {
    unowned let worker: Worker
    let fd: Int32
    var registration = EventLoop.Registration.none

    init(worker: Worker, fd: Int32) {
        self.worker = worker
        self.fd = fd
    }

    func ioReady(_ events: UInt32) {
        for _ in 0..<64 {
            switch Socket.accept(fd) {
            case .socket(let client): Connection.accept(fd: client, worker: worker)
            case .wouldBlock: return
            case .failed(let error):
                // Out of descriptors: the pending connection stays readable, so stop watching for
                // a moment rather than spin.
                Log.warn("\(error); pausing accepts for 100 ms")
                worker.loop.modify(fd: fd, events: 0, registration: registration)
                worker.loop.schedule(after: 100_000_000) { [self] in
                    worker.loop.modify(fd: fd, events: IOEvents.readable, registration: registration)
                }
                return
            }
        }
    }
}
