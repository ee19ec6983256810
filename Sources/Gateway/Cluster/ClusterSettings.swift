import Foundation
import Redis

/// The `cluster` config section: where Redis is and how this node takes part. Without it the
/// gateway is one node and nothing of the cluster runs.
public struct ClusterSettings: Equatable {
    public var redis: RedisEndpoint
    public var passwordFile: String?
    /// Names this node in socket ids and in Redis: lower-case letters and digits.
    public var nodeId: String?
    /// Every key and channel starts with it, so clusters can share a Redis.
    public var prefix = "wsgate"
    public var heartbeatMs = 3000
    public var nodeTimeoutMs = 10_000
    /// The bound on every call that needs Redis or another node.
    public var requestTimeoutMs = 1000
    /// The health route answers 503 while Redis is unreachable.
    public var required = false

    public init(redis: RedisEndpoint) {
        self.redis = redis
    }

    static let maxNodeIdBytes = 32

    static func validNodeId(_ id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= maxNodeIdBytes && id.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) }
    }

    /// The Redis password: the first line of `passwordFile` (a trailing newline ignored), else
    /// REDIS_PASSWORD, else none. Never logged.
    public func resolvedPassword(environment: [String: String] = ProcessInfo.processInfo.environment) throws(ConfigError) -> String? {
        guard let file = passwordFile else {
            guard let password = environment["REDIS_PASSWORD"], !password.isEmpty else { return nil }
            return password
        }
        return try GatewayConfig.secret(inFile: file, key: "cluster.passwordFile")
    }
}
