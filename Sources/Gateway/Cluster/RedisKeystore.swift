import Redis

/// The `Keystore` service on the cluster's Redis: the same calls and answers as the embedded
/// store, one Redis command each (`list` may take a few SCANs), every key under
/// "{prefix}:ks:". Values keep their Lua type: an integer is stored as its decimal digits (so
/// INCRBY works on it and redis-cli shows it as it is), a string behind "s:", a float behind "n:".
/// A value some other client wrote is read back as the string it is.
struct RedisKeystore {
    let cluster: ClusterState
    let link: RedisLink

    /// `incr` of a string or float holding an integer converts it first, atomically; anything else
    /// is INCRBY's own business (its "not an integer" and "overflow" errors).
    private static let increment = """
        local v = redis.call('GET', KEYS[1])
        if v then
          local tag, body = string.sub(v, 1, 2), string.sub(v, 3)
          if tag == 's:' then
            if not string.match(body, '^[+-]?%d+$') then return redis.error_reply('NOTINT') end
            if string.sub(body, 1, 1) == '+' then body = string.sub(body, 2) end
            redis.call('SET', KEYS[1], body, 'KEEPTTL')
          elseif tag == 'n:' then
            local x = tonumber(body)
            if not x or x ~= math.floor(x) or math.abs(x) >= 2^53 then return redis.error_reply('NOTINT') end
            redis.call('SET', KEYS[1], string.format('%d', x), 'KEEPTTL')
          end
        end
        return redis.call('INCRBY', KEYS[1], ARGV[1])
        """

    /// SCANs stop once a page has this many keys (a SCAN may return somewhat more than COUNT).
    private static let pageTarget = Keystore.pageSize - 1000

    func perform(_ operation: KeystoreOperation, _ done: @escaping (Result<KeystoreAnswer, ServiceFailure>) -> Void) {
        switch operation {
        case .set(let key, let value, let ttlMs, let onlyIfAbsent):
            var args: [[UInt8]] = [bytes("SET"), storeKey(key), RedisKeystore.encode(value)]
            if let ttlMs { args += [bytes("PX"), bytes(String(ttlMs))] }
            if onlyIfAbsent { args.append(bytes("NX")) }
            run("keystore_set", args, done) { reply in
                switch reply {
                case .status: return .success(.stored(true))
                case .null: return .success(.stored(false))
                default: return nil
                }
            }
        case .get(let key):
            run("keystore_get", [bytes("GET"), storeKey(key)], done) { reply in RedisKeystore.decode(reply).map { .success(.value($0)) } }
        case .mget(let keys):
            run("keystore_mget", [bytes("MGET")] + keys.map(storeKey), done) { reply in
                guard let items = reply.elements, items.count == keys.count else { return nil }
                return .success(.values(items.map { RedisKeystore.decode($0) ?? nil }))
            }
        case .delete(let key):
            run("keystore_delete", [bytes("DEL"), storeKey(key)], done) { reply in reply.integer.map { .success(.deleted($0 > 0)) } }
        case .incr(let key, let by):
            run("keystore_incr", [bytes("EVAL"), bytes(RedisKeystore.increment), bytes("1"), storeKey(key), bytes(String(by))], done, key: key) { reply in
                reply.integer.map { .success(.integer(Int64($0))) }
            }
        case .list(let prefix, let cursor):
            scan(prefix: prefix, cursor: cursor ?? "0", found: [], done)
        }
    }

    private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    private func storeKey(_ key: String) -> [UInt8] { cluster.key("ks", key) }

    /// Sends one command and maps its reply; an error reply or a reply of the wrong shape is a
    /// failure of its own.
    private func run(_ op: String, _ args: [[UInt8]], _ done: @escaping (Result<KeystoreAnswer, ServiceFailure>) -> Void, key: String = "",
                     _ map: @escaping (RedisReply) -> Result<KeystoreAnswer, ServiceFailure>?) {
        link.request(op, args) { result in
            switch result {
            case .failure(let failure): done(.failure(failure))
            case .success(.error(let why)): done(.failure(RedisKeystore.failure(why, key: key)))
            case .success(let reply): done(map(reply) ?? .failure(.badGateway("Redis answered \(reply)")))
            }
        }
    }

    static func failure(_ why: String, key: String) -> ServiceFailure {
        if why.hasPrefix("OOM") { return .insufficientStorage("Redis is full (maxmemory): \(why)") }
        if why.contains("NOTINT") || why.contains("not an integer") { return Keystore.notAnInteger(key) }
        if why.contains("overflow") { return Keystore.overflow(key) }
        return .badGateway("Redis refused the command: \(why)")
    }

    /// SCANs until a page is full or the keyspace is done; the cursor handed to scripts is
    /// SCAN's own (keys come in no particular order).
    private func scan(prefix: String, cursor: String, found: [String], _ done: @escaping (Result<KeystoreAnswer, ServiceFailure>) -> Void) {
        let head = cluster.key("ks", "")
        let pattern = head + RedisKeystore.globEscaped(prefix) + [UInt8(ascii: "*")]
        link.request("keystore_list", [bytes("SCAN"), bytes(cursor), bytes("MATCH"), pattern, bytes("COUNT"), bytes("500")]) { result in
            switch result {
            case .failure(let failure):
                done(.failure(failure))
            case .success(.array(let parts)) where parts.count == 2:
                guard let next = parts[0].text, let keys = parts[1].elements else { return done(.failure(.badGateway("Redis answered SCAN with \(parts)"))) }
                let page = found + keys.compactMap { key -> String? in
                    guard case .string(let raw) = key, raw.count >= head.count else { return nil }
                    return String(decoding: raw[head.count...], as: UTF8.self)
                }
                if next == "0" { return done(.success(.keys(page, next: nil))) }
                if page.count >= RedisKeystore.pageTarget { return done(.success(.keys(page, next: next))) }
                scan(prefix: prefix, cursor: next, found: page, done)
            case .success(.error(let why)):
                done(.failure(.badGateway("Redis refused SCAN: \(why)")))
            case .success(let other):
                done(.failure(.badGateway("Redis answered SCAN with \(other)")))
            }
        }
    }

    static func globEscaped(_ text: String) -> [UInt8] {
        var out: [UInt8] = []
        for byte in text.utf8 {
            if byte == UInt8(ascii: "*") || byte == UInt8(ascii: "?") || byte == UInt8(ascii: "[") || byte == UInt8(ascii: "]") || byte == UInt8(ascii: "\\") {
                out.append(UInt8(ascii: "\\"))
            }
            out.append(byte)
        }
        return out
    }

    static func encode(_ value: Keystore.Value) -> [UInt8] {
        switch value {
        case .integer(let n): return Array(String(n).utf8)
        case .string(let text): return Array("s:".utf8) + Array(text.utf8)
        case .number(let x): return Array("n:\(x)".utf8)
        }
    }

    /// A stored value as scripts get it; nil (not `.some(nil)`) for a reply that is no value.
    static func decode(_ reply: RedisReply) -> Keystore.Value?? {
        switch reply {
        case .null: return .some(nil)
        case .string(let raw):
            if raw.starts(with: Array("s:".utf8)) { return .string(String(decoding: raw.dropFirst(2), as: UTF8.self)) }
            let text = String(decoding: raw, as: UTF8.self)
            if raw.starts(with: Array("n:".utf8)), let x = Double(text.dropFirst(2)) { return .number(x) }
            if let n = Int64(text) { return .integer(n) }
            return .string(text)
        default:
            return nil
        }
    }
}
