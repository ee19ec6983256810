import Foundation
import Reactor
import WebSocketCodec

/// The HTTP side of one loop: parses a socket's request, answers the health route, routes the path
/// to an endpoint script, checks origin and subprotocols and upgrades. A plain request to an HTTP
/// endpoint script's route has its body read and goes to the script (the connection stays open for
/// the next request); everything else gets its HTTP answer here and the socket is closed.
final class HTTPFront {
    static let healthPath = "/api/v1/solution/health"

    unowned let worker: Worker
    private var router = Router(routes: [])
    private var routeScripts: [EndpointScript] = []
    /// The HTTP endpoint scripts' routes, which may share paths with WebSocket routes.
    private var httpRouter = Router(routes: [])
    private var httpScripts: [EndpointScript] = []
    private var eventHandler: EndpointScript?
    /// `_connect.lua`, run before every upgrade when present.
    private var connectHook: EndpointScript?
    private var originPolicy: OriginPolicy
    private var socketCounter = 0

    init(worker: Worker, config: GatewayConfig) {
        self.worker = worker
        originPolicy = OriginPolicy(patterns: config.approvedSocketDomains)
    }

    /// The routes of the scripts that compiled, each with its script.
    func routesChanged(_ routes: [Route], scripts: [String: EndpointScript]) {
        router = Router(routes: routes.filter { !$0.isHTTP && scripts[$0.file] != nil })
        routeScripts = router.routes.map { scripts[$0.file]! }
        httpRouter = Router(routes: routes.filter { $0.isHTTP && scripts[$0.file] != nil })
        httpScripts = httpRouter.routes.map { scripts[$0.file]! }
        eventHandler = scripts[Router.eventHandlerFile]
        connectHook = scripts[Router.connectHookFile]
    }

