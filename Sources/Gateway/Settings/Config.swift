import Foundation
import Redis
import WebSocketCodec

/// What to do with a message that arrives when the connection's token bucket is empty.
public enum RateLimitAction: String, CaseIterable {
    case throttle, drop, close
}

/// The gateway's settings, read from JSON. Every key has a default; unknown keys and wrong types are
/// errors that name the key.
public struct GatewayConfig: Equatable {
    public var host = "0.0.0.0"
    public var port = 8080
    public var endpoints = "Endpoints"
    /// 0 means one loop per core.
    public var workers = 0
    public var logLevel = LogLevel.info
    public var logFormat = LogFormat.text
    public var maxMessageBytes = 1 << 20
    /// The largest response body Http.request accepts.
    public var httpResponseBytes = 8 << 20
    public var maxRequestHeaderBytes = 16 * 1024
    /// 0 turns the rate limit off.
    public var messagesPerSecond = 5.0
    public var burst = 5
    public var onExceed = RateLimitAction.throttle
    public var maxConnections = 100_000
    public var handshakeTimeoutMs = 10_000
    /// 0 turns pings off.
    public var pingIntervalMs = 30_000
    /// 0 turns the idle timeout off.
    public var idleTimeoutMs = 120_000
    /// When the config does not set it, parsing raises it to twice maxMessageBytes if that is larger.
    public var sendQueueBytes = 4 << 20
    /// Regular expressions an upgrade's Origin must match (any one); empty allows every origin.
    public var approvedSocketDomains: [String] = []
    public var subprotocols: [String] = []
    public var scriptTimeoutMs = 1000
    /// The longest a run may take from start to end, waits included; 0 = no limit.
    public var scriptWaitTimeoutMs = 30_000
    public var scriptMemoryBytes = 64 << 20
    public var shutdownTimeoutMs = 10_000
    /// PEM files; both set means the port speaks TLS only.
    public var tlsCertificate: String?
    public var tlsPrivateKey: String?
    public var compressionEnabled = true
    /// Outgoing messages smaller than this are sent uncompressed.
    public var compressionMinBytes = 64
    public var deflatePolicy = DeflatePolicy()
    /// The management API's listener: off while the port is 0; it then needs a token (given, or
    /// read from tokenFile without a trailing newline).
    public var adminHost = "127.0.0.1"
    public var adminPort = 0
    public var adminToken: String?
    public var adminTokenFile: String?
    /// The largest request body an HTTP endpoint script gets; a larger one is answered 413.
    public var maxHttpBodyBytes = 1 << 20
    /// GET /metrics answers on the main listener too, without a token.
    public var metricsPublic = false
    /// The most the Keystore may hold (keys, values and 64 bytes per entry).
    public var keystoreMaxBytes = 64 << 20
    /// Outbound connections opened at start-up.
    var outbound: [OutboundSpec] = []
    public var outboundInitialDelayMs = 500
    public var outboundMaxDelayMs = 30_000
    /// Several nodes as one, on Redis; nil runs one node on its own.
    public var cluster: ClusterSettings?

    public init() {}

    /// The keys that only take effect at start-up, with their values, to report on a reload.
    var restartOnlySettings: [(key: String, value: String)] {
        [("host", host), ("port", "\(port)"), ("endpoints", endpoints), ("workers", "\(workers)"),
         ("admin", adminPort == 0 ? "off" : "\(adminHost):\(adminPort)"),
         ("scripts.memoryBytes", "\(scriptMemoryBytes)"), ("tls", tlsCertificate == nil ? "off" : "on"),
         ("outbound", outbound.map { "\($0.name)=\($0.url)" }.joined(separator: ",")),
         ("cluster", cluster.map { "\($0.redis) prefix \($0.prefix)" } ?? "off")]
    }

    public var effectiveWorkers: Int {
        workers > 0 ? workers : max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    }
}

