/// permessage-deflate state of one connection: the negotiated settings, plus zlib streams of its
/// own only where context takeover keeps history between messages. Without takeover (the default
/// policy) the loop's shared streams serve every connection, so a compressed idle connection
/// costs no zlib memory at all.
public final class DeflateSession {
    public let settings: DeflateSettings
    /// Which side this endpoint is: it picks which half of `settings` applies to sending.
    public let role: Role
    private var ownDeflater: MessageDeflater?
    private var ownInflater: MessageInflater?

    public init(settings: DeflateSettings, role: Role) {
        self.settings = settings
        self.role = role
    }

    /// Compresses one outgoing message (appended to `out`).
    func compress(_ payload: UnsafeRawBufferPointer, into out: inout [UInt8], shared: SessionShared) {
        let (bits, noTakeover) = settings.sending(as: role)
        if noTakeover {
            shared.deflater(windowBits: bits).compress(payload, into: &out, resetAfter: true)
        } else {
            if ownDeflater == nil { ownDeflater = MessageDeflater(windowBits: bits) }
            ownDeflater!.compress(payload, into: &out, resetAfter: false)
        }
    }

    /// Inflates one whole incoming message, stopping at `limit` bytes of output.
    func inflate(_ payload: UnsafeRawBufferPointer, into out: inout [UInt8], limit: Int, shared: SessionShared) -> InflateResult {
        let (bits, noTakeover) = settings.receiving(as: role)
        if noTakeover {
            return shared.inflater.inflate(payload, into: &out, limit: limit, final: true, resetAfter: true)
        }
        if ownInflater == nil { ownInflater = MessageInflater(windowBits: bits) }
        return ownInflater!.inflate(payload, into: &out, limit: limit, final: true, resetAfter: false)
    }
}
