/// What the sessions of one thread share: the limits in force (a config reload changes them for
/// every session at once) and, for permessage-deflate without context takeover, zlib streams reset
/// after every message plus the scratch buffers messages pass through. One per thread: sessions
/// of different threads must not share one.
public final class SessionShared {
    /// Largest message (and frame) accepted; a larger one fails with 1009.
    public var maxMessageBytes: Int
    /// Outgoing messages smaller than this are sent uncompressed.
    public var compressionMinBytes: Int
    /// By window bits: a connection may have asked for a smaller window.
    private var deflaters: [Int: MessageDeflater] = [:]
    /// A 15-bit window inflates whatever window the peer used.
    lazy var inflater = MessageInflater(windowBits: 15)
    var compressed: [UInt8] = []
    var inflated: [UInt8] = []

    public init(maxMessageBytes: Int, compressionMinBytes: Int = 0) {
        self.maxMessageBytes = maxMessageBytes
        self.compressionMinBytes = compressionMinBytes
    }

    func deflater(windowBits: Int) -> MessageDeflater {
        if let existing = deflaters[windowBits] { return existing }
        let created = MessageDeflater(windowBits: windowBits)
        deflaters[windowBits] = created
        return created
    }
}
