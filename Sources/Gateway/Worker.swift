import CLua
import Foundation
import LuaRuntime
import Reactor
import WebSocketCodec

/// What all workers share: immutable routing and settings, the socket registry, the worker list.
final class SharedState {
    let config: GatewayConfig
    let router: Router
    /// Script sources by route index, and the event handler's source when the folder has one.
    let scripts: [[UInt8]]
    let eventHandler: [UInt8]?
    let endpointsFolder: String
    let registry = Registry()
    /// Makes socket ids unique across restarts: random per process.
    let socketIdPrefix: String
    var workers: [Worker] = []

    init(config: GatewayConfig, router: Router, scripts: [[UInt8]], eventHandler: [UInt8]?, endpointsFolder: String) {
        self.config = config
        self.router = router
        self.scripts = scripts
        self.eventHandler = eventHandler
        self.endpointsFolder = endpointsFolder
        var random = SystemRandomNumberGenerator()
        socketIdPrefix = String(random.next() & 0xFFFF_FFFF_FFFF, radix: 36)
    }
}

/// One event loop, its Lua state and the sockets it owns.
final class Worker {
    static let healthPath = "/api/v1/solution/health"

    let index: Int
    let loop: EventLoop
    let shared: SharedState
    let config: GatewayConfig
    let lua = LuaState()
    private var chunkRefs: [Int32] = []
    private var eventHandlerRef: Int32?
    private let listenFd: Int32
    let listenPort: Int

    /// Upgraded sockets by id.
    var connections: [String: Connection] = [:]
    /// Connections with output queued during this loop iteration.
    var flushList: [Connection] = []
    /// Every socket reads into this one buffer first; only leftovers are copied per connection.
    let readBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
    private var socketCounter = 0

    /// The connection and event type of the script run in progress.
    var current: Connection?
    var currentEvent = ScriptEvent.open
    /// Scratch space for JSON and base64 text built for one call.
    var jsonScratch: [UInt8] = []
    var textScratch = ByteBuffer()

    init(index: Int, shared: SharedState, listenFd: Int32) {
        self.index = index
        self.shared = shared
        self.config = shared.config
        self.listenFd = listenFd
        listenPort = Socket.localPort(listenFd)
        loop = EventLoop(index: index)
        lua.extraSpace.storeBytes(of: Unmanaged.passUnretained(self).toOpaque(), as: UnsafeMutableRawPointer.self)
        ScriptAPI.install(in: lua)
        for (i, source) in shared.scripts.enumerated() {
            chunkRefs.append(try! lua.compile(source, chunkName: chunkName(shared.router.routes[i].file)).get())
        }
        if let source = shared.eventHandler {
            eventHandlerRef = try! lua.compile(source, chunkName: chunkName(Router.eventHandlerFile)).get()
        }
        loop.afterIteration = { [unowned self] in self.flushAll() }
        _ = loop.register(fd: listenFd, events: IOEvents.readable, handler: Listener(worker: self, fd: listenFd))
    }

    private func chunkName(_ file: String) -> String {
        (shared.endpointsFolder as NSString).appendingPathComponent(file)
    }

    func start() {
        let thread = Thread { [self] in loop.run() }
        thread.name = "wsgate-loop-\(index)"
        thread.stackSize = 8 << 20
        thread.start()
    }

    func accept(_ fd: Int32) {
        let connection = Connection(fd: fd, worker: self, now: loop.now)
        connection.registration = loop.register(fd: fd, events: IOEvents.readable, handler: connection)
        if connection.registration == .none {
            Socket.close(fd)
        }
    }

