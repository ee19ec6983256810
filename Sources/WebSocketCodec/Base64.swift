import CBase64

/// Standard base64 (RFC 4648 section 4) with padding; decoding is strict. The loops are CBase64's,
/// which uses SSSE3 where the CPU has it.
public enum Base64 {
    public static func encodedLength(_ count: Int) -> Int { (count + 2) / 3 * 4 }

    /// Encodes `input` into `out`, which must hold `encodedLength(input.count)` bytes.
    public static func encode(_ input: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer) {
        _ = cb64_encode(input.baseAddress, input.count, out)
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
        let written = cb64_decode(input.baseAddress, input.count, out)
        return written < 0 ? nil : written
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
