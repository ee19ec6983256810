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

    /// Decodes strictly: length a multiple of four, padding only at the end, unused bits zero, no other characters.
    public static func decode(_ input: UnsafeRawBufferPointer) -> [UInt8]? {
        let n = input.count
        if n == 0 { return [] }
        guard n % 4 == 0 else { return nil }
        var padding = 0
        if input[n - 1] == UInt8(ascii: "=") { padding += 1 }
        if input[n - 2] == UInt8(ascii: "=") { padding += 1 }
        var out = [UInt8]()
        out.reserveCapacity(n / 4 * 3 - padding)
        return reverse.withUnsafeBufferPointer { table -> [UInt8]? in
            var i = 0
            while i < n {
                let last = i + 4 == n
                var v: UInt32 = 0
                for j in 0..<4 {
                    let c = input[i + j]
                    if last && c == UInt8(ascii: "=") && j >= 4 - padding {
                        v <<= 6
                        continue
                    }
                    let d = table[Int(c)]
                    if d == 0xFF { return nil }
                    v = v << 6 | UInt32(d)
                }
                // Canonical only (RFC 4648 3.5): the bits a padded group does not use must be zero.
                if last && (padding == 2 && v >> 12 & 0xF != 0 || padding == 1 && v >> 6 & 0x3 != 0) { return nil }
                out.append(UInt8(v >> 16))
                if !(last && padding == 2) { out.append(UInt8(v >> 8 & 0xFF)) }
                if !(last && padding >= 1) { out.append(UInt8(v & 0xFF)) }
                i += 4
            }
            return out
        }
    }

    public static func decode(_ string: String) -> [UInt8]? {
        var s = string
        return s.withUTF8 { decode(UnsafeRawBufferPointer($0)) }
    }
}
