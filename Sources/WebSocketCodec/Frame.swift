/// RFC 6455 frame opcodes.
public enum Opcode: UInt8 {
    case continuation = 0x0
    case text = 0x1
    case binary = 0x2
    case close = 0x8
    case ping = 0x9
    case pong = 0xA

    public var isControl: Bool { rawValue & 0x8 != 0 }
}

/// A decoded frame header. The payload follows `headerLength` bytes after the frame start.
public struct FrameHeader: Equatable {
    public var fin: Bool
    public var rsv: UInt8
    public var opcode: Opcode
    /// The masking key as it appears on the wire, or nil for an unmasked frame.
    public var maskKey: UInt32?
    public var payloadLength: Int
    public var headerLength: Int

    public init(fin: Bool, rsv: UInt8, opcode: Opcode, maskKey: UInt32?, payloadLength: Int, headerLength: Int) {
        self.fin = fin
        self.rsv = rsv
        self.opcode = opcode
        self.maskKey = maskKey
        self.payloadLength = payloadLength
        self.headerLength = headerLength
    }

    public var frameLength: Int { headerLength + payloadLength }
}

public enum FrameParseResult: Equatable {
    /// Not enough bytes for the header yet.
    case needMore
    case header(FrameHeader)
    /// The frame can never be valid: fail the connection with this close code.
    case failure(CloseCode, String)
}

/// Which side of the connection we are; a server requires masked frames, a client forbids them.
public enum Role {
    case server
    case client
}

public enum FrameDecoder {
    /// Parses and validates a frame header at the start of `bytes`.
    /// `maxPayload` bounds a single frame (a larger one fails with 1009 before its payload is buffered).
    public static func parseHeader(_ bytes: UnsafeRawBufferPointer, role: Role, allowedRSV: UInt8 = 0, maxPayload: Int) -> FrameParseResult {
        guard bytes.count >= 2 else { return .needMore }
        let b0 = bytes[0]
        let b1 = bytes[1]
        let fin = b0 & 0x80 != 0
        let rsv = (b0 >> 4) & 0x7
        guard let opcode = Opcode(rawValue: b0 & 0x0F) else {
            return .failure(.protocolError, "reserved opcode \(b0 & 0x0F)")
        }
        if rsv & ~allowedRSV != 0 {
            return .failure(.protocolError, "reserved bits set")
        }
        let masked = b1 & 0x80 != 0
        switch role {
        case .server where !masked: return .failure(.protocolError, "client frame not masked")
        case .client where masked: return .failure(.protocolError, "server frame masked")
        default: break
        }
        var length = Int(b1 & 0x7F)
        var offset = 2
        if opcode.isControl {
            if !fin { return .failure(.protocolError, "fragmented control frame") }
            if length > 125 { return .failure(.protocolError, "control frame payload over 125 bytes") }
        }
        if length == 126 {
            guard bytes.count >= 4 else { return .needMore }
            length = Int(bytes[2]) << 8 | Int(bytes[3])
            if length < 126 { return .failure(.protocolError, "non-minimal length encoding") }
            offset = 4
        } else if length == 127 {
            guard bytes.count >= 10 else { return .needMore }
            var value: UInt64 = 0
            for i in 2..<10 { value = value << 8 | UInt64(bytes[i]) }
            if value & (1 << 63) != 0 { return .failure(.protocolError, "64-bit length with the high bit set") }
            if value < 65536 { return .failure(.protocolError, "non-minimal length encoding") }
            if value > UInt64(maxPayload) { return .failure(.messageTooBig, "frame of \(value) bytes over the limit") }
            length = Int(value)
            offset = 10
        }
        if length > maxPayload { return .failure(.messageTooBig, "frame of \(length) bytes over the limit") }
        var maskKey: UInt32?
        if masked {
            guard bytes.count >= offset + 4 else { return .needMore }
            maskKey = bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
            offset += 4
        }
        return .header(FrameHeader(fin: fin, rsv: rsv, opcode: opcode, maskKey: maskKey, payloadLength: length, headerLength: offset))
    }
}

public enum FrameEncoder {
    /// The header size for a payload of `length` bytes.
    @inline(__always)
    public static func headerLength(payloadLength length: Int, masked: Bool = false) -> Int {
        let base = length < 126 ? 2 : (length <= 0xFFFF ? 4 : 10)
        return masked ? base + 4 : base
    }

    /// Writes a frame header at `p` (which must have `headerLength(...)` bytes) and returns its size.
    @inline(__always)
    @discardableResult
    public static func writeHeader(to p: UnsafeMutableRawPointer, opcode: Opcode, fin: Bool = true, rsv1: Bool = false, payloadLength length: Int, maskKey: UInt32? = nil) -> Int {
        p.storeBytes(of: (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode.rawValue, as: UInt8.self)
        let maskBit: UInt8 = maskKey == nil ? 0 : 0x80
        var offset: Int
        if length < 126 {
            p.storeBytes(of: maskBit | UInt8(length), toByteOffset: 1, as: UInt8.self)
            offset = 2
        } else if length <= 0xFFFF {
            p.storeBytes(of: maskBit | 126, toByteOffset: 1, as: UInt8.self)
            p.storeBytes(of: UInt16(length).bigEndian, toByteOffset: 2, as: UInt16.self)
            offset = 4
        } else {
            p.storeBytes(of: maskBit | 127, toByteOffset: 1, as: UInt8.self)
            p.storeBytes(of: UInt64(length).bigEndian, toByteOffset: 2, as: UInt64.self)
            offset = 10
        }
        if let key = maskKey {
            p.storeBytes(of: key, toByteOffset: offset, as: UInt32.self)
            offset += 4
        }
        return offset
    }

    /// Writes a whole unfragmented frame at `p` (which must have `headerLength(...)` plus the payload's
    /// bytes): the header, then the payload, masked in place with `maskKey` when one is given (the
    /// client role). Returns the frame's size.
    @inline(__always)
    @discardableResult
    public static func writeFrame(to p: UnsafeMutableRawPointer, opcode: Opcode, fin: Bool = true, rsv1: Bool = false,
                                  payload: UnsafeRawBufferPointer, maskKey: UInt32? = nil) -> Int {
        let h = writeHeader(to: p, opcode: opcode, fin: fin, rsv1: rsv1, payloadLength: payload.count, maskKey: maskKey)
        if payload.count > 0 {
            (p + h).copyMemory(from: payload.baseAddress!, byteCount: payload.count)
            if let maskKey { Masking.apply(maskKey, to: UnsafeMutableRawBufferPointer(start: p + h, count: payload.count)) }
        }
        return h + payload.count
    }

    /// A complete unmasked frame as bytes; for control frames and tests, not the data path.
    public static func frame(_ opcode: Opcode, payload: [UInt8], fin: Bool = true) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: headerLength(payloadLength: payload.count) + payload.count)
        _ = out.withUnsafeMutableBytes { raw in
            payload.withUnsafeBytes { writeFrame(to: raw.baseAddress!, opcode: opcode, fin: fin, payload: $0) }
        }
        return out
    }

    /// A close frame payload: the code in network order followed by the UTF-8 reason.
    public static func closePayload(_ code: CloseCode, reason: String = "") -> [UInt8] {
        var payload: [UInt8] = [UInt8(code.rawValue >> 8), UInt8(code.rawValue & 0xFF)]
        payload.append(contentsOf: reason.utf8.prefix(123))
        return payload
    }
}