    /// Flushes until no connection has output left: a flush can close a socket, whose close script
    /// may queue output for others.
    private func flushAll() {
        while !flushList.isEmpty {
            let list = flushList
            flushList.removeAll(keepingCapacity: true)
            for connection in list where connection.state != .closed { connection.flush() }
        }
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
            let ok = head.method == "GET" || head.method == "HEAD"
            connection.respondAndClose(ok ? HTTPResponse.make(status: 200, reason: "OK", body: "OK")
                                          : HTTPResponse.make(status: 405, reason: "Method Not Allowed", headers: ["Allow: GET"]))
            return
        }
        let match = shared.router.match(path: path)
        guard match != nil || eventHandlerRef != nil else {
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
            upgrade(connection, head: head, key: key, match: match)
        }
    }

    private func upgrade(_ connection: Connection, head: HTTPRequestHead, key: String, match: Router.Match?) {
        socketCounter += 1
        let socketId = "\(shared.socketIdPrefix)-\(index)-\(socketCounter)"
        var parameters = match?.parameters ?? []
        for item in URLComponentsDecoding.queryItems(head.query) where !parameters.contains(where: { $0.name == item.name }) {
            parameters.append(item)
        }
        let host = head.header("host") ?? "\(config.host):\(listenPort)"
        let info = ConnectionInfo(socketId: socketId, uri: "ws://\(host)\(head.target)",
                                  route: match.map { shared.router.routes[$0.routeIndex].pattern } ?? head.path,
                                  headers: head.headers, parameters: parameters, openedAt: EventLoop.wallMillis())
        connection.output.append(Handshake.switchingProtocols(key: key))
        connection.scheduleFlush()
        connection.info = info
        connection.routeIndex = match?.routeIndex ?? -1
        connection.state = .open
        connection.luaFieldsRef = ScriptAPI.makeConstantFields(lua.L, info)
        connections[socketId] = connection
        shared.registry.add(info, worker: index)
        Log.debug("socket \(socketId) opened on \(info.route)")
        runScript(connection, event: .open, message: nil, binary: false)
    }

    // MARK: Scripts

    func dispatchData(_ connection: Connection, _ payload: UnsafeRawBufferPointer, binary: Bool) {
        runScript(connection, event: .data, message: payload, binary: binary)
    }

    func connectionClosed(_ connection: Connection, wasUpgraded: Bool) {
        guard wasUpgraded, let info = connection.info else { return }
        connections.removeValue(forKey: info.socketId)
        shared.registry.remove(info.socketId)
        Log.debug("socket \(info.socketId) closed")
        runScript(connection, event: .close, message: nil, binary: false)
        lua.release(connection.luaFieldsRef)
    }

    private func runScript(_ connection: Connection, event: ScriptEvent, message: UnsafeRawBufferPointer?, binary: Bool) {
        let L = lua.L
        current = connection
        currentEvent = event
        defer { current = nil }
        lua.pushFreshEnvironment()
        ScriptAPI.pushWebsocketInfo(L, worker: self, connection: connection, event: event, message: message, binary: binary)
        lua_setfield(L, -2, "websocketInfo")
        let failure: String?
        if connection.routeIndex >= 0 {
            failure = lua.run(chunkRefs[connection.routeIndex])
        } else {
            failure = lua.run(eventHandlerRef!) { [lua] env in
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
        }
    }

    // MARK: Cross-loop delivery

    /// Sends to a socket of this worker; called on this worker's thread.
    func deliver(to socketId: String, opcode: Opcode, payload: [UInt8]) {
        guard let connection = connections[socketId], connection.state == .open else { return }
        payload.withUnsafeBytes { connection.sendFrame(opcode, $0) }
    }

    func close(socketId: String, code: CloseCode) {
        connections[socketId]?.startClose(code)
    }
}

/// Accepts connections for one worker; every worker has its own SO_REUSEPORT socket.
final class Listener: IOHandler {
    unowned let worker: Worker
    let fd: Int32

    init(worker: Worker, fd: Int32) {
        self.worker = worker
        self.fd = fd
    }

    func ioReady(_ events: UInt32) {
        for _ in 0..<64 {
            switch Socket.accept(fd) {
            case .socket(let client): worker.accept(client)
            case .wouldBlock: return
            case .failed(let error):
                Log.warn("\(error)")
                return
            }
        }
    }
}
