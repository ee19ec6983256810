import CHiredis

/// One RESP reply, copied out of hiredis's reply object (which hiredis frees when the callback
/// returns).
public enum RedisReply: Equatable {
    case string([UInt8])
    case status(String)
    case error(String)
    case integer(Int)
    case null
    case array([RedisReply])

    init(_ reply: UnsafePointer<redisReply>) {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            self = .string(r.len == 0 ? [] : Array(UnsafeRawBufferPointer(start: r.str, count: r.len)))
        case REDIS_REPLY_STATUS:
            self = .status(RedisReply.text(r))
        case REDIS_REPLY_ERROR:
            self = .error(RedisReply.text(r))
        case REDIS_REPLY_INTEGER:
            self = .integer(Int(r.integer))
        case REDIS_REPLY_ARRAY:
            self = .array((0..<r.elements).map { RedisReply(UnsafePointer(r.element[$0]!)) })
        default:
            self = .null
        }
    }

    private static func text(_ r: redisReply) -> String {
        String(decoding: UnsafeRawBufferPointer(start: r.str, count: r.len), as: UTF8.self)
    }

    /// A bulk string as text (lossy for bytes that are not UTF-8).
    public var text: String? {
        switch self {
        case .string(let bytes): return String(decoding: bytes, as: UTF8.self)
        case .status(let s): return s
        default: return nil
        }
    }

    public var integer: Int? {
        if case .integer(let n) = self { return n }
        return nil
    }

    public var elements: [RedisReply]? {
        if case .array(let items) = self { return items }
        return nil
    }
}
