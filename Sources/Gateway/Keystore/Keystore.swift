import Reactor

/// The `Keystore` service's store: one per gateway process, shared by every loop, each call atomic
/// under one lock (held for the dictionary operation only, never while a script runs). Keys may
/// expire; expired keys are swept on time by `sweep`, not only found dead when read. Its size (keys,
/// values and a fixed overhead per entry) is bounded by `keystore.maxBytes`.
final class Keystore {
    enum Value: Equatable {
        case string(String)
        case integer(Int64)
        case number(Double)

        fileprivate var bytes: Int {
            if case .string(let text) = self { return text.utf8.count }
            return 8
        }
    }

    private struct Entry {
        var value: Value
        /// Monotonic nanoseconds; 0 = never.
        var expiresAt: UInt64
    }

    /// What an entry costs beyond its key and value: the dictionary slot, the heap entry.
    static let entryOverhead = 64
    /// `list` returns at most this many keys per call.
    static let pageSize = 10_000
    static let maxKeyBytes = 1024

    private let lock = Lock()
    private var entries: [String: Entry] = [:]
    /// (expiry, key) of keys with a TTL, earliest first; a key set again or deleted leaves a stale
    /// element that the sweep recognizes by its time.
    private var expiries = DeadlineHeap<String>()
    private var bytes = 0
    private var limit: Int

    init(maxBytes: Int) {
        limit = maxBytes
    }

    /// keystore.maxBytes; lowering it removes nothing, but refuses growth until the store fits.
    var maxBytes: Int {
        get { lock.locked { limit } }
        set { lock.locked { limit = newValue } }
    }

    /// How often `sweep` should run.
    static let sweepNanos: UInt64 = 100_000_000

    private static func cost(_ key: String, _ value: Value) -> Int { key.utf8.count + value.bytes + entryOverhead }

    /// Stores `value`; false when `onlyIfAbsent` and the key is there; nil when the store would
    /// pass `maxBytes`.
    func set(_ key: String, _ value: Value, ttlNanos: UInt64?, onlyIfAbsent: Bool, now: UInt64) -> Bool? {
        lock.locked {
            let old = live(key, now: now)
            if onlyIfAbsent && old != nil { return false }
            let added = Keystore.cost(key, value) - (old.map { Keystore.cost(key, $0.value) } ?? 0)
            guard added <= 0 || bytes + added <= limit else { return nil }
            let expiresAt = ttlNanos.map { now + max($0, 1) } ?? 0
            entries[key] = Entry(value: value, expiresAt: expiresAt)
            bytes += added
            if expiresAt != 0 {
                expiries.push(expiresAt, key)
                // Keys set again and again with a TTL leave stale elements: rebuild before they outgrow the keys.
                if expiries.count > 2 * entries.count + 1024 {
                    expiries = DeadlineHeap()
                    for (key, entry) in entries where entry.expiresAt != 0 { expiries.push(entry.expiresAt, key) }
                }
            }
            return true
        }
    }

    func get(_ key: String, now: UInt64) -> Value? {
        lock.locked { live(key, now: now)?.value }
    }

    func get(_ keys: [String], now: UInt64) -> [Value?] {
        lock.locked { keys.map { live($0, now: now)?.value } }
    }

    func delete(_ key: String, now: UInt64) -> Bool {
        lock.locked {
            guard let entry = live(key, now: now) else { return false }
            remove(key, entry)
            return true
        }
    }

    enum IncrementFailure: Error {
        case notAnInteger, overflow, full
    }

    /// Adds `by` to an integer value (a missing key counts as 0, a string of digits as its number);
    /// the entry keeps its expiry.
    func increment(_ key: String, by: Int64, now: UInt64) -> Result<Int64, IncrementFailure> {
        lock.locked {
            let old = live(key, now: now)
            let current: Int64
            switch old?.value {
            case nil: current = 0
            case .integer(let n)?: current = n
            case .string(let text)?:
                guard let n = Int64(text) else { return .failure(.notAnInteger) }
                current = n
            case .number(let x)?:
                guard let n = Int64(exactly: x) else { return .failure(.notAnInteger) }
                current = n
            }
            let (sum, overflow) = current.addingReportingOverflow(by)
            guard !overflow else { return .failure(.overflow) }
            let added = Keystore.cost(key, .integer(sum)) - (old.map { Keystore.cost(key, $0.value) } ?? 0)
            guard added <= 0 || bytes + added <= limit else { return .failure(.full) }
            entries[key] = Entry(value: .integer(sum), expiresAt: old?.expiresAt ?? 0)
            bytes += added
            return .success(sum)
        }
    }

    /// The keys starting with `prefix`, in byte order, after `cursor`; at most `pageSize`, with
    /// the cursor of the next page when there are more.
    func list(prefix: String, after cursor: String?, now: UInt64) -> (keys: [String], next: String?) {
        let matching = lock.locked {
            entries.compactMap { key, entry in
                key.hasPrefix(prefix) && (entry.expiresAt == 0 || entry.expiresAt > now) ? key : nil
            }
        }
        var keys = matching.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        if let cursor { keys.removeAll { !cursor.utf8.lexicographicallyPrecedes($0.utf8) } }
        guard keys.count > Keystore.pageSize else { return (keys, nil) }
        keys.removeLast(keys.count - Keystore.pageSize)
        return (keys, keys.last)
    }

    /// Removes the keys whose time has come. Called on a timer; cheap when nothing expires.
    func sweep(now: UInt64) {
        lock.locked {
            while let (at, key) = expiries.popDue(now: now) {
                if let entry = entries[key], entry.expiresAt == at { remove(key, entry) }
            }
        }
    }

    var count: Int { lock.locked { entries.count } }
    var usedBytes: Int { lock.locked { bytes } }

    /// The entry of `key` unless it has expired (then it is removed).
    private func live(_ key: String, now: UInt64) -> Entry? {
        guard let entry = entries[key] else { return nil }
        if entry.expiresAt != 0 && entry.expiresAt <= now {
            remove(key, entry)
            return nil
        }
        return entry
    }

    private func remove(_ key: String, _ entry: Entry) {
        entries[key] = nil
        bytes -= Keystore.cost(key, entry.value)
    }
}