    func configChanged(_ config: GatewayConfig) {
        originPolicy = OriginPolicy(patterns: config.approvedSocketDomains)
    }

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
        if path == HTTPFront.healthPath {
            let response: [UInt8]
            let unhealthy = worker.unhealthy
            if unhealthy == nil, case .upgrade(let key) = Handshake.evaluate(head) {
                answerHealthUpgrade(connection, key: key)
                return
            }
            if !head.methodIs("GET") && !head.methodIs("HEAD") {
                response = HTTPResponse.make(status: 405, reason: "Method Not Allowed", headers: ["Allow: GET"])
            } else if let unhealthy {
                response = HTTPResponse.make(status: 503, reason: "Service Unavailable", body: unhealthy)
            } else {
                response = HTTPResponse.make(status: 200, reason: "OK", body: "OK")
            }
            connection.respondAndClose(response)
            return
        }
        let evaluation = Handshake.evaluate(head)
        if path == "/metrics", worker.config.metricsPublic, case .notUpgrade = evaluation {
            connection.readRequest(IncomingRequest(head: head, maxBodyBytes: 0, handler: .metrics))
            return
        }
        if case .notUpgrade = evaluation, let match = httpRouter.match(path: path) {
            var parameters = match.parameters
            for item in URLComponentsDecoding.queryItems(head.query) where !parameters.contains(where: { $0.name == item.name }) {
                parameters.append(item)
            }
            connection.readRequest(IncomingRequest(head: head, maxBodyBytes: worker.config.maxHttpBodyBytes,
                                                   handler: .script(httpScripts[match.routeIndex], route: httpRouter.routes[match.routeIndex].pattern,
                                                                    parameters: parameters)))
            return
        }
        let match = router.match(path: path)
        guard match != nil || eventHandler != nil else {
            connection.respondAndClose(HTTPResponse.make(status: 404, reason: "Not Found"))
            return
        }
        switch evaluation {
        case .notUpgrade:
            connection.respondAndClose(HTTPResponse.make(status: 426, reason: "Upgrade Required", body: "This is a WebSocket endpoint.\n",
                                                         headers: ["Upgrade: websocket", "Sec-WebSocket-Version: 13"]))
        case .badRequest(let why):
            worker.metrics.reject(.handshake)
            Log.debug("rejected upgrade on \(path): \(why)")
            connection.respondAndClose(HTTPResponse.make(status: 400, reason: "Bad Request", body: why + "\n"))
        case .upgradeRequired:
            worker.metrics.reject(.handshake)
            connection.respondAndClose(HTTPResponse.make(status: 426, reason: "Upgrade Required", headers: ["Sec-WebSocket-Version: 13"]))
        case .upgrade(let key):
            let origin = originPolicy.allowsEveryOrigin ? nil : head.header("origin")
            if !originPolicy.allowsEveryOrigin && !originPolicy.allows(origin: origin) {
                worker.metrics.reject(.origin)
                Log.warn("refused upgrade on \(path) from origin \(origin.map { "\"\($0)\"" } ?? "(none)"): not in websocket.approvedSocketDomains")
                connection.respondAndClose(HTTPResponse.make(status: 403, reason: "Forbidden", body: "origin not allowed\n"))
            } else if worker.shuttingDown {
                worker.metrics.reject(.limit)
                connection.respondAndClose(HTTPResponse.make(status: 503, reason: "Service Unavailable", body: "shutting down\n", headers: ["Retry-After: 5"]))
            } else if worker.shared.registry.count >= worker.config.maxConnections {
                worker.metrics.reject(.limit)
                Log.warn("refused upgrade on \(path): limits.maxConnections (\(worker.config.maxConnections)) reached")
                connection.respondAndClose(HTTPResponse.make(status: 503, reason: "Service Unavailable", body: "too many connections\n", headers: ["Retry-After: 5"]))
            } else {
                upgrade(connection, head: head, key: key, match: match)
            }
        }
    }

    /// A WebSocket client on the health route (`wsgate probe`, in a container's health check) gets
    /// "OK" and a close: proof that this loop upgrades and serves frames, whatever the scripts are.
    private func answerHealthUpgrade(_ connection: Connection, key: String) {
        let session = WebSocketSession(role: .server, shared: worker.sessions, now: worker.loop.now)
        connection.open(response: Handshake.switchingProtocols(key: key), session: session, info: nil, script: nil)
        _ = Array("OK".utf8).withUnsafeBytes { connection.offer(.text, $0) }
        connection.startClose(.normal)
    }

    /// The first protocol the client offers that we support, or "".
    private func chooseSubprotocol(_ head: HTTPRequestHead) -> String {
        guard !worker.config.subprotocols.isEmpty else { return "" }
        var chosen = ""
        for field in head.fields where chosen.isEmpty && head.isName(field, "sec-websocket-protocol") {
            head.forEachListItem(field.value) { offered in
                let name = String(decoding: offered, as: UTF8.self)
                if chosen.isEmpty && worker.config.subprotocols.contains(name) { chosen = name }
            }
        }
        return chosen
    }

    private func upgrade(_ connection: Connection, head: HTTPRequestHead, key: String, match: Router.Match?) {
        socketCounter += 1
        let socketId = "\(worker.shared.socketIdPrefix)-\(worker.index)-\(socketCounter)"
        var parameters = match?.parameters ?? []
        for item in URLComponentsDecoding.queryItems(head.query) where !parameters.contains(where: { $0.name == item.name }) {
            parameters.append(item)
        }
        let host = head.header("host") ?? "\(worker.config.host):\(worker.listenPort)"
        let subprotocol = chooseSubprotocol(head)
        var extraHeaders = subprotocol.isEmpty ? [] : ["Sec-WebSocket-Protocol: \(subprotocol)"]
        let offers = head.fields.filter { head.isName($0, "sec-websocket-extensions") }.map { head.string($0.value) }.joined(separator: ", ")
        var deflate: DeflateSettings?
        var extensions = ""
        if worker.config.compressionEnabled, !offers.isEmpty,
           let (settings, response) = PerMessageDeflate.negotiate(offers: offers, policy: worker.config.deflatePolicy) {
            deflate = settings
            extensions = response
            extraHeaders.append("Sec-WebSocket-Extensions: \(response)")
        }
        let scheme = connection.isTLS ? "wss" : "ws"
        let pending = PendingUpgrade(socketId: socketId, uri: "\(scheme)://\(host)\(head.target)",
                                     route: match.map { router.routes[$0.routeIndex].pattern } ?? head.path,
                                     head: head, parameters: parameters, subprotocol: subprotocol, extensions: extensions,
                                     key: key, extraHeaders: extraHeaders, deflate: deflate,
                                     script: match.map { routeScripts[$0.routeIndex] } ?? eventHandler)
        if let connectHook, !connectHook.removed {
            connection.awaitGate()
            worker.runner.runConnectHook(ConnectGate(connection: connection, upgrade: pending), script: connectHook)
        } else {
            completeUpgrade(connection, pending, claimsJSON: "{}", expiresAt: nil)
        }
    }

    /// Sends the 101 and opens the socket: its info listed everywhere, its script's open event run.
    /// `expiresAt` (Unix seconds) closes it with 4001 "expired" then.
    func completeUpgrade(_ connection: Connection, _ pending: PendingUpgrade, claimsJSON: String, expiresAt: Double?) {
        let info = ConnectionInfo(socketId: pending.socketId, uri: pending.uri, route: pending.route,
                                  request: pending.head, parameters: pending.parameters, subprotocol: pending.subprotocol,
                                  extensions: pending.extensions, openedAt: EventLoop.wallMillis(), remoteAddress: connection.remoteAddress,
                                  metricsRoute: pending.script?.metricsRoute ?? pending.route, claimsJSON: claimsJSON, now: worker.loop.now)
        let session = WebSocketSession(role: .server, deflate: pending.deflate.map { DeflateSession(settings: $0, role: .server) },
                                       shared: worker.sessions, now: worker.loop.now)
        connection.open(response: Handshake.switchingProtocols(key: pending.key, extraHeaders: pending.extraHeaders), session: session,
                        info: info, script: pending.script)
        if let expiresAt {
            let delay = max(0, expiresAt * 1000 - Double(EventLoop.wallMillis()))
            worker.loop.schedule(after: UInt64(min(delay, 1e12)) * 1_000_000) { [weak connection] in
                connection?.startClose(CloseCode(rawValue: 4001), reason: "expired")
            }
        }
        worker.opened(connection, info: info)
    }

    /// The connect hook ended: the upgrade goes on, or the client gets the hook's refusal (503 when
    /// the hook failed: the gate fails closed).
    func gateDecided(_ gate: ConnectGate, failure: String?) {
        let connection = gate.connection
        guard !connection.isClosed else { return }
        let route = gate.upgrade.route
        let refuse = { [worker] (why: String) in
            worker.metrics.reject(.connectHook)
            Log.error("connect hook failed: \(why)", socket: gate.upgrade.socketId, route: route)
            connection.respondAndClose(HTTPResponse.make(status: 503, reason: "Service Unavailable", body: "connection refused\n"))
        }
        if let failure { return refuse(failure) }
        switch gate.decision {
        case .reject(let status, let message):
            worker.metrics.reject(.connectHook)
            Log.debug("connect hook rejected with \(status)", socket: gate.upgrade.socketId, route: route)
            connection.respondAndClose(HTTPResponse.make(status: status, reason: HTTPResponse.reason(status), body: message))
        case .invalid(let why):
            refuse(why)
        case .accept, nil:
            // The hook may have waited while the gateway began to shut down.
            guard !worker.shuttingDown else {
                connection.respondAndClose(HTTPResponse.make(status: 503, reason: "Service Unavailable", body: "shutting down\n",
                                                             headers: ["Retry-After: 5"]))
                return
            }
            if case .accept(let claimsJSON, let expiresAt) = gate.decision {
                completeUpgrade(connection, gate.upgrade, claimsJSON: claimsJSON, expiresAt: expiresAt)
            } else {
                completeUpgrade(connection, gate.upgrade, claimsJSON: "{}", expiresAt: nil)
            }
        }
    }
}
