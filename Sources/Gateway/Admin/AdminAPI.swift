import Foundation
import Reactor
import WebSocketCodec

/// The management API, modelled on AWS API Gateway's `@connections` API, on the admin listener
/// (one SO_REUSEPORT socket per loop): backends push to, inspect and close sockets by id, and
/// publish to topics. Every
/// request needs `Authorization: Bearer <token>`; every operation on a socket goes through the
/// owner path, so a socket on another loop is reached through that loop's mailbox, and in a
/// cluster a socket on another node through that node (the answer then waits for it).
final class AdminAPI {
    unowned let worker: Worker
    private let token: [UInt8]

    init(worker: Worker, token: String) {
        self.worker = worker
        self.token = Array(token.utf8)
    }

    private static let prefix = "/@connections"
    private static let topics = "/@topics"

    /// A request head: refused at once (closing) when unauthorized or malformed; else its body is
    /// read, up to limits.maxMessageBytes (a POST's body is one message).
    func handleRequest(_ connection: Connection, head bytes: UnsafeRawBufferPointer) {
        let head: HTTPRequestHead
        switch HTTPRequestParser.parse(bytes) {
        case .success(let parsed): head = parsed
        case .failure(.malformed(let why)):
            Log.debug("admin: bad request: \(why)")
            connection.respondAndClose(HTTPResponse.make(status: 400, reason: "Bad Request"))
            return
        }
        guard let authorization = head.header("authorization") else {
            connection.respondAndClose(HTTPResponse.make(status: 401, reason: "Unauthorized", body: "Authorization: Bearer <token> required\n",
                                                         headers: ["WWW-Authenticate: Bearer"]))
            return
        }
        guard let given = AdminAPI.bearerToken(authorization), AdminAPI.sameBytes(given, token) else {
            Log.warn("admin: refused a request with a wrong token from \(connection.remoteAddress)")
            connection.respondAndClose(HTTPResponse.make(status: 403, reason: "Forbidden", body: "wrong token\n"))
            return
        }
        connection.readRequest(IncomingRequest(head: head, maxBodyBytes: worker.config.maxMessageBytes, handler: .admin))
    }

    /// The credentials of `Bearer <token>`; the scheme is case-insensitive (RFC 9110, 11.1).
    private static func bearerToken(_ authorization: String) -> [UInt8]? {
        let bytes = Array(authorization.utf8)
        guard bytes.count > 7, bytes[6] == 0x20,
              zip(bytes[0..<6], "bearer".utf8).allSatisfy({ $0 | 0x20 == $1 }) else { return nil }
        return Array(bytes[7...].drop { $0 == 0x20 })
    }

    /// Compares in time that depends only on the expected token's length.
    private static func sameBytes(_ given: [UInt8], _ expected: [UInt8]) -> Bool {
        var difference = UInt(bitPattern: given.count ^ expected.count)
        for i in 0..<expected.count {
            difference |= UInt(expected[i] ^ (i < given.count ? given[i] : 0))
        }
        return difference == 0
    }

    /// An authorized request whose body has arrived.
    func handleBody(_ connection: Connection, request: IncomingRequest, body: [UInt8]) {
        if request.head.path == "/metrics" && (request.head.methodIs("GET") || request.head.methodIs("HEAD")) {
            MetricsScrape.answer(connection, keepAlive: request.keepAlive, on: worker)
            return
        }
        let keepAlive = request.keepAlive
        let respond: (Answer) -> Void = { answer in
            connection.respond(HTTPResponse.make(status: answer.status, headers: answer.headers, body: answer.body, keepAlive: keepAlive),
                               keepAlive: keepAlive)
        }
        if let answer = answer(request.head, body: body, later: respond) { respond(answer) }
    }

    private typealias Answer = (status: Int, headers: [(name: String, value: String)], body: [UInt8])

