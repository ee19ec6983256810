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