public struct ConfigError: Error, CustomStringConvertible {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

/// Any JSON value, decoded strictly: a number is never a boolean, a fraction never an integer.
indirect enum JSONValue: Decodable, Equatable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let v = try? c.decode(Bool.self) { self = .bool(v) }
        else if let v = try? c.decode(Int.self) { self = .int(v) }
        else if let v = try? c.decode(Double.self) { self = .double(v) }
        else if let v = try? c.decode(String.self) { self = .string(v) }
        else if let v = try? c.decode([JSONValue].self) { self = .array(v) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .int, .double: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

extension GatewayConfig {
    public static func load(path: String) throws(ConfigError) -> GatewayConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(message: "config file \(path) cannot be read")
        }
        return try parse(data, source: path)
    }

    public static func parse(_ data: Data, source: String = "config") throws(ConfigError) -> GatewayConfig {
        let root: JSONValue
        do {
            root = try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw ConfigError(message: "\(source) is not valid JSON: \(error)")
        }
        guard case .object = root else { throw ConfigError(message: "\(source): the top level must be an object") }
        var config = GatewayConfig()
        var sendQueueGiven = false
        let reader = Reader(source: source)
        try reader.object(root, prefix: "") { (key, value, r) throws(ConfigError) in
            switch key {
            case "host": config.host = try r.string(value, key)
            case "port": config.port = try r.int(value, key, 0...65535)
            case "endpoints": config.endpoints = try r.string(value, key)
            case "workers": config.workers = try r.int(value, key, 0...1024)
            case "logLevel":
                let name = try r.string(value, key)
                guard let level = LogLevel.allCases.first(where: { $0.label.lowercased() == name }) else {
                    throw r.error(key, "must be one of debug, info, warn, error")
                }
                config.logLevel = level
            case "logFormat":
                guard let format = LogFormat(rawValue: try r.string(value, key)) else { throw r.error(key, "must be text or json") }
                config.logFormat = format
            case "limits":
                try r.object(value, prefix: "limits.") { (key, value, r) throws(ConfigError) in
                    switch key {
                    case "maxMessageBytes": config.maxMessageBytes = try r.int(value, "limits." + key, 1...(1 << 30))
                    case "httpResponseBytes": config.httpResponseBytes = try r.int(value, "limits." + key, 1...(1 << 30))
                    case "maxHttpBodyBytes": config.maxHttpBodyBytes = try r.int(value, "limits." + key, 0...(1 << 30))
                    case "maxRequestHeaderBytes": config.maxRequestHeaderBytes = try r.int(value, "limits." + key, 256...(1 << 20))
                    case "maxConnections": config.maxConnections = try r.int(value, "limits." + key, 1...10_000_000)
                    case "handshakeTimeoutMs": config.handshakeTimeoutMs = try r.int(value, "limits." + key, 1...3_600_000)
                    case "pingIntervalMs": config.pingIntervalMs = try r.int(value, "limits." + key, 0...86_400_000)
                    case "idleTimeoutMs": config.idleTimeoutMs = try r.int(value, "limits." + key, 0...86_400_000)
                    case "sendQueueBytes":
                        config.sendQueueBytes = try r.int(value, "limits." + key, 1024...(1 << 34))
                        sendQueueGiven = true
                    default: throw r.unknown("limits." + key)
                    }
                }
            case "rateLimit":
                try r.object(value, prefix: "rateLimit.") { (key, value, r) throws(ConfigError) in
                    switch key {
                    case "messagesPerSecond": config.messagesPerSecond = try r.number(value, "rateLimit." + key, 0...1_000_000)
                    case "burst": config.burst = try r.int(value, "rateLimit." + key, 0...1_000_000)
                    case "onExceed":
                        let name = try r.string(value, "rateLimit." + key)
                        guard let action = RateLimitAction(rawValue: name) else {
                            throw r.error("rateLimit." + key, "must be one of throttle, drop, close")
                        }
                        config.onExceed = action
                    default: throw r.unknown("rateLimit." + key)
                    }
                }
            case "websocket":
                try r.object(value, prefix: "websocket.") { (key, value, r) throws(ConfigError) in
                    switch key {
                    case "approvedSocketDomains":
                        config.approvedSocketDomains = try r.strings(value, "websocket." + key)
                        for (i, pattern) in config.approvedSocketDomains.enumerated() where OriginPolicy.compile(pattern) == nil {
                            throw r.error("websocket.\(key)[\(i)]", "is not a valid regular expression: \(pattern)")
                        }
                    case "subprotocols": config.subprotocols = try r.strings(value, "websocket." + key)
                    default: throw r.unknown("websocket." + key)
                    }
                }
            case "scripts":
                try r.object(value, prefix: "scripts.") { (key, value, r) throws(ConfigError) in
                    switch key {
                    case "timeoutMs": config.scriptTimeoutMs = try r.int(value, "scripts." + key, 0...3_600_000)
                    case "memoryBytes": config.scriptMemoryBytes = try r.int(value, "scripts." + key, 0...(1 << 40))
                    case "waitTimeoutMs": config.scriptWaitTimeoutMs = try r.int(value, "scripts." + key, 0...86_400_000)
                    default: throw r.unknown("scripts." + key)
                    }
                }
            case "shutdownTimeoutMs": config.shutdownTimeoutMs = try r.int(value, key, 0...3_600_000)
            case "tls":
                try r.object(value, prefix: "tls.") { (key, value, r) throws(ConfigError) in
                    switch key {
                    case "certificate": config.tlsCertificate = try r.string(value, "tls." + key)
                    case "privateKey": config.tlsPrivateKey = try r.string(value, "tls." + key)
                    default: throw r.unknown("tls." + key)
                    }
                }
                if (config.tlsCertificate == nil) != (config.tlsPrivateKey == nil) {
                    throw r.error("tls", "needs both certificate and privateKey")
                }
            case "compression":
                try r.object(value, prefix: "compression.") { (key, value, r) throws(ConfigError) in
                    let name = "compression." + key
                    switch key {
                    case "enabled": config.compressionEnabled = try r.bool(value, name)
                    case "minBytes": config.compressionMinBytes = try r.int(value, name, 0...(1 << 30))
                    case "serverNoContextTakeover": config.deflatePolicy.serverNoContextTakeover = try r.bool(value, name)
                    case "clientNoContextTakeover": config.deflatePolicy.clientNoContextTakeover = try r.bool(value, name)
                    case "serverMaxWindowBits": config.deflatePolicy.serverMaxWindowBits = try r.int(value, name, 9...15)
                    case "clientMaxWindowBits": config.deflatePolicy.clientMaxWindowBits = try r.int(value, name, 8...15)
                    default: throw r.unknown(name)
                    }
                }
            case "admin":
                try r.object(value, prefix: "admin.") { (key, value, r) throws(ConfigError) in
                    switch key {
                    case "host": config.adminHost = try r.string(value, "admin." + key)
                    case "port": config.adminPort = try r.int(value, "admin." + key, 0...65535)
                    case "token":
                        let token = try r.string(value, "admin." + key)
                        guard !token.isEmpty else { throw r.error("admin.token", "must not be empty") }
                        config.adminToken = token
                    case "tokenFile": config.adminTokenFile = try r.string(value, "admin." + key)
                    default: throw r.unknown("admin." + key)
                    }
                }
            case "metrics":
                try r.object(value, prefix: "metrics.") { (key, value, r) throws(ConfigError) in
                    switch key {
                    case "public": config.metricsPublic = try r.bool(value, "metrics." + key)
                    default: throw r.unknown("metrics." + key)
                    }
                }
            case "keystore":
                try r.object(value, prefix: "keystore.") { (key, value, r) throws(ConfigError) in
                    switch key {
                    case "maxBytes": config.keystoreMaxBytes = try r.int(value, "keystore." + key, 0...(1 << 40))
                    default: throw r.unknown("keystore." + key)
                    }
                }
            case "outbound":
                config.outbound = try r.outbound(value)
            case "cluster":
                config.cluster = try r.cluster(value)
            case "outboundReconnect":
                try r.object(value, prefix: "outboundReconnect.") { (key, value, r) throws(ConfigError) in
                    switch key {
                    case "initialDelayMs": config.outboundInitialDelayMs = try r.int(value, "outboundReconnect." + key, 1...3_600_000)
                    case "maxDelayMs": config.outboundMaxDelayMs = try r.int(value, "outboundReconnect." + key, 1...86_400_000)
                    default: throw r.unknown("outboundReconnect." + key)
                    }
                }
            default: throw r.unknown(key)
            }
        }
        if config.outboundMaxDelayMs < config.outboundInitialDelayMs {
            throw reader.error("outboundReconnect.maxDelayMs", "must be at least outboundReconnect.initialDelayMs (\(config.outboundInitialDelayMs))")
        }
        // A message is refused once the queue is half full: the queue must hold two of the largest.
        // Left out, the queue follows limits.maxMessageBytes; set, a value too small is an error.
        if !sendQueueGiven {
            config.sendQueueBytes = max(config.sendQueueBytes, 2 * config.maxMessageBytes)
        }
        if config.sendQueueBytes < 2 * config.maxMessageBytes {
            throw reader.error("limits.sendQueueBytes", "must be at least twice limits.maxMessageBytes (\(2 * config.maxMessageBytes))")
        }
        return config
    }

