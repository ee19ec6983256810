import Reactor
import WebSocketCodec

/// How an outbound connection's messages become `wsEvent.data`, and how a table is sent on it.
enum OutboundContentType: String, CaseIterable {
    case json, text, binary
}

/// A named outbound connection as `Websocket.connect` or config `outbound` describes it.
struct OutboundSpec: Equatable {
    var name: String
    var url: WebSocketURL
    /// The script's file relative to the endpoints folder, ".lua" included.
    var script: String
    var contentType = OutboundContentType.json
    var headers: [(name: String, value: String)] = []
    /// Skip certificate verification for this connection.
    var insecure = false
    /// A PEM file of CAs to trust instead of the system store.
    var caFile: String?

    /// A field that cannot be used, and why; `field` is the argument or config key name.
    struct Problem: Error {
        let field: String
        let message: String
    }

    /// The string fields of `Websocket.connect` and of a config `outbound` entry.
    static let stringFields = ["name", "url", "script", "content_type", "ca_file"]

    /// The first field every connection needs that `fields` lacks.
    static func missingField(_ fields: [String: String]) -> String? {
        ["name", "url", "script"].first { fields[$0] == nil }
    }

    /// Checks the fields (`fields` keyed as `stringFields`); the script's existence is the caller's
    /// to check.
    static func make(_ fields: [String: String], headers: [(name: String, value: String)], insecure: Bool) -> Result<OutboundSpec, Problem> {
        if let missing = missingField(fields) { return .failure(Problem(field: missing, message: "is required")) }
        let name = fields["name"]!, url = fields["url"]!, script = fields["script"]!
        let contentType = fields["content_type"], caFile = fields["ca_file"]
        guard !name.isEmpty, name.count <= 200 else { return .failure(Problem(field: "name", message: "must be a non-empty string of at most 200 characters")) }
        let parsed: WebSocketURL
        switch WebSocketURL.parse(url) {
        case .success(let value): parsed = value
        case .failure(let error): return .failure(Problem(field: "url", message: error.message))
        }
        var file = script
        if !file.hasSuffix(".lua") { file += ".lua" }
        let base = file.split(separator: "/").last ?? ""
        guard base.hasPrefix("_"), !file.hasPrefix("/"), !file.split(separator: "/").contains("..") else {
            return .failure(Problem(field: "script", message: "must name a file under the endpoints folder whose name starts with \"_\" (so it is no route), not \"\(script)\""))
        }
        guard file != Router.eventHandlerFile else {
            return .failure(Problem(field: "script", message: "\(Router.eventHandlerFile) is the event handler of unrouted paths"))
        }
        var type = OutboundContentType.json
        if let contentType {
            guard let value = OutboundContentType(rawValue: contentType) else {
                return .failure(Problem(field: "content_type", message: "must be one of json, text, binary"))
            }
            type = value
        }
        for header in headers {
            if let why = ClientHandshake.headerProblem(name: header.name, value: header.value) {
                return .failure(Problem(field: "headers", message: why))
            }
        }
        if caFile != nil && !parsed.secure {
            return .failure(Problem(field: "ca_file", message: "only applies to wss:// URLs"))
        }
        return .success(OutboundSpec(name: name, url: parsed, script: file, contentType: type, headers: headers, insecure: insecure, caFile: caFile))
    }

    static func == (a: OutboundSpec, b: OutboundSpec) -> Bool {
        a.name == b.name && a.url == b.url && a.script == b.script && a.contentType == b.contentType
            && a.headers.elementsEqual(b.headers, by: { $0.name == $1.name && $0.value == $1.value })
            && a.insecure == b.insecure && a.caFile == b.caFile
    }
}

/// Every outbound connection of every loop by name: which loop owns it and its state, so a script on
/// any loop can send to it, list it or get a 503 while it reconnects. The lock is held only for
/// dictionary operations.
final class OutboundRegistry {
    enum State: String {
        case connecting, open, closed
    }

    struct Entry {
        /// Tells a connection apart from an earlier one of the same name.
        let id: Int
        let worker: Int
        let contentType: OutboundContentType
        let sendQueue: SendQueueGauge
        var url: String
        var state = State.connecting
        /// Milliseconds since the Unix epoch when the state last changed.
        var since: Int64
        /// A reconnect is scheduled (false once disconnected).
        var reconnecting = false
        /// `Websocket.disconnect` was called: the name can be taken by a new connect.
        var disconnected = false
    }

    private var entries: [String: Entry] = [:]
    private var lastId = 0
    private let lock = Lock()

    enum Claim {
        case claimed(id: Int)
        /// The name serves a live connection.
        case inUse
    }

    /// Takes `name` for a new connection on `worker`; a disconnected one of that name is replaced
    /// (`replaced` gives its owner and id, to drop it there).
    func claim(_ name: String, worker: Int, url: String, contentType: OutboundContentType, sendQueue: SendQueueGauge) -> (Claim, replaced: Entry?) {
        lock.locked {
            let previous = entries[name]
            if let previous, !previous.disconnected { return (.inUse, nil) }
            lastId += 1
            entries[name] = Entry(id: lastId, worker: worker, contentType: contentType, sendQueue: sendQueue, url: url, since: EventLoop.wallMillis())
            return (.claimed(id: lastId), previous)
        }
    }

    /// Changes the entry of connection `id`, if the name still belongs to it.
    func update(_ name: String, id: Int, _ change: (inout Entry) -> Void) {
        lock.locked {
            guard var entry = entries[name], entry.id == id else { return }
            let before = entry.state
            change(&entry)
            if entry.state != before { entry.since = EventLoop.wallMillis() }
            entries[name] = entry
        }
    }

    func lookup(_ name: String) -> Entry? {
        lock.locked { entries[name] }
    }

    /// Entries sorted by name.
    func all() -> [(name: String, entry: Entry)] {
        lock.locked { entries.map { ($0.key, $0.value) } }.sorted { $0.name < $1.name }
    }
}
