import Foundation
import Reactor
import WebSocketCodec

/// The management API, modelled on AWS API Gateway's `@connections` API, on the admin listener
/// (one SO_REUSEPORT socket per loop): backends push to, inspect and close sockets by id, and
/// publish to topics. Every
/// request needs `Authorization: Bearer <token>`; every operation on a socket goes through the
/// owner path, so a socket on another loop is reached through that loop's mailbox.
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
        guard authorization.hasPrefix("Bearer "), AdminAPI.sameBytes(Array(authorization.utf8.dropFirst(7)), token) else {
            Log.warn("admin: refused a request with a wrong token from \(connection.remoteAddress)")
            connection.respondAndClose(HTTPResponse.make(status: 403, reason: "Forbidden", body: "wrong token\n"))
            return
        }
        connection.readRequest(IncomingRequest(head: head, maxBodyBytes: worker.config.maxMessageBytes, handler: .admin))
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
        let (status, headers, payload) = answer(request.head, body: body)
        connection.respond(HTTPResponse.make(status: status, headers: headers, body: payload, keepAlive: request.keepAlive),
                           keepAlive: request.keepAlive)
    }

    private typealias Answer = (status: Int, headers: [(name: String, value: String)], body: [UInt8])

    private func answer(_ head: HTTPRequestHead, body: [UInt8]) -> Answer {
        let path = head.path
        if path == HTTPFront.healthPath {
            guard head.methodIs("GET") || head.methodIs("HEAD") else { return methodNotAllowed("GET") }
            return worker.unhealthy.map { text(503, $0) } ?? text(200, "OK")
        }
        if path == AdminAPI.prefix {
            guard head.methodIs("GET") else { return methodNotAllowed("GET") }
            let ids = worker.shared.registry.all().map { AdminAPI.json($0.info.socketId) }.sorted()
            return json("[" + ids.joined(separator: ",") + "]")
        }
        if path.hasPrefix(AdminAPI.topics + "/") {
            let topic = URLComponentsDecoding.percentDecode(path.dropFirst(AdminAPI.topics.count + 1), plusAsSpace: false)
            guard head.methodIs("POST") else { return methodNotAllowed("POST") }
            if case .failure(let failure) = ScriptAPI.checkedTopic(topic) { return failed(failure) }
            switch message(head, body) {
            case .failure(let failure): return failed(failure)
            case .success(let opcode):
                let delivered = body.withUnsafeBytes { worker.owners.publish(topic, opcode, $0) }
                return json("{\"delivered\":\(delivered)}")
            }
        }
        guard path.hasPrefix(AdminAPI.prefix + "/") else { return text(404, "no such path\n") }
        let id = URLComponentsDecoding.percentDecode(path.dropFirst(AdminAPI.prefix.count + 1), plusAsSpace: false)
        guard !id.isEmpty, !id.contains("/") else { return text(404, "no such path\n") }
        if head.methodIs("POST") {
            switch message(head, body) {
            case .failure(let failure): return failed(failure)
            case .success(let opcode):
                let failure = body.withUnsafeBytes { worker.owners.send(to: .socket(id), opcode, $0) }
                return failure.map(failed) ?? (204, [], [])
            }
        }
        if head.methodIs("GET") {
            switch worker.owners.info(id) {
            case .failure(let failure): return failed(failure)
            case .success(let info): return json(describe(info))
            }
        }
        if head.methodIs("DELETE") {
            return worker.owners.close(.socket(id)).map(failed) ?? (204, [], [])
        }
        return methodNotAllowed("GET, POST, DELETE")
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

    private func describe(_ info: ConnectionInfo) -> String {
        let fields = [
            ("socket_id", AdminAPI.json(info.socketId)),
            ("route", AdminAPI.json(info.route)),
            ("uri", AdminAPI.json(info.uri)),
            ("connectedAt", AdminAPI.json(AdminAPI.iso8601(millis: info.openedAt))),
            ("lastActiveAt", AdminAPI.json(AdminAPI.iso8601(millis: info.lastActiveMillis))),
            ("identity", "{\"sourceIp\":\(AdminAPI.json(info.remoteAddress)),\"userAgent\":\(AdminAPI.json(info.request.header("user-agent") ?? ""))}"),
            ("subprotocol", AdminAPI.json(info.subprotocol)),
            ("claims", info.claimsJSON),
        ]
        return "{" + fields.map { "\(AdminAPI.json($0.0)):\($0.1)" }.joined(separator: ",") + "}"
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

    /// A JSON string literal.
    static func json(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
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
