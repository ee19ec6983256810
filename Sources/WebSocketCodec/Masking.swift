public enum Masking {
    /// A key for one client frame. RFC 6455 5.3 wants it unpredictable, so that a script cannot
    /// choose the bytes on the wire to confuse proxies; hence the system generator.
    public static func randomKey() -> UInt32 {
        var generator = SystemRandomNumberGenerator()
        return generator.next()
    }

    /// XORs `buffer` in place with the 4-byte mask `key`, starting at mask phase 0.
    /// Works eight bytes at a time; the key is the raw wire value as loaded by `loadUnaligned`.
    @inline(__always)
    public static func apply(_ key: UInt32, to buffer: UnsafeMutableRawBufferPointer) {
        guard var p = buffer.baseAddress else { return }
        var remaining = buffer.count
        let key64 = UInt64(key) | UInt64(key) << 32
        while remaining >= 8 {
            p.storeBytes(of: p.loadUnaligned(as: UInt64.self) ^ key64, as: UInt64.self)
            p += 8
            remaining -= 8
        }
        if remaining >= 4 {
            p.storeBytes(of: p.loadUnaligned(as: UInt32.self) ^ key, as: UInt32.self)
            p += 4
            remaining -= 4
        }
        var k = key
        while remaining > 0 {
            p.storeBytes(of: p.load(as: UInt8.self) ^ UInt8(truncatingIfNeeded: k), as: UInt8.self)
            k >>= 8
            p += 1
            remaining -= 1
        }
    }

    /// The key that continues the mask `offset` bytes into a payload, for unmasking a payload in pieces.
    @inline(__always)
    public static func key(_ key: UInt32, advancedBy offset: Int) -> UInt32 {
        let shift = UInt32(offset & 3) * 8
        return shift == 0 ? key : key >> shift | key << (32 - shift)
    }
}
