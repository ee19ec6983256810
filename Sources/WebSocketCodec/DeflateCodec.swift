import CZlib
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// RFC 7692 section 7.2 message compression on top of raw zlib streams.
//
// Sharing: with no context takeover in a direction every message starts from an empty window, so one
// `MessageDeflater` (and one `MessageInflater`) per event loop can serve all of the loop's connections,
// reset after each message. With context takeover each connection needs its own. A shared inflater
// must be given a whole message before another connection's message: feeding fragments of two
// messages interleaved would mix their streams. A shared deflater also needs a window no larger than
// any connection negotiated (`server_max_window_bits`); a shared inflater with a 15-bit window can read
// any peer.
//
// Memory (bytes of zlib allocations per stream, from `allocatedBytes`, zlib 1.2.13 on x86_64):
// a deflater allocates everything at init: 2^(windowBits+2) for its window and match chain,
// 2^(memLevel+9) for its hash table and symbol buffer, and a 5,952-byte state:
//   windowBits 15: memLevel 8 268,096, memLevel 4 145,216
//   windowBits 10: memLevel 8 141,120, memLevel 4  18,240
//   windowBits  9: memLevel 8 139,072, memLevel 4  16,192
// An inflater allocates a 7,160-byte state at init and its 2^windowBits window at the first output:
//   windowBits 15: 39,928   windowBits 10: 8,184   windowBits 9: 7,672
// (PerMessageDeflateTests.testMemoryPerStream prints the table.)

/// zlib allocation hooks that keep a byte count at `opaque` (a pointer to an `Int`). Each block carries
/// its size in a 16-byte prefix so that the free hook can subtract it and alignment stays 16.
private let countingAlloc: alloc_func = { opaque, items, size in
    let (bytes, overflow) = Int(items).multipliedReportingOverflow(by: Int(size))
    guard !overflow, let raw = malloc(bytes + 16) else { return nil }
    raw.storeBytes(of: bytes, as: Int.self)
    opaque!.assumingMemoryBound(to: Int.self).pointee += bytes
    return raw + 16
}

private let countingFree: free_func = { opaque, address in
    guard let address else { return }
    let raw = address - 16
    opaque!.assumingMemoryBound(to: Int.self).pointee -= raw.load(as: Int.self)
    free(raw)
}

/// A z_stream at a fixed address (zlib keeps a back pointer to it) with counting allocators.
private func makeStream(counter: UnsafeMutablePointer<Int>) -> UnsafeMutablePointer<z_stream> {
    let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
    stream.initialize(to: z_stream())
    stream.pointee.zalloc = countingAlloc
    stream.pointee.zfree = countingFree
    stream.pointee.opaque = UnsafeMutableRawPointer(counter)
    return stream
}

private func zlibMessage(_ stream: UnsafeMutablePointer<z_stream>, _ code: Int32) -> String {
    if let msg = stream.pointee.msg { return String(cString: msg) }
    return "zlib error \(code)"
}

private let syncFlushTail: [UInt8] = [0x00, 0x00, 0xFF, 0xFF]

/// zlib takes at most `uInt` bytes per call; larger buffers go in slices of this size.
private let maxSlice = 1 << 30

/// zlib writes into a temporary buffer of at most this size, copied to the caller's array: cheaper than
/// zero-filling the array ahead of zlib, and the cost follows the output, not the fragment count.
private let scratchSize = 32 << 10

private func withScratch<R>(_ size: Int, _ body: (UnsafeMutableBufferPointer<Bytef>) -> R) -> R {
    withUnsafeTemporaryAllocation(of: Bytef.self, capacity: max(size, 64), body)
}

/// Compresses whole messages as RFC 7692 section 7.2.1 payloads (raw DEFLATE, each message ending with
/// a sync flush whose trailing 00 00 FF FF is removed). One instance is one LZ77 context: confined to
/// one thread, and either owned by one connection (context takeover) or shared and reset after every
/// message (no context takeover).
public final class MessageDeflater {
    /// The negotiated window (8...15). 8 runs zlib with 9, which zlib requires for raw streams; its
    /// matches never reach back more than 2^9 - 262 = 250 bytes, so the output is valid for an 8-bit window.
    public let windowBits: Int
    public let memLevel: Int
    public let level: Int
    private let stream: UnsafeMutablePointer<z_stream>
    private let counter: UnsafeMutablePointer<Int>

