import Reactor
import Synchronization

/// What every loop of this node shares about the cluster: the settings, this node's id (the
/// prefix of its socket ids), the live nodes as the last heartbeat read them, and whether loop
/// 0's link to Redis is up (the health route and `wsgate_cluster_up`).
final class ClusterState {
    let settings: ClusterSettings
    let password: String?
    let nodeId: String
    let up = Atomic<Bool>(false)
    private let lock = Lock()
    private var liveNodes: [String] = []

    init(settings: ClusterSettings, password: String?, nodeId: String) {
        self.settings = settings
        self.password = password
        self.nodeId = nodeId
    }

    /// Live nodes, this one included, as of the last heartbeat.
    var nodes: [String] {
        get { lock.locked { liveNodes } }
        set { lock.locked { liveNodes = newValue } }
    }

    /// A Redis key or channel of this cluster: the prefix, then the parts, joined by ":".
    func key(_ parts: String...) -> [UInt8] {
        var key = Array(settings.prefix.utf8)
        for part in parts {
            key.append(UInt8(ascii: ":"))
            key.append(contentsOf: part.utf8)
        }
        return key
    }
}
