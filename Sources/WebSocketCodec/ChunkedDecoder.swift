/// The chunked transfer coding (RFC 9112 7.1), decoded from bytes that arrive in any pieces. Chunk
/// data is appended to the caller's body a run at a time; the framing around it is stepped through
/// byte by byte and never buffered, so a piece boundary can fall anywhere, even inside a size.
///
/// Strict where lenient parsers have been used to smuggle requests past a proxy that reads the
/// same bytes differently: every line ends in CRLF (a bare LF or a CR alone is an error), a size is
/// hex digits only, and the data is followed by exactly CRLF. Extensions and trailer fields are
/// read and dropped.
struct ChunkedDecoder {
    enum Step: Equatable {
        case needMore
        /// The last chunk and the trailer section were read.
        case done
        case failed(HTTPFramingError)
    }

    private enum State {
        /// At the first digit of a chunk size.
        case sizeStart
        case size
        /// Spaces or tabs after the size: an extension or the line's end must follow.
        case sizeBlank
        case extensions
        /// The CR of the size line was read.
        case sizeLF
        case data
        /// The chunk's data was read: its CRLF follows.
        case dataCR
        case dataLF
        /// At the start of a trailer line, or of the empty line that ends the body.
        case trailerStart
        case trailer
        case trailerLF
        /// The CR of the final empty line was read.
        case lastLF
        case done
    }

    /// Zeros before a size's digits are allowed, but not without end: a size line's digits are
    /// the only framing bytes that a limit on extensions and trailers would not bound.
    static let maxSizeDigits = 32
    /// Extension bytes in one body. Nothing reads them, and without a bound a sender could stream
    /// them forever with one byte of data in between, never reaching the body limit.
    static let maxExtensionBytes = 16 * 1024

    let maxBodyBytes: Int
    let maxTrailerBytes: Int
    private var state = State.sizeStart
    /// The size being read, then what is left of the chunk's data.
    private var size = 0
    private var digits = 0
    private var extensionBytes = 0
    private var trailerBytes = 0

    init(maxBodyBytes: Int, maxTrailerBytes: Int) {
        self.maxBodyBytes = maxBodyBytes
        self.maxTrailerBytes = maxTrailerBytes
    }

    var isDone: Bool { state == .done }

    /// Decodes from `bytes[consumed...]`, appending chunk data to `body`, and advances `consumed`
    /// past what it used: all of it unless the body ended (or failed) inside.
    mutating func decode(_ bytes: UnsafeRawBufferPointer, consumed: inout Int, into body: inout [UInt8]) -> Step {
        guard state != .done else { return .done }
        let n = bytes.count
        var i = consumed
        defer { consumed = i }
        while i < n {
            if state == .data {
                let run = Swift.min(size, n - i)
                body.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i..<i + run]))
                i += run
                size -= run
                if size == 0 { state = .dataCR }
                continue
            }
            let b = bytes[i]
            i += 1
            switch state {
            case .sizeStart, .size:
                if let value = hexValue(b) {
                    digits += 1
                    guard digits <= Self.maxSizeDigits else { return .failed(.malformedChunk("chunk size too long")) }
                    let (shifted, o1) = size.multipliedReportingOverflow(by: 16)
                    let (sum, o2) = shifted.addingReportingOverflow(Int(value))
                    // Known too large at the digit that makes it so, before its data is waited for.
                    if o1 || o2 || sum > maxBodyBytes - body.count { return .failed(.bodyTooLarge) }
                    size = sum
                    state = .size
                } else if state == .sizeStart {
                    return .failed(.malformedChunk("chunk size is not hex digits"))
                } else if let failure = endOfSize(b) {
                    return .failed(failure)
                }
            case .sizeBlank:
                if let failure = endOfSize(b) { return .failed(failure) }
            case .extensions:
                if b == 0x0D {
                    state = .sizeLF
                } else {
                    extensionBytes += 1
                    guard extensionBytes <= Self.maxExtensionBytes else { return .failed(.malformedChunk("chunk extensions too long")) }
                    guard isFieldByte(b) else { return .failed(.malformedChunk("bare LF or control character in a chunk extension")) }
                }
            case .sizeLF:
                guard b == 0x0A else { return .failed(.malformedChunk("CR without LF after a chunk size")) }
                digits = 0
                state = size == 0 ? .trailerStart : .data
            case .dataCR:
                guard b == 0x0D else { return .failed(.malformedChunk("chunk data not followed by CRLF")) }
                state = .dataLF
            case .dataLF:
                guard b == 0x0A else { return .failed(.malformedChunk("chunk data not followed by CRLF")) }
                state = .sizeStart
            case .trailerStart, .trailer:
                if b == 0x0D {
                    state = state == .trailerStart ? .lastLF : .trailerLF
                    continue
                }
                trailerBytes += 1
                guard trailerBytes <= maxTrailerBytes else { return .failed(.malformedChunk("trailer section too large")) }
                guard isFieldByte(b) else { return .failed(.malformedChunk("control character or bare LF in a trailer")) }
                state = .trailer
            case .trailerLF:
                guard b == 0x0A else { return .failed(.malformedChunk("CR without LF in a trailer")) }
                trailerBytes += 2
                guard trailerBytes <= maxTrailerBytes else { return .failed(.malformedChunk("trailer section too large")) }
                state = .trailerStart
            case .lastLF:
                guard b == 0x0A else { return .failed(.malformedChunk("CR without LF at the end of the body")) }
                state = .done
                return .done
            case .data, .done:
                preconditionFailure("unreachable")
            }
        }
        return state == .done ? .done : .needMore
    }

    /// After a size's last digit: blanks, an extension or the line's CR.
    private mutating func endOfSize(_ b: UInt8) -> HTTPFramingError? {
        switch b {
        case 0x0D: state = .sizeLF
        case UInt8(ascii: ";"): state = .extensions
        case 0x20, 0x09: state = .sizeBlank // BWS before ";" (RFC 9112 7.1.1)
        case 0x0A: return .malformedChunk("bare LF after a chunk size")
        default: return .malformedChunk("chunk size is not hex digits")
        }
        return nil
    }
}

@inline(__always) private func hexValue(_ b: UInt8) -> UInt8? {
    switch b {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return b - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - UInt8(ascii: "A") + 10
    default: return nil
    }
}

/// A byte a field line may hold (RFC 9110 5.5): anything but control characters, tab allowed.
@inline(__always) private func isFieldByte(_ b: UInt8) -> Bool { b >= 0x20 ? b != 0x7F : b == 0x09 }
