import Reactor

// Moving bytes through a TLSStream, and bytes worth moving.

/// Reads from the server stream until it would block (following hasBufferedInput).
func serverReadAvailable(_ stream: TLSStream, _ out: inout [UInt8], chunk: Int = 16384) -> TLSIOResult {
    var buffer = [UInt8](repeating: 0, count: chunk)
    while true {
        let result = buffer.withUnsafeMutableBytes { stream.read(into: $0.baseAddress!, count: chunk) }
        guard case .bytes(let n) = result else { return result }
        out += buffer[0..<n]
    }
}

func pattern(_ count: Int, seed: UInt8 = 0) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 11 &+ Int(seed)) }
}
