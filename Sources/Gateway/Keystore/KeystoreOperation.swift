/// One call of the `Keystore` service, checked, and its answer: what the script asked, whoever
/// keeps the store (this process's `Keystore`, or Redis in a cluster).
enum KeystoreOperation {
    case set(key: String, value: Keystore.Value, ttlMs: Int?, onlyIfAbsent: Bool)
    case get(String)
    case mget([String])
    case delete(String)
    case incr(String, by: Int64)
    case list(prefix: String, cursor: String?)
}

enum KeystoreAnswer: Equatable {
    /// `set`: stored, or not (`only_if_absent` and the key exists).
    case stored(Bool)
    case value(Keystore.Value?)
    case values([Keystore.Value?])
    /// `delete`: 1 or 0.
    case deleted(Bool)
    case integer(Int64)
    /// `list`: a page of keys and the cursor of the next one.
    case keys([String], next: String?)
}

extension Keystore {
    func perform(_ operation: KeystoreOperation, now: UInt64) -> Result<KeystoreAnswer, ServiceFailure> {
        switch operation {
        case .set(let key, let value, let ttlMs, let onlyIfAbsent):
            guard let stored = set(key, value, ttlNanos: ttlMs.map { UInt64($0) * 1_000_000 }, onlyIfAbsent: onlyIfAbsent, now: now) else {
                return .failure(full)
            }
            return .success(.stored(stored))
        case .get(let key):
            return .success(.value(get(key, now: now)))
        case .mget(let keys):
            return .success(.values(get(keys, now: now)))
        case .delete(let key):
            return .success(.deleted(delete(key, now: now)))
        case .incr(let key, let by):
            switch increment(key, by: by, now: now) {
            case .success(let n): return .success(.integer(n))
            case .failure(.notAnInteger): return .failure(Keystore.notAnInteger(key))
            case .failure(.overflow): return .failure(Keystore.overflow(key))
            case .failure(.full): return .failure(full)
            }
        case .list(let prefix, let cursor):
            let (keys, next) = list(prefix: prefix, after: cursor, now: now)
            return .success(.keys(keys, next: next))
        }
    }

    private var full: ServiceFailure {
        .insufficientStorage("the keystore is full (keystore.maxBytes = \(maxBytes))")
    }

    static func notAnInteger(_ key: String) -> ServiceFailure { .badRequest("the value of \(key) is not an integer") }
    static func overflow(_ key: String) -> ServiceFailure { .badRequest("incrementing \(key) would overflow a 64-bit integer") }
}