    /// The answer, or nil when it comes later through `later` (another node is asked).
    private func answer(_ head: HTTPRequestHead, body: [UInt8], later: @escaping (Answer) -> Void) -> Answer? {
        let path = head.path
        if path == HTTPFront.healthPath {
            guard head.methodIs("GET") || head.methodIs("HEAD") else { return methodNotAllowed("GET") }
            return worker.unhealthy.map { text(503, $0) } ?? text(200, "OK")
        }
        if path == AdminAPI.prefix {
            guard head.methodIs("GET") else { return methodNotAllowed("GET") }
            let local = worker.shared.registry.all().map(\.info.socketId)
            let list = { (ids: [String]) in self.json("[" + ids.sorted().map(JSONText.quoted).joined(separator: ",") + "]") }
            guard let calls = worker.remoteCalls else { return list(local) }
            calls.callAll(.list) { [self] result in
                switch result {
                case .failure(let failure): later(failed(failure))
                case .success(let replies): later(list(local + replies.flatMap { NodeMessage.lines($0.payload) }))
                }
            }
            return nil
        }
        if path.hasPrefix(AdminAPI.topics + "/") {
            let topic = URLComponentsDecoding.percentDecode(path.dropFirst(AdminAPI.topics.count + 1), plusAsSpace: false)
            guard head.methodIs("POST") else { return methodNotAllowed("POST") }
            if case .failure(let failure) = ScriptAPI.checkedTopic(topic) { return failed(failure) }
            let wait: Bool
            switch waitParameter(head) {
            case .failure(let failure): return failed(failure)
            case .success(let value): wait = value
            }
            switch message(head, body) {
            case .failure(let failure): return failed(failure)
            case .success(let opcode):
                let answered = { [self] (delivered: Int) in json("{\"delivered\":\(delivered)}") }
                let answer = body.withUnsafeBytes { worker.owners.publish(topic, opcode, $0, wait: wait) { later(answered($0)) } }
                if case .now(let delivered) = answer { return answered(delivered) }
                return nil
            }
        }
        guard path.hasPrefix(AdminAPI.prefix + "/") else { return text(404, "no such path\n") }
        let id = URLComponentsDecoding.percentDecode(path.dropFirst(AdminAPI.prefix.count + 1), plusAsSpace: false)
        guard !id.isEmpty, !id.contains("/") else { return text(404, "no such path\n") }
        let done = { (failure: ServiceFailure?) -> Answer in failure.map(self.failed) ?? (204, [], []) }
        if head.methodIs("POST") {
            let wait: Bool
            switch waitParameter(head) {
            case .failure(let failure): return failed(failure)
            case .success(let value): wait = value
            }
            switch message(head, body) {
            case .failure(let failure): return failed(failure)
            case .success(let opcode) where !wait:
                // On its way to another node, not yet delivered: 202.
                let failure = body.withUnsafeBytes { worker.owners.sendUnanswered(to: id, opcode, $0) }
                return failure.map(failed) ?? (worker.remoteCalls?.remoteNode(of: id) == nil ? (204, [], []) : (202, [], []))
            case .success(let opcode):
                let answer = body.withUnsafeBytes { worker.owners.send(to: id, opcode, $0) { later(done($0)) } }
                if case .now(let failure) = answer { return done(failure) }
                return nil
            }
        }
        if head.methodIs("GET") {
            let described = { [self] (description: Result<OwnerPath.Description, ServiceFailure>) -> Answer in
                switch description {
                case .failure(let failure): return failed(failure)
                case .success(.here(let info)): return json(AdminAPI.describe(info))
                case .success(.json(let fields)): return json(String(decoding: fields, as: UTF8.self))
                }
            }
            if case .now(let description) = worker.owners.describe(id, forAdmin: true, then: { later(described($0)) }) { return described(description) }
            return nil
        }
        if head.methodIs("DELETE") {
            if case .now(let failure) = worker.owners.close(id, then: { later(done($0)) }) { return done(failure) }
            return nil
        }
        return methodNotAllowed("GET, POST, DELETE")
    }

    /// The `wait` query parameter of a POST: false asks it not to wait for another node's answer.
    private func waitParameter(_ head: HTTPRequestHead) -> Result<Bool, ServiceFailure> {
        switch URLComponentsDecoding.queryItems(head.query).last(where: { $0.name == "wait" })?.value {
        case nil, "true": return .success(true)
        case "false": return .success(false)
        default: return .failure(.badRequest("wait must be true or false"))
        }
    }

    /// A POST's body as a message: binary with Content-Type: application/octet-stream, else text,
    /// which must be UTF-8.
    private func message(_ head: HTTPRequestHead, _ body: [UInt8]) -> Result<Opcode, ServiceFailure> {
        if head.header("content-type").map({ $0.lowercased().hasPrefix("application/octet-stream") }) == true { return .success(.binary) }
        guard body.withUnsafeBytes({ UTF8Validator.isValid($0) }) else {
            return .failure(.badRequest("the body is not valid UTF-8: send bytes with Content-Type: application/octet-stream"))
        }
        return .success(.text)
    }

    /// A service failure as the management API answers it: a socket that is not open is 410 Gone.
    private func failed(_ failure: ServiceFailure) -> Answer {
        switch failure {
        case .notFound(let why): return text(410, why + "\n")
        default: return text(failure.status, failure.message + "\n")
        }
    }

    static func describe(_ info: ConnectionInfo) -> String {
        let fields = [
            ("socket_id", JSONText.quoted(info.socketId)),
            ("route", JSONText.quoted(info.route)),
            ("uri", JSONText.quoted(info.uri)),
            ("connectedAt", JSONText.quoted(AdminAPI.iso8601(millis: info.openedAt))),
            ("lastActiveAt", JSONText.quoted(AdminAPI.iso8601(millis: info.lastActiveMillis))),
            ("identity", "{\"sourceIp\":\(JSONText.quoted(info.remoteAddress)),\"userAgent\":\(JSONText.quoted(info.request.header("user-agent") ?? ""))}"),
            ("subprotocol", JSONText.quoted(info.subprotocol)),
            ("claims", info.claimsJSON),
        ]
        return "{" + fields.map { "\(JSONText.quoted($0.0)):\($0.1)" }.joined(separator: ",") + "}"
    }

    private func text(_ status: Int, _ body: String) -> Answer {
        (status, [("Content-Type", "text/plain; charset=utf-8")], Array(body.utf8))
    }

    private func json(_ body: String) -> Answer {
        (200, [("Content-Type", "application/json")], Array(body.utf8))
    }

    private func methodNotAllowed(_ allowed: String) -> Answer {
        (405, [("Allow", allowed), ("Content-Type", "text/plain; charset=utf-8")], Array("method not allowed\n".utf8))
    }

    /// "2026-12-03T10:00:00.123Z".
    static func iso8601(millis: Int64) -> String {
        var seconds = time_t(millis / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                      Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), Int(millis % 1000))
    }
}
