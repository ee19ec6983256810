/// Why an HTTP/1.1 message could not be read: the response reader's and the request-body
/// reader's failures, one enum so a chunked body fails the same way on both sides.
public enum HTTPFramingError: Error, Equatable, CustomStringConvertible {
    /// The head (with any 1xx heads before it) is longer than the limit.
    case headTooLarge
    /// The head does not parse; the parser's reason.
    case malformedHead(String)
    /// The body is, or is announced to be, longer than the limit.
    case bodyTooLarge
    /// Content-Length is not digits, or its values differ (RFC 9112 6.3 item 5).
    case badContentLength
    /// Transfer-Encoding that frames nothing reliably: an empty list, chunked twice, chunked not
    /// last in a request, or any Transfer-Encoding in HTTP/1.0 (RFC 9112 6.1).
    case badTransferEncoding(String)
    /// A request coded with something besides chunked, which a server does not decode (RFC 9112 6.1: 501).
    case unsupportedTransferEncoding
    /// A request with both Content-Length and Transfer-Encoding: the two framings a front proxy and
    /// this server could each pick one of, which is how requests are smuggled (RFC 9112 6.3 item 3).
    case contentLengthWithTransferEncoding
    /// The chunked coding is broken; where.
    case malformedChunk(String)
    /// The peer closed before the message ended.
    case truncated
    /// The peer closed before sending a byte: on a reused connection, the race with the server's
    /// idle timeout, after which an idempotent request may be sent again on a new connection.
    case closedBeforeResponse

    public var description: String {
        switch self {
        case .headTooLarge: return "head too large"
        case .malformedHead(let reason): return "malformed head: \(reason)"
        case .bodyTooLarge: return "body too large"
        case .badContentLength: return "invalid Content-Length"
        case .badTransferEncoding(let reason): return "invalid Transfer-Encoding: \(reason)"
        case .unsupportedTransferEncoding: return "unsupported transfer coding"
        case .contentLengthWithTransferEncoding: return "both Content-Length and Transfer-Encoding"
        case .malformedChunk(let reason): return "malformed chunked body: \(reason)"
        case .truncated: return "connection closed before the end of the message"
        case .closedBeforeResponse: return "connection closed before any response"
        }
    }

    /// The status a server answers a request that failed this way with (then closes the connection).
    public var responseStatus: Int {
        switch self {
        case .headTooLarge: return 431
        case .bodyTooLarge: return 413
        case .unsupportedTransferEncoding: return 501
        default: return 400
        }
    }
}

/// What the Content-Length fields of a head say.
enum ContentLengthField: Equatable {
    case absent
    case length(Int)
    /// Digits that do not fit an Int: longer than any limit.
    case overflow
    case invalid
}

/// Content-Length from the values of every field of that name. Several fields, or a comma list,
/// are accepted when every member has the same decimal value ("5, 005" included), since
/// intermediaries merge duplicate fields that way (RFC 9112 6.3 item 5); a member that is not
/// 1*DIGIT, or one that differs, makes the framing invalid.
func contentLength<Value: BidirectionalCollection>(_ values: [Value]) -> ContentLengthField where Value.Element == UInt8 {
    guard !values.isEmpty else { return .absent }
    var first: Value.SubSequence?
    var valid = true
    for value in values {
        var members = 0
        forEachMember(value, skippingEmpty: false) { member in
            members += 1
            guard valid, !member.isEmpty, member.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { valid = false; return }
            let significant = member.drop { $0 == 0x30 }
            if let first {
                if !first.elementsEqual(significant) { valid = false }
            } else {
                first = significant
            }
        }
        if members == 0 { valid = false }
    }
    guard valid, let first else { return .invalid }
    var length = 0
    for digit in first {
        let (shifted, o1) = length.multipliedReportingOverflow(by: 10)
        let (sum, o2) = shifted.addingReportingOverflow(Int(digit - 0x30))
        if o1 || o2 { return .overflow }
        length = sum
    }
    return .length(length)
}

/// The transfer codings of a head, in the order they were applied.
struct TransferCodings {
    /// How many codings are listed, over every Transfer-Encoding field.
    var count = 0
    var chunkedCount = 0
    var lastIsChunked = false
    /// A member that is not a coding name (a token, with parameters after ";").
    var malformed = false

    /// From the values of every Transfer-Encoding field. Empty members are skipped, as in any
    /// list (RFC 9110 5.6.1); coding names are case-insensitive.
    init<Value: BidirectionalCollection>(_ values: [Value]) where Value.Element == UInt8 {
        for value in values {
            forEachMember(value, skippingEmpty: true) { member in
                let name = trimmingBlanks(member.prefix { $0 != UInt8(ascii: ";") })
                count += 1
                guard !name.isEmpty, name.allSatisfy(isTokenByte) else {
                    malformed = true
                    lastIsChunked = false
                    return
                }
                lastIsChunked = name.count == 7 && zip(name, "chunked".utf8).allSatisfy { asciiLower($0) == $1 }
                if lastIsChunked { chunkedCount += 1 }
            }
        }
    }

    /// Why these codings frame nothing whichever side reads them, or nil.
    var problem: String? {
        if malformed { return "bad coding name" }
        if count == 0 { return "no coding listed" }
        if chunkedCount > 1 { return "chunked applied twice" }
        return nil
    }
}

/// Calls `body` with each member of a comma-separated value, without surrounding spaces and tabs.
func forEachMember<Value: BidirectionalCollection>(_ value: Value, skippingEmpty: Bool, _ body: (Value.SubSequence) -> Void)
where Value.Element == UInt8 {
    var start = value.startIndex
    while true {
        let stop = value[start...].firstIndex(of: UInt8(ascii: ",")) ?? value.endIndex
        let member = trimmingBlanks(value[start..<stop])
        if !(skippingEmpty && member.isEmpty) { body(member) }
        guard stop < value.endIndex else { return }
        start = value.index(after: stop)
    }
}

private func trimmingBlanks<Bytes: BidirectionalCollection>(_ bytes: Bytes) -> Bytes.SubSequence where Bytes.Element == UInt8 {
    let isBlank = { (b: UInt8) in b == 0x20 || b == 0x09 }
    let front = bytes.drop(while: isBlank)
    guard let last = front.lastIndex(where: { !isBlank($0) }) else { return front[front.startIndex..<front.startIndex] }
    return front[...last]
}
