/// Standard base64 (RFC 4648 section 4) with padding; decoding is strict.
public enum Base64 {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let reverse: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = UInt8(i) }
        return table
    }()

    public static func encodedLength(_ count: Int) -> Int { (count + 2) / 3 * 4 }

    /// Encodes `input` into `out`, which must hold `encodedLength(input.count)` bytes.
    public static func encode(_ input: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer) {
        alphabet.withUnsafeBufferPointer { table in
            var o = 0
            var i = 0
            let n = input.count
            while i + 3 <= n {
                let v = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8 | UInt32(input[i + 2])
                out.storeBytes(of: table[Int(v >> 18)], toByteOffset: o, as: UInt8.self)
                out.storeBytes(of: table[Int(v >> 12 & 63)], toByteOffset: o + 1, as: UInt8.self)
                out.storeBytes(of: table[Int(v >> 6 & 63)], toByteOffset: o + 2, as: UInt8.self)
                out.storeBytes(of: table[Int(v & 63)], toByteOffset: o + 3, as: UInt8.self)
                i += 3
                o += 4
            }
            let rest = n - i
            if rest > 0 {
                let v = UInt32(input[i]) << 16 | (rest == 2 ? UInt32(input[i + 1]) << 8 : 0)
                out.storeBytes(of: table[Int(v >> 18)], toByteOffset: o, as: UInt8.self)
                out.storeBytes(of: table[Int(v >> 12 & 63)], toByteOffset: o + 1, as: UInt8.self)
                out.storeBytes(of: rest == 2 ? table[Int(v >> 6 & 63)] : UInt8(ascii: "="), toByteOffset: o + 2, as: UInt8.self)
                out.storeBytes(of: UInt8(ascii: "="), toByteOffset: o + 3, as: UInt8.self)
            }
        }
    }

    public static func encode(_ input: UnsafeRawBufferPointer) -> String {
        String(unsafeUninitializedCapacity: encodedLength(input.count)) { buffer in
            encode(input, into: UnsafeMutableRawPointer(buffer.baseAddress!))
            return encodedLength(input.count)
        }
    }

    public static func encode(_ bytes: [UInt8]) -> String {
        bytes.withUnsafeBytes { encode($0) }
    }

    /// Most bytes `input.count` characters decode to (an upper bound: padding makes it less).
    public static func decodedCapacity(_ count: Int) -> Int { count / 4 * 3 }

    /// Decodes strictly: length a multiple of four, padding only at the end, unused bits zero, no
    /// other characters. Writes into `out` (which must hold `decodedCapacity(input.count)` bytes)
    /// and returns how many bytes it wrote, or nil for input that is not canonical base64.
    public static func decode(_ input: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer) -> Int? {
        let n = input.count
        guard n > 0 else { return 0 }
        guard n % 4 == 0, let src = input.baseAddress else { return nil }
        return reverse.withUnsafeBufferPointer { table -> Int? in
            @inline(__always) func digit(_ offset: Int) -> UInt32 {
                UInt32(table[Int(src.load(fromByteOffset: offset, as: UInt8.self))])
            }
            var i = 0
            var o = 0
            // Every group but the last has no padding: four lookups, one check (0xFF marks a
            // character outside the alphabet, and any such bit survives the OR).
            while i + 4 < n {
                let a = digit(i), b = digit(i + 1), c = digit(i + 2), d = digit(i + 3)
                guard (a | b | c | d) & 0x80 == 0 else { return nil }
                let v = a << 18 | b << 12 | c << 6 | d
                out.storeBytes(of: UInt8(truncatingIfNeeded: v >> 16), toByteOffset: o, as: UInt8.self)
                out.storeBytes(of: UInt8(truncatingIfNeeded: v >> 8), toByteOffset: o + 1, as: UInt8.self)
                out.storeBytes(of: UInt8(truncatingIfNeeded: v), toByteOffset: o + 2, as: UInt8.self)
                i += 4
                o += 3
            }
            let pad = UInt8(ascii: "=")
            let third = src.load(fromByteOffset: i + 2, as: UInt8.self), fourth = src.load(fromByteOffset: i + 3, as: UInt8.self)
            let padding = fourth == pad ? (third == pad ? 2 : 1) : 0
            let a = digit(i), b = digit(i + 1)
            let c = padding == 2 ? 0 : digit(i + 2)
            let d = padding >= 1 ? 0 : digit(i + 3)
            guard (a | b | c | d) & 0x80 == 0 else { return nil }
            let v = a << 18 | b << 12 | c << 6 | d
            // Canonical only (RFC 4648 3.5): the bits a padded group does not use must be zero.
            if padding == 2 && v & 0xFFFF != 0 || padding == 1 && v & 0xFF != 0 { return nil }
            out.storeBytes(of: UInt8(truncatingIfNeeded: v >> 16), toByteOffset: o, as: UInt8.self)
            if padding < 2 { out.storeBytes(of: UInt8(truncatingIfNeeded: v >> 8), toByteOffset: o + 1, as: UInt8.self) }
            if padding < 1 { out.storeBytes(of: UInt8(truncatingIfNeeded: v), toByteOffset: o + 2, as: UInt8.self) }
            return o + 3 - padding
        }
    }

    /// Decodes strictly, as `decode(_:into:)`; nil for input that is not canonical base64.
    public static func decode(_ input: UnsafeRawBufferPointer) -> [UInt8]? {
        guard input.count >= 4 else { return input.isEmpty ? [] : nil }
        var valid = true
        let bytes = [UInt8](unsafeUninitializedCapacity: decodedCapacity(input.count)) { buffer, count in
            let written = decode(input, into: UnsafeMutableRawPointer(buffer.baseAddress!))
            valid = written != nil
            count = written ?? 0
        }
        return valid ? bytes : nil
    }

    public static func decode(_ string: String) -> [UInt8]? {
        var s = string
        return s.withUTF8 { decode(UnsafeRawBufferPointer($0)) }
    }
}