    /// Bytes currently allocated by zlib for this stream.
    public var allocatedBytes: Int { counter.pointee }

    /// - Parameters:
    ///   - windowBits: the LZ77 window as negotiated, 8...15.
    ///   - memLevel: zlib's memLevel 1...9; 8 is zlib's default, 4 quarters the hash table and symbol
    ///     buffer (and the reset cost) for a small loss of ratio, a good fit for shared deflaters.
    ///   - level: 0...9, or -1 (Z_DEFAULT_COMPRESSION, which is 6).
    public init(windowBits: Int = 15, memLevel: Int = 8, level: Int = -1) {
        precondition((8...15).contains(windowBits), "windowBits must be 8...15")
        precondition((1...9).contains(memLevel), "memLevel must be 1...9")
        precondition((-1...9).contains(level), "level must be -1...9")
        self.windowBits = windowBits
        self.memLevel = memLevel
        self.level = level
        counter = .allocate(capacity: 1)
        counter.initialize(to: 0)
        stream = makeStream(counter: counter)
        let rc = deflateInit2_(stream, Int32(level), Z_DEFLATED, -Int32(max(windowBits, 9)), Int32(memLevel),
                               Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        precondition(rc == Z_OK, "deflateInit2 failed: \(zlibMessage(stream, rc))")
    }

    deinit {
        deflateEnd(stream)
        stream.deinitialize(count: 1)
        stream.deallocate()
        counter.deallocate()
    }

    /// Starts a fresh context: the next message is compressed without reference to earlier ones.
    /// Costs a clear of the hash table, 2^(memLevel+8) bytes (64 KiB at memLevel 8, 4 KiB at 4).
    public func reset() {
        deflateReset(stream)
    }

    /// Appends the compressed payload of one whole message to `out`. An empty message becomes the
    /// single byte 0x00 (RFC 7692 section 7.2.3.6). `resetAfter` resets the context afterwards, as no
    /// context takeover requires.
    public func compress(_ input: UnsafeRawBufferPointer, into out: inout [UInt8], resetAfter: Bool) {
        let start = out.count
        let strm = stream
        var next = input.baseAddress
        var remaining = input.count
        let bound = Int(deflateBound(strm, uLong(min(remaining, maxSlice)))) + 5
        if bound <= scratchSize && out.capacity < start + bound {
            out.reserveCapacity(max(start + bound, out.capacity * 2)) // doubling keeps repeated appends linear
        }
        withScratch(min(bound, scratchSize)) { scratch in
            repeat {
                let slice = min(remaining, maxSlice)
                remaining -= slice
                let flush = remaining == 0 ? Z_SYNC_FLUSH : Z_NO_FLUSH
                strm.pointee.next_in = next.map { UnsafeMutablePointer(mutating: $0.assumingMemoryBound(to: Bytef.self)) }
                strm.pointee.avail_in = uInt(slice)
                next = next.map { $0 + slice }
                while true {
                    strm.pointee.next_out = scratch.baseAddress
                    strm.pointee.avail_out = uInt(scratch.count)
                    let rc = deflate(strm, flush)
                    let full = strm.pointee.avail_out == 0
                    out.append(contentsOf: UnsafeRawBufferPointer(start: scratch.baseAddress, count: scratch.count - Int(strm.pointee.avail_out)))
                    // Z_BUF_ERROR: nothing left to do (e.g. an empty message right after a flush).
                    precondition(rc == Z_OK || rc == Z_BUF_ERROR, "deflate failed: \(zlibMessage(strm, rc))")
                    if rc == Z_BUF_ERROR || (!full && strm.pointee.avail_in == 0) { break }
                }
            } while remaining > 0
        }
        strm.pointee.next_in = nil
        strm.pointee.next_out = nil

        let produced = out.count - start
        if produced >= 4 {
            precondition(out[(out.count - 4)...].elementsEqual(syncFlushTail), "sync flush did not end with 00 00 FF FF")
            out.removeLast(4)
        }
        if out.count == start {
            out.append(0x00) // an empty stored block, also after a flush that had nothing to emit
        }
        if resetAfter { deflateReset(strm) }
    }

    /// Convenience for tests and control paths: the compressed payload of `message`.
    public func compress(_ message: [UInt8], resetAfter: Bool) -> [UInt8] {
        var out: [UInt8] = []
        message.withUnsafeBytes { compress($0, into: &out, resetAfter: resetAfter) }
        return out
    }
}

public enum InflateResult: Equatable {
    /// The input was consumed; after a final fragment, the message is complete in `out`.
    case ok
    /// The message decompresses to more than `limit` bytes (close with 1009).
    case tooBig
    /// Not a valid DEFLATE stream, or one that does not end on a block boundary (close with 1007).
    case corrupt(String)
}

/// Decompresses RFC 7692 section 7.2.2 payloads, fragment by fragment. One instance is one LZ77
/// context: owned by one connection when the peer uses context takeover, otherwise shareable (see the
/// note at the top of this file about whole messages) and reset after every message.
public final class MessageInflater {
    /// The negotiated window (8...15). 8 runs zlib with 9 so that a peer whose zlib rounded 8 up to 9
    /// still decodes.
    public let windowBits: Int
    private let stream: UnsafeMutablePointer<z_stream>
    private let counter: UnsafeMutablePointer<Int>
    /// Output bytes of the message in progress, for `limit`.
    private var messageBytes = 0
    /// The peer ended its DEFLATE stream (a block with BFINAL set) inside the message in progress.
    private var streamEnded = false

