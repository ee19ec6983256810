import Reactor
import Synchronization

/// Who listens to what, for the whole process: topic → subscribers, socket → its topics. One lock,
/// held for the table operations only. A socket leaves its topics when it leaves the registry; a
/// subscription made from another loop while the socket closes is taken back (`subscribe`).
final class Topics {
    struct Subscriber {
        /// The loop that owns the socket.
        let worker: Int
        let info: ConnectionInfo
    }

    static let maxTopicBytes = 256

    private let lock = Lock()
    private var subscribers: [String: [String: Subscriber]] = [:]
    private var topicsOf: [String: Set<String>] = [:]
    /// Told (outside the lock, on the changing thread) when a topic gets its first subscriber or
    /// loses its last: a cluster node listens on a topic's channel only while it has subscribers.
    var watcher: ((_ topic: String) -> Void)?

    /// Adds the subscription; false when the socket is not open (any more).
    func subscribe(_ entry: Registry.Entry, topic: String, registry: Registry) -> Bool {
        let id = entry.info.socketId
        entry.info.subscribed.store(true, ordering: .relaxed)
        let first = lock.locked {
            let first = subscribers[topic] == nil
            subscribers[topic, default: [:]][id] = Subscriber(worker: entry.worker, info: entry.info)
            topicsOf[id, default: []].insert(topic)
            return first
        }
        if first { watcher?(topic) }
        // The owner takes the socket out of the registry before it clears its topics: if it is out
        // now, the clearing may have run before this subscription was added.
        guard registry.lookup(id) != nil else {
            removeAll(id)
            return false
        }
        return true
    }

    func unsubscribe(_ socketId: String, topic: String) {
        let emptied = lock.locked {
            subscribers[topic]?[socketId] = nil
            topicsOf[socketId]?.remove(topic)
            if topicsOf[socketId]?.isEmpty == true { topicsOf[socketId] = nil }
            guard subscribers[topic]?.isEmpty == true else { return false }
            subscribers[topic] = nil
            return true
        }
        if emptied { watcher?(topic) }
    }

    /// The socket closes: it leaves every topic.
    func removeAll(_ socketId: String) {
        let emptied = lock.locked { () -> [String] in
            guard let topics = topicsOf.removeValue(forKey: socketId) else { return [] }
            var emptied: [String] = []
            for topic in topics {
                subscribers[topic]?[socketId] = nil
                if subscribers[topic]?.isEmpty == true {
                    subscribers[topic] = nil
                    emptied.append(topic)
                }
            }
            return emptied
        }
        for topic in emptied { watcher?(topic) }
    }

    func hasSubscribers(_ topic: String) -> Bool {
        lock.locked { subscribers[topic] != nil }
    }

    func topics(of socketId: String) -> [String] {
        lock.locked { topicsOf[socketId].map { Array($0) } ?? [] }.sorted()
    }

    func subscribers(of topic: String) -> [Subscriber] {
        lock.locked { subscribers[topic].map { Array($0.values) } ?? [] }
    }

    /// Topics with at least one subscriber.
    var count: Int { lock.locked { subscribers.count } }
}
