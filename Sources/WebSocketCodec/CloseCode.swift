/// RFC 6455 section 7.4 close codes.
public struct CloseCode: RawRepresentable, Equatable, Hashable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let normal = CloseCode(rawValue: 1000)
    public static let goingAway = CloseCode(rawValue: 1001)
    public static let protocolError = CloseCode(rawValue: 1002)
    public static let unsupportedData = CloseCode(rawValue: 1003)
    public static let invalidPayload = CloseCode(rawValue: 1007)
    public static let policyViolation = CloseCode(rawValue: 1008)
    public static let messageTooBig = CloseCode(rawValue: 1009)
    public static let internalError = CloseCode(rawValue: 1011)

    /// Whether a peer may send this code in a close frame (1005, 1006, 1015 and unassigned ranges may not).
    public var isValidOnWire: Bool {
        switch rawValue {
        case 1000...1003, 1007...1011: return true
        case 3000...4999: return true
        default: return false
        }
    }
}

public enum ClosePayload {
    /// Validates a received close frame payload. Returns the code to echo (nil for an empty payload)
    /// or the failure to close with.
    public static func validate(_ payload: UnsafeRawBufferPointer) -> Result<CloseCode?, CloseFailure> {
        if payload.isEmpty { return .success(nil) }
        if payload.count == 1 { return .failure(CloseFailure(code: .protocolError, reason: "close payload of one byte")) }
        let code = CloseCode(rawValue: UInt16(payload[0]) << 8 | UInt16(payload[1]))
        guard code.isValidOnWire else {
            return .failure(CloseFailure(code: .protocolError, reason: "invalid close code \(code.rawValue)"))
        }
        var validator = UTF8Validator()
        guard validator.feed(UnsafeRawBufferPointer(rebasing: payload[2...])), validator.isComplete else {
            return .failure(CloseFailure(code: .invalidPayload, reason: "close reason is not UTF-8"))
        }
        return .success(code)
    }
}

public struct CloseFailure: Error, Equatable {
    public var code: CloseCode
    public var reason: String
    public init(code: CloseCode, reason: String) {
        self.code = code
        self.reason = reason
    }
}