    /// The management API's token: `admin.token`, or the first line of `admin.tokenFile`; nil while
    /// the admin listener is off. An admin port without a usable token stops start-up.
    public func resolvedAdminToken() throws(ConfigError) -> String? {
        guard adminPort != 0 else { return nil }
        if let adminToken, adminTokenFile == nil { return adminToken }
        guard let file = adminTokenFile else {
            throw ConfigError(message: "config key \"admin.token\": admin.port is set but there is no admin.token or admin.tokenFile (--admin-token-file)")
        }
        guard adminToken == nil else {
            throw ConfigError(message: "config key \"admin.tokenFile\": give admin.token or admin.tokenFile, not both")
        }
        return try GatewayConfig.secret(inFile: file, key: "admin.tokenFile")
    }

    /// A secret kept in a file: its one line, a trailing newline ignored.
    static func secret(inFile file: String, key: String) throws(ConfigError) -> String {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw ConfigError(message: "config key \"\(key)\": cannot read \(file)")
        }
        var secret = String(decoding: data, as: UTF8.self)
        while secret.hasSuffix("\n") || secret.hasSuffix("\r") { secret.removeLast() }
        guard !secret.isEmpty, !secret.contains("\n") else {
            throw ConfigError(message: "config key \"\(key)\": \(file) must hold one non-empty line")
        }
        return secret
    }
}

