import WebSocketCodec

/// One `GET /metrics`: asks every loop for its counters through its mailbox, then renders the
/// Prometheus text exposition on the asking loop, with the gauges read from the shared tables.
final class MetricsScrape {
    /// What one loop reports: its counters and its scripts' runs and errors by route.
    struct Snapshot {
        let metrics: LoopMetrics
        let scripts: [(route: String, runs: Int, errors: Int)]
    }

    static let contentType = "text/plain; version=0.0.4; charset=utf-8"
    static let version = "0.11.0"

    private unowned let worker: Worker
    private var total = LoopMetrics()
    private var scripts: [String: (runs: Int, errors: Int)] = [:]
    private var pending: Int
    private let done: (String) -> Void

    private init(worker: Worker, done: @escaping (String) -> Void) {
        self.worker = worker
        self.done = done
        pending = worker.shared.workers.count
    }

    /// Answers the HTTP request `connection` is handling with the exposition, once every loop has
    /// reported.
    static func answer(_ connection: Connection, keepAlive: Bool, on worker: Worker) {
        let scrape = MetricsScrape(worker: worker) { [connection] text in
            connection.respond(HTTPResponse.make(status: 200, headers: [("Content-Type", contentType)], body: Array(text.utf8),
                                                 keepAlive: keepAlive), keepAlive: keepAlive)
        }
        for other in worker.shared.workers {
            if other === worker {
                scrape.collect(other.metricsSnapshot())
            } else {
                other.loop.post {
                    let snapshot = other.metricsSnapshot()
                    worker.loop.post { scrape.collect(snapshot) }
                }
            }
        }
    }

    private func collect(_ snapshot: Snapshot) {
        total.add(snapshot.metrics)
        for script in snapshot.scripts {
            let sum = scripts[script.route] ?? (0, 0)
            scripts[script.route] = (sum.runs + script.runs, sum.errors + script.errors)
        }
        pending -= 1
        if pending == 0 { done(render()) }
    }

    private func render() -> String {
        var out = Exposition()
        let shared = worker.shared
        var open: [String: Int] = [:]
        for entry in shared.registry.all() { open[entry.info.metricsRoute, default: 0] += 1 }
        out.family("wsgate_connections", "gauge", "Open WebSocket connections.", open.sorted { $0.key < $1.key }.map { (["route": $0.key], Double($0.value)) })
        out.family("wsgate_connections_accepted_total", "counter", "Upgrades accepted.", [([:], Double(total.accepted))])
        out.family("wsgate_connections_rejected_total", "counter", "Upgrades refused, by reason.",
                   LoopMetrics.Rejection.allCases.map { (["reason": $0.label], Double(total.rejected[$0.rawValue])) })
        out.family("wsgate_disconnections_total", "counter", "Closed WebSocket connections, by the first close code sent or received (1006: none).",
                   total.disconnections.sorted { $0.key < $1.key }.map { (["code": String($0.key)], Double($0.value)) })
        out.family("wsgate_messages_received_total", "counter", "Messages received from clients and outbound connections.", [([:], Double(total.messagesReceived))])
        out.family("wsgate_messages_sent_total", "counter", "Messages queued to sockets.", [([:], Double(total.messagesSent))])
        out.family("wsgate_received_bytes_total", "counter", "Payload bytes of the messages received.", [([:], Double(total.bytesReceived))])
        out.family("wsgate_sent_bytes_total", "counter", "Payload bytes of the messages queued.", [([:], Double(total.bytesSent))])
        out.family("wsgate_rate_limited_total", "counter", "Messages over the rate limit, by rateLimit.onExceed action.",
                   LoopMetrics.RateLimitAction.allCases.map { (["action": $0.label], Double(total.rateLimited[$0.rawValue])) })
        out.family("wsgate_send_queue_rejections_total", "counter", "Messages refused because the socket's send queue was past half of limits.sendQueueBytes.",
                   [([:], Double(total.sendQueueRejections))])
        let byRoute = scripts.sorted { $0.key < $1.key }
        out.family("wsgate_script_runs_total", "counter", "Script runs, by route.", byRoute.map { (["route": $0.key], Double($0.value.runs)) })
        out.family("wsgate_script_errors_total", "counter", "Script runs that failed, by route.", byRoute.map { (["route": $0.key], Double($0.value.errors)) })
        out.histogram("wsgate_script_duration_seconds", "Wall time of script runs, waits included.", total.scriptDuration)
        out.family("wsgate_topics", "gauge", "Topics with at least one subscriber.", [([:], Double(shared.topics.count))])
        out.family("wsgate_keystore_keys", "gauge", "Keys in the keystore.", [([:], Double(shared.keystore.count))])
        out.family("wsgate_keystore_bytes", "gauge", "Bytes the keystore holds (keys, values, 64 per entry).", [([:], Double(shared.keystore.usedBytes))])
        var links: [String: Int] = ["connecting": 0, "open": 0, "closed": 0]
        for (_, entry) in shared.outbound.all() { links[entry.state.rawValue, default: 0] += 1 }
        out.family("wsgate_outbound_connections", "gauge", "Outbound connections, by state.", links.sorted { $0.key < $1.key }.map { (["state": $0.key], Double($0.value)) })
        if let cluster = shared.cluster {
            out.family("wsgate_cluster_up", "gauge", "1 while this node's link to Redis is up.", [([:], cluster.up.load(ordering: .relaxed) ? 1 : 0)])
            out.family("wsgate_cluster_nodes", "gauge", "Live nodes, this one included, as of the last heartbeat.", [([:], Double(cluster.nodes.count))])
            out.family("wsgate_cluster_requests_total", "counter", "Requests to Redis, by operation.",
                       total.clusterRequests.sorted { $0.key < $1.key }.map { (["op": $0.key], Double($0.value)) })
            out.family("wsgate_cluster_errors_total", "counter", "Requests to Redis that failed (unreachable, timed out, refused), by operation.",
                       total.clusterErrors.sorted { $0.key < $1.key }.map { (["op": $0.key], Double($0.value)) })
            out.histogram("wsgate_cluster_request_duration_seconds", "Time from a request to Redis to its answer.", total.clusterDuration)
        }
        out.family("wsgate_build_info", "gauge", "The gateway's version.", [(["version": MetricsScrape.version], 1)])
        return out.text
    }
}

/// Prometheus text format 0.0.4.
private struct Exposition {
    var text = ""

    mutating func family(_ name: String, _ type: String, _ help: String, _ samples: [([String: String], Double)]) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        for (labels, value) in samples { sample(name, labels, value) }
    }

    mutating func histogram(_ name: String, _ help: String, _ histogram: Histogram) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
        var cumulative = 0
        for (i, bound) in Histogram.bounds.enumerated() {
            cumulative += histogram.counts[i]
            sample(name + "_bucket", ["le": Exposition.number(bound)], Double(cumulative))
        }
        cumulative += histogram.counts[Histogram.bounds.count]
        sample(name + "_bucket", ["le": "+Inf"], Double(cumulative))
        sample(name + "_sum", [:], histogram.sum)
        sample(name + "_count", [:], Double(cumulative))
    }

    private mutating func sample(_ name: String, _ labels: [String: String], _ value: Double) {
        text += name
        if !labels.isEmpty {
            text += "{" + labels.sorted { $0.key < $1.key }.map { "\($0.key)=\"\(Exposition.escaped($0.value))\"" }.joined(separator: ",") + "}"
        }
        text += " " + Exposition.number(value) + "\n"
    }

    private static func number(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
    }

    private static func escaped(_ value: String) -> String {
        var out = ""
        for c in value {
            switch c {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out
    }
}