    /// Bytes currently allocated by zlib for this stream (the window is allocated at the first output).
    public var allocatedBytes: Int { counter.pointee }

    public init(windowBits: Int = 15) {
        precondition((8...15).contains(windowBits), "windowBits must be 8...15")
        self.windowBits = windowBits
        counter = .allocate(capacity: 1)
        counter.initialize(to: 0)
        stream = makeStream(counter: counter)
        let rc = inflateInit2_(stream, -Int32(max(windowBits, 9)), ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        precondition(rc == Z_OK, "inflateInit2 failed: \(zlibMessage(stream, rc))")
    }

    deinit {
        inflateEnd(stream)
        stream.deinitialize(count: 1)
        stream.deallocate()
        counter.deallocate()
    }

    /// Forgets the context and any message in progress. Cheap: the window stays allocated.
    public func reset() {
        inflateReset(stream)
        messageBytes = 0
        streamEnded = false
    }

    /// Feeds one fragment's payload of a compressed message and appends what it decompresses to `out`.
    ///
    /// - Parameters:
    ///   - limit: the most bytes the whole message (all its fragments) may decompress to. zlib writes
    ///     into a 32 KiB scratch buffer and is given at most one byte more than the limit allows, so
    ///     `.tooBig` comes as soon as the message exceeds it, and the message never takes more than
    ///     `limit` bytes of `out` (whose capacity grows by doubling, capped at that).
    ///   - final: this is the message's last fragment; the 00 00 FF FF tail is fed after it and the
    ///     stream must then stand at a block boundary.
    ///   - resetAfter: with `final`, reset the context after the message (the peer uses no context
    ///     takeover). Ignored on other fragments.
    /// - Returns: `.ok`, or `.tooBig` / `.corrupt`, after which the inflater has been reset (ready for
    ///   another connection or message) and `out` is back to its length on entry.
    public func inflate(_ input: UnsafeRawBufferPointer, into out: inout [UInt8], limit: Int, final: Bool, resetAfter: Bool) -> InflateResult {
        precondition(limit >= 0, "limit must not be negative")
        let entryCount = out.count
        var result = InflateResult.ok
        if streamEnded {
            if !input.isEmpty { result = .corrupt("data after the final deflate block") }
        } else {
            result = feed(input, into: &out, limit: limit, tail: false)
        }
        if result == .ok && final {
            if !streamEnded {
                result = syncFlushTail.withUnsafeBytes { feed($0, into: &out, limit: limit, tail: true) }
                if result == .ok && !streamEnded && stream.pointee.data_type & 128 == 0 {
                    result = .corrupt("message does not end on a deflate block boundary")
                }
            }
            if result == .ok {
                if resetAfter {
                    reset()
                } else {
                    if streamEnded { restartKeepingWindow() }
                    messageBytes = 0
                    streamEnded = false
                }
            }
        }
        if result != .ok {
            out.removeSubrange(entryCount...)
            reset()
        }
        return result
    }

    /// Convenience for tests: inflates a whole message payload.
    public func inflate(_ payload: [UInt8], limit: Int = .max, resetAfter: Bool) -> ([UInt8], InflateResult) {
        var out: [UInt8] = []
        let result = payload.withUnsafeBytes { inflate($0, into: &out, limit: limit, final: true, resetAfter: resetAfter) }
        return (out, result)
    }

    /// Runs zlib over `input`. The tail is fed with Z_BLOCK so that inflate stops at the block boundary
    /// the tail must complete and reports it in `data_type` (bit 128).
    private func feed(_ input: UnsafeRawBufferPointer, into out: inout [UInt8], limit: Int, tail: Bool) -> InflateResult {
        let strm = stream
        let flush = tail ? Z_BLOCK : Z_NO_FLUSH
        var next = input.baseAddress
        var remaining = input.count
        defer {
            strm.pointee.next_in = nil
            strm.pointee.next_out = nil
        }
        return withScratch(scratchSize) { scratch -> InflateResult in
            while remaining > 0 {
                let slice = min(remaining, maxSlice)
                remaining -= slice
                strm.pointee.next_in = next.map { UnsafeMutablePointer(mutating: $0.assumingMemoryBound(to: Bytef.self)) }
                strm.pointee.avail_in = uInt(slice)
                next = remaining > 0 ? next.map { $0 + slice } : nil
                while true {
                    // One byte past the limit is room enough to see that the message is too big.
                    let allowed = limit - messageBytes
                    let give = allowed < scratch.count ? allowed + 1 : scratch.count
                    strm.pointee.next_out = scratch.baseAddress
                    strm.pointee.avail_out = uInt(give)
                    let rc = CZlib.inflate(strm, flush)
                    let full = strm.pointee.avail_out == 0
                    let produced = give - Int(strm.pointee.avail_out)
                    messageBytes += produced
                    if messageBytes > limit { return .tooBig }
                    if produced > 0 {
                        if out.capacity < out.count + produced {
                            // Grow geometrically, but never past what the limit allows.
                            let cap = allowed > 1 << 40 ? Int.max : out.count + allowed
                            out.reserveCapacity(min(max(out.count + produced, out.capacity * 2), cap))
                        }
                        out.append(contentsOf: UnsafeRawBufferPointer(start: scratch.baseAddress, count: produced))
                    }
                    switch rc {
                    case Z_OK:
                        break
                    case Z_STREAM_END:
                        streamEnded = true
                        // Bytes after a final block are an error inside the payload; after it the tail is moot.
                        if !tail && (strm.pointee.avail_in > 0 || remaining > 0) {
                            return .corrupt("data after the final deflate block")
                        }
                        return .ok
                    case Z_BUF_ERROR:
                        // No progress possible: all input consumed and nothing pending.
                        if strm.pointee.avail_in == 0 { break }
                        return .corrupt("inflate made no progress")
                    case Z_DATA_ERROR:
                        return .corrupt(zlibMessage(strm, rc))
                    case Z_MEM_ERROR:
                        return .corrupt("out of memory")
                    default:
                        return .corrupt(zlibMessage(strm, rc))
                    }
                    if rc == Z_BUF_ERROR { break }
                    if strm.pointee.avail_in == 0 {
                        // At a block boundary (tail, Z_BLOCK) nothing is pending; otherwise a full buffer
                        // may hide more output.
                        if !full || (tail && strm.pointee.data_type & 128 != 0) { break }
                    }
                }
            }
            return .ok
        }
    }

    /// After a BFINAL block with context takeover, the next message starts a new DEFLATE stream that
    /// may still refer back to this one: carry the window over.
    private func restartKeepingWindow() {
        var window = [UInt8](repeating: 0, count: 1 << max(windowBits, 9))
        var length: uInt = 0
        inflateGetDictionary(stream, &window, &length)
        inflateReset(stream)
        if length > 0 { inflateSetDictionary(stream, window, length) }
    }
}