/// Typed access to config values with errors that name the key.
private struct Reader {
    let source: String

    func error(_ key: String, _ why: String) -> ConfigError {
        ConfigError(message: "\(source): key \"\(key)\" \(why)")
    }

    func unknown(_ key: String) -> ConfigError {
        ConfigError(message: "\(source): unknown key \"\(key)\"")
    }

    func object(_ value: JSONValue, prefix: String, _ each: (String, JSONValue, Reader) throws(ConfigError) -> Void) throws(ConfigError) {
        guard case .object(let fields) = value else {
            throw error(String(prefix.dropLast()), "must be an object, not \(value.typeName)")
        }
        for key in fields.keys.sorted() { try each(key, fields[key]!, self) }
    }

    func string(_ value: JSONValue, _ key: String) throws(ConfigError) -> String {
        guard case .string(let s) = value else { throw error(key, "must be a string, not \(value.typeName)") }
        return s
    }

    func bool(_ value: JSONValue, _ key: String) throws(ConfigError) -> Bool {
        guard case .bool(let b) = value else { throw error(key, "must be true or false, not \(value.typeName)") }
        return b
    }

    func strings(_ value: JSONValue, _ key: String) throws(ConfigError) -> [String] {
        guard case .array(let items) = value else { throw error(key, "must be an array of strings, not \(value.typeName)") }
        var result: [String] = []
        for (i, item) in items.enumerated() {
            guard case .string(let s) = item else { throw error("\(key)[\(i)]", "must be a string, not \(item.typeName)") }
            result.append(s)
        }
        return result
    }

    func int(_ value: JSONValue, _ key: String, _ range: ClosedRange<Int>) throws(ConfigError) -> Int {
        guard case .int(let v) = value else { throw error(key, "must be an integer, not \(value.typeName)") }
        guard range.contains(v) else { throw error(key, "must be between \(range.lowerBound) and \(range.upperBound)") }
        return v
    }

