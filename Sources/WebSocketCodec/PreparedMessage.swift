import Synchronization

/// One outgoing data message encoded once for many accepted sockets (a topic's subscribers): the
/// uncompressed frame, and per window size the compressed frame for the sessions that compress
/// without context takeover. Server frames are unmasked, so every such session sends the same
/// bytes. Shared by every loop the subscribers live on: the plain frame is immutable, and the
/// first session to need a compressed variant builds it, under the lock, for all the others.
public final class PreparedMessage {
    public let opcode: Opcode
    /// Header and payload.
    let frame: [UInt8]
    private let headerLength: Int
    /// By window bits; a handful at most (a client may ask for any of 8...15).
    private let compressedFrames = Mutex<[(windowBits: Int, frame: [UInt8])]>([])

    public init(_ opcode: Opcode, _ payload: UnsafeRawBufferPointer) {
        precondition(!opcode.isControl, "a prepared message is a data message")
        self.opcode = opcode
        headerLength = FrameEncoder.headerLength(payloadLength: payload.count)
        frame = [UInt8](unsafeUninitializedCapacity: headerLength + payload.count) { buffer, count in
            count = FrameEncoder.writeFrame(to: buffer.baseAddress!, opcode: opcode, payload: payload)
        }
    }

    public var payloadCount: Int { frame.count - headerLength }

    func withPayload<R>(_ body: (UnsafeRawBufferPointer) -> R) -> R {
        frame.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[headerLength...])) }
    }

    /// The compressed frame for sessions sending with `windowBits` and no context takeover,
    /// compressed by the first caller with its thread's shared deflater.
    func compressedFrame(windowBits: Int, shared: SessionShared) -> [UInt8] {
        compressedFrames.withLock { variants in
            if let found = variants.first(where: { $0.windowBits == windowBits }) { return found.frame }
            var compressed: [UInt8] = []
            withPayload { shared.deflater(windowBits: windowBits).compress($0, into: &compressed, resetAfter: true) }
            let length = FrameEncoder.headerLength(payloadLength: compressed.count) + compressed.count
            let built = [UInt8](unsafeUninitializedCapacity: length) { buffer, count in
                count = compressed.withUnsafeBytes {
                    FrameEncoder.writeFrame(to: buffer.baseAddress!, opcode: opcode, rsv1: true, payload: $0)
                }
            }
            variants.append((windowBits, built))
            return built
        }
    }

    /// How many compressed variants were built (tests: one per window size, however many sessions).
    var compressedVariantCount: Int { compressedFrames.withLock { $0.count } }
}
