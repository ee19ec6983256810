import Reactor
import Synchronization

/// What all workers share: the socket registry, the worker list, start-up settings.
final class SharedState {
    let registry = Registry()
    /// Upgraded sockets not yet closed, closing ones included (the registry lists only open ones):
    /// what shutdown waits for.
    let liveSockets = Atomic<Int>(0)
    let endpointsFolder: String
    /// The node's id: makes socket ids unique across restarts and names the node that owns one.
    let socketIdPrefix: String
    var workers: [Worker] = []
    let outbound = OutboundRegistry()
    /// Topic subscriptions of every loop's sockets.
    let topics = Topics()
    /// The `Keystore` service's store: survives script reloads and SIGHUP, not a restart.
    let keystore: Keystore
    /// TLS client contexts by CA file ("" for the system trust store): loading a trust store is
    /// slow, and a context serves any number of connections on any loop.
    private var tlsClientContexts: [String: TLSClientContext] = [:]
    private let tlsClientLock = Lock()

    /// Set when this node is one of a cluster.
    let cluster: ClusterState?

    init(endpointsFolder: String, keystoreMaxBytes: Int, cluster: ClusterState? = nil) {
        self.endpointsFolder = endpointsFolder
        keystore = Keystore(maxBytes: keystoreMaxBytes)
        self.cluster = cluster
        socketIdPrefix = cluster?.nodeId ?? SharedState.randomNodeId()
    }

    /// Random per process, so socket ids stay unique across restarts.
    static func randomNodeId() -> String {
        var random = SystemRandomNumberGenerator()
        return String(random.next() & 0xFFFF_FFFF_FFFF, radix: 36)
    }
}

extension SharedState {
    func tlsClientContext(caFile: String?) throws(TLSError) -> TLSClientContext {
        try tlsClientLock.locked { () -> Result<TLSClientContext, TLSError> in
            if let existing = tlsClientContexts[caFile ?? ""] { return .success(existing) }
            let loaded = Result { () throws(TLSError) in try TLSClientContext.load(caFile: caFile) }
            if case .success(let context) = loaded { tlsClientContexts[caFile ?? ""] = context }
            return loaded
        }.get()
    }
}
