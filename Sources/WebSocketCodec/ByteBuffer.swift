import Glibc

/// A growable byte queue over one malloc'd block: bytes are appended at the write end and
/// consumed from the read end. Idle connections hold none (`release()` frees the block).
public struct ByteBuffer: ~Copyable {
    public private(set) var base: UnsafeMutableRawPointer?
    public private(set) var capacity = 0
    public private(set) var readIndex = 0
    public private(set) var writeIndex = 0

    public init() {}

    deinit { free(base) }

    public var count: Int { writeIndex - readIndex }
    public var isEmpty: Bool { writeIndex == readIndex }

    /// The unread bytes.
    public var readable: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: base.map { $0 + readIndex }, count: count)
    }

    /// Makes room for `n` more bytes at the write end and returns where they go.
    public mutating func reserveWritable(_ n: Int) -> UnsafeMutableRawPointer {
        if base == nil || capacity - writeIndex < n {
            if readIndex > 0 && capacity - count >= n && count <= capacity / 2 {
                compact()
            } else {
                grow(to: Swift.max(count + n, capacity * 2, 1024))
            }
        }
        return base! + writeIndex
    }

    public mutating func didWrite(_ n: Int) { writeIndex += n }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        let p = reserveWritable(bytes.count)
        p.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        writeIndex += bytes.count
    }

    public mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    public mutating func consume(_ n: Int) {
        readIndex += n
        if readIndex == writeIndex {
            readIndex = 0
            writeIndex = 0
        }
    }

    /// Drops the contents, and the block too when it is larger than `keep` bytes.
    public mutating func clear(keepingUpTo keep: Int = 0) {
        readIndex = 0
        writeIndex = 0
        if capacity > keep { release() }
    }

    public mutating func release() {
        free(base)
        base = nil
        capacity = 0
        readIndex = 0
        writeIndex = 0
    }

    private mutating func compact() {
        let n = count
        if n > 0 { memmove(base!, base! + readIndex, n) }
        readIndex = 0
        writeIndex = n
    }

    private mutating func grow(to newCapacity: Int) {
        compact()
        guard let p = realloc(base, newCapacity) else { fatalError("out of memory growing a buffer to \(newCapacity) bytes") }
        base = p
        capacity = newCapacity
    }
}
