import Reactor

/// Every open socket of every loop: which loop owns it and its info. The lock is held only for
/// dictionary operations, never while a script runs.
final class Registry {
    struct Entry {
        let worker: Int
        let info: ConnectionInfo
    }

    private var entries: [String: Entry] = [:]
    private let lock = Lock()

    func add(_ info: ConnectionInfo, worker: Int) {
        lock.locked { entries[info.socketId] = Entry(worker: worker, info: info) }
    }

    func remove(_ socketId: String) {
        lock.locked { _ = entries.removeValue(forKey: socketId) }
    }

    func lookup(_ socketId: String) -> Entry? {
        lock.locked { entries[socketId] }
    }

    func all() -> [Entry] {
        lock.locked { Array(entries.values) }
    }

    var count: Int { lock.locked { entries.count } }
}
