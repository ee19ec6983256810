// libFuzzer target for WebSocketSession: the same bytes, fed whole or cut into random pieces, must
// give the same messages, the same end (state, close code, failure) and, in the server role, the
// same bytes out. Cutting is what the partial-frame path (unmasking in pieces, UTF-8 checked while
// a frame is in flight) has to get right. Delivered text must be UTF-8, and nothing is delivered
// after the session closed.
//
// Input: byte 0 chooses the role (bit 0) and a piece-size seed (the rest); bytes 1... are the wire.
// Built by Fuzz/run.sh together with Sources/WebSocketCodec/*.swift into a single module.

private struct Outcome: Equatable {
    var messages: [[UInt8]] = []
    var binary: [Bool] = []
    var state = WebSocketSession.State.open
    var closeCode: UInt16?
    var failure: UInt16?
    var output: [UInt8] = []
}

private func run(_ role: Role, _ wire: [UInt8], pieces: [Int]) -> Outcome {
    let session = WebSocketSession(role: role, shared: SessionShared(maxMessageBytes: 64 * 1024), now: 0)
    var outcome = Outcome()
    var output = ByteBuffer()
    var pending: [UInt8] = []
    var offset = 0
    var cut = 0
    while offset < wire.count && session.state != .closed {
        let size = pieces.isEmpty ? wire.count : max(1, pieces[cut % pieces.count])
        cut += 1
        pending += wire[offset..<min(offset + size, wire.count)]
        offset += size
        var consumed = 0
        pending.withUnsafeMutableBytes { buffer in
            loop: while true {
                switch session.next(buffer, consumed: &consumed, output: &output) {
                case .message(let payload, let binary):
                    if !binary { precondition(String(validating: payload, as: UTF8.self) != nil, "delivered text is not UTF-8") }
                    outcome.messages.append(Array(payload))
                    outcome.binary.append(binary)
                case .needMore, .held:
                    break loop
                case .closed:
                    consumed = buffer.count
                    break loop
                case .failed(let failure):
                    outcome.failure = failure.code.rawValue
                    consumed = buffer.count
                    break loop
                }
            }
        }
        pending.removeFirst(consumed)
    }
    outcome.state = session.state
    outcome.closeCode = session.closeCode
    if role == .server { outcome.output = Array(UnsafeRawBufferPointer(output.readable)) } // client frames carry random masks
    return outcome
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> Int32 {
    guard count >= 1 else { return 0 }
    let control = data[0]
    let role: Role = control & 1 == 0 ? .server : .client
    let wire = Array(UnsafeBufferPointer(start: data + 1, count: count - 1))
    var seed = UInt64(control >> 1) &+ 0x9E37_79B9_7F4A_7C15
    var pieces: [Int] = []
    for _ in 0..<16 {
        seed = seed &* 6364136223846793005 &+ 1442695040888963407
        pieces.append(Int(seed >> 59) + 1) // 1...32 bytes
    }
    let whole = run(role, wire, pieces: [])
    let cut = run(role, wire, pieces: pieces)
    precondition(whole == cut, "cutting the input changed the outcome: \(whole) vs \(cut)")
    return 0
}
