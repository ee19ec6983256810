/// Where Redis is: `redis://host[:port][/db]`. A password in the URL is refused: URLs end up in
/// config files, process lists and logs, so the password comes from a file or the environment.
public struct RedisEndpoint: Equatable, CustomStringConvertible {
    public let host: String
    public let port: Int
    public let database: Int

    public init(host: String, port: Int = 6379, database: Int = 0) {
        self.host = host
        self.port = port
        self.database = database
    }

    public struct Problem: Error, Equatable {
        public let message: String
    }

    public static func parse(_ url: String) -> Result<RedisEndpoint, Problem> {
        guard url.hasPrefix("redis://") else { return .failure(Problem(message: "must be a redis:// URL")) }
        var rest = Substring(url.dropFirst("redis://".count))
        if rest.contains("@") {
            return .failure(Problem(message: "must not hold credentials: give the password in cluster.passwordFile or REDIS_PASSWORD"))
        }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !path.isEmpty {
                guard let db = Int(path), (0...15_999).contains(db) else { return .failure(Problem(message: "has a database that is not a number: /\(path)")) }
                database = db
            }
        }
        var host = rest
        var port = 6379
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { return .failure(Problem(message: "has an unterminated IPv6 address")) }
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let p = Int(after.dropFirst()), (1...65535).contains(p) else { return .failure(Problem(message: "has an invalid port")) }
                port = p
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            guard let p = Int(rest[rest.index(after: colon)...]), (1...65535).contains(p) else { return .failure(Problem(message: "has an invalid port")) }
            port = p
        }
        guard !host.isEmpty else { return .failure(Problem(message: "has no host")) }
        return .success(RedisEndpoint(host: String(host), port: port, database: database))
    }

    public var description: String {
        let shown = host.contains(":") ? "[\(host)]" : host
        return "redis://\(shown):\(port)/\(database)"
    }
}