    /// The `outbound` array: each item has the fields of `Websocket.connect`.
    func outbound(_ value: JSONValue) throws(ConfigError) -> [OutboundSpec] {
        guard case .array(let items) = value else { throw error("outbound", "must be an array of objects, not \(value.typeName)") }
        var specs: [OutboundSpec] = []
        for (i, item) in items.enumerated() {
            let prefix = "outbound[\(i)]."
            var fields: [String: String] = [:]
            var headers: [(name: String, value: String)] = []
            var insecure = false
            try object(item, prefix: prefix) { (key, value, r) throws(ConfigError) in
                switch key {
                case _ where OutboundSpec.stringFields.contains(key): fields[key] = try r.string(value, prefix + key)
                case "insecure": insecure = try r.bool(value, prefix + key)
                case "headers":
                    try r.object(value, prefix: prefix + "headers.") { (name, value, r) throws(ConfigError) in
                        headers.append((name, try r.string(value, prefix + "headers." + name)))
                    }
                default: throw r.unknown(prefix + key)
                }
            }
            switch OutboundSpec.make(fields, headers: headers, insecure: insecure) {
            case .failure(let problem): throw error(prefix + problem.field, problem.message)
            case .success(let spec):
                if let first = specs.firstIndex(where: { $0.name == spec.name }) {
                    throw error(prefix + "name", "\"\(spec.name)\" is already the name of outbound[\(first)]")
                }
                specs.append(spec)
            }
        }
        return specs
    }

    /// The `cluster` object: `redis` is required; the timings must leave room for each other.
    func cluster(_ value: JSONValue) throws(ConfigError) -> ClusterSettings {
        var endpoint: RedisEndpoint?
        var settings = ClusterSettings(redis: RedisEndpoint(host: "127.0.0.1"))
        try object(value, prefix: "cluster.") { (key, value, r) throws(ConfigError) in
            let name = "cluster." + key
            switch key {
            case "redis":
                switch RedisEndpoint.parse(try r.string(value, name)) {
                case .success(let parsed): endpoint = parsed
                case .failure(let problem): throw r.error(name, problem.message)
                }
            case "passwordFile": settings.passwordFile = try r.string(value, name)
            case "nodeId":
                let id = try r.string(value, name)
                guard ClusterSettings.validNodeId(id) else {
                    throw r.error(name, "must be 1 to \(ClusterSettings.maxNodeIdBytes) lower-case letters and digits")
                }
                settings.nodeId = id
            case "prefix":
                let prefix = try r.string(value, name)
                guard !prefix.isEmpty, prefix.utf8.count <= 64, !prefix.contains(where: { $0 == " " || $0 == "*" || $0 == "?" || $0 == "[" }) else {
                    throw r.error(name, "must be 1 to 64 bytes without spaces or glob characters")
                }
                settings.prefix = prefix
            case "heartbeatMs": settings.heartbeatMs = try r.int(value, name, 100...60_000)
            case "nodeTimeoutMs": settings.nodeTimeoutMs = try r.int(value, name, 300...600_000)
            case "requestTimeoutMs": settings.requestTimeoutMs = try r.int(value, name, 10...60_000)
            case "required": settings.required = try r.bool(value, name)
            default: throw r.unknown(name)
            }
        }
        guard let endpoint else { throw error("cluster.redis", "is required (a redis:// URL)") }
        settings.redis = endpoint
        guard settings.nodeTimeoutMs >= 2 * settings.heartbeatMs else {
            throw error("cluster.nodeTimeoutMs", "must be at least twice cluster.heartbeatMs (\(2 * settings.heartbeatMs))")
        }
        return settings
    }

    func number(_ value: JSONValue, _ key: String, _ range: ClosedRange<Double>) throws(ConfigError) -> Double {
        let v: Double
        switch value {
        case .int(let i): v = Double(i)
        case .double(let d): v = d
        default: throw error(key, "must be a number, not \(value.typeName)")
        }
        guard range.contains(v) else { throw error(key, "must be between \(range.lowerBound) and \(range.upperBound)") }
        return v
    }
}
