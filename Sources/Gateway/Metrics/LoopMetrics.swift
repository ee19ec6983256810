/// One loop's counters: plain integers, written only on the loop's thread (no atomics, no shared
/// cache lines on the hot path) and read by `MetricsScrape` through the loop's mailbox.
struct LoopMetrics {
    /// Why an upgrade was refused, for `wsgate_connections_rejected_total{reason}`.
    enum Rejection: Int, CaseIterable {
        case origin, limit, connectHook, handshake, tls

        var label: String {
            switch self {
            case .origin: return "origin"
            case .limit: return "limit"
            case .connectHook: return "connect_hook"
            case .handshake: return "handshake"
            case .tls: return "tls"
            }
        }
    }

    /// `rateLimit.onExceed` actions, for `wsgate_rate_limited_total{action}`.
    enum RateLimitAction: Int, CaseIterable {
        case throttle, drop, close

        var label: String {
            switch self {
            case .throttle: return "throttle"
            case .drop: return "drop"
            case .close: return "close"
            }
        }
    }

    var accepted = 0
    var rejected = [Int](repeating: 0, count: Rejection.allCases.count)
    /// Closed sockets by the first close code sent or received (1006 without one).
    var disconnections: [UInt16: Int] = [:]
    var messagesReceived = 0
    var bytesReceived = 0
    var messagesSent = 0
    var bytesSent = 0
    var rateLimited = [Int](repeating: 0, count: RateLimitAction.allCases.count)
    var sendQueueRejections = 0
    var scriptDuration = Histogram()
    /// Requests to Redis (the cluster), by operation.
    var clusterRequests: [String: Int] = [:]
    var clusterErrors: [String: Int] = [:]
    var clusterDuration = Histogram()

    mutating func reject(_ reason: Rejection) { rejected[reason.rawValue] += 1 }

    /// Adds another loop's counters.
    mutating func add(_ other: LoopMetrics) {
        accepted += other.accepted
        for i in rejected.indices { rejected[i] += other.rejected[i] }
        for (code, n) in other.disconnections { disconnections[code, default: 0] += n }
        messagesReceived += other.messagesReceived
        bytesReceived += other.bytesReceived
        messagesSent += other.messagesSent
        bytesSent += other.bytesSent
        for i in rateLimited.indices { rateLimited[i] += other.rateLimited[i] }
        sendQueueRejections += other.sendQueueRejections
        scriptDuration.add(other.scriptDuration)
        for (op, n) in other.clusterRequests { clusterRequests[op, default: 0] += n }
        for (op, n) in other.clusterErrors { clusterErrors[op, default: 0] += n }
        clusterDuration.add(other.clusterDuration)
    }
}

/// Durations in fixed buckets, Prometheus style (cumulative when rendered, in seconds).
struct Histogram {
    static let bounds: [Double] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    private static let boundNanos = bounds.map { UInt64($0 * 1e9) }
    /// Observations per bucket (not cumulative), the last one for +Inf.
    var counts = [Int](repeating: 0, count: Histogram.bounds.count + 1)
    var sumNanos: UInt64 = 0

    var sum: Double { Double(sumNanos) / 1e9 }

    mutating func observe(nanos: UInt64) {
        sumNanos &+= nanos
        var i = 0
        while i < Histogram.boundNanos.count && nanos > Histogram.boundNanos[i] { i += 1 }
        counts[i] += 1
    }

    mutating func add(_ other: Histogram) {
        for i in counts.indices { counts[i] += other.counts[i] }
        sumNanos &+= other.sumNanos
    }
}
