/// Reads the body of a request whose head the server has parsed, from bytes that arrive in any
/// pieces, and stops at its end so that a keep-alive connection goes on with the next request in
/// the same buffer.
///
/// The framing is decided from the head alone (RFC 9112 6.3), and refused where a proxy in front
/// could have decided otherwise: both Content-Length and Transfer-Encoding, a coding list whose
/// last coding is not chunked, and Transfer-Encoding in HTTP/1.0. Every failure is final: the
/// server answers `responseStatus` and closes, since where the next request starts is unknown.
public struct HTTPRequestBodyReader {
    public enum Progress: Equatable {
        case needMore
        case complete([UInt8])
        case failed(HTTPFramingError)
    }

    private enum Phase {
        case fixed(remaining: Int)
        case chunked
        case complete
        case failed(HTTPFramingError)
    }

    public let maxBodyBytes: Int
    private var phase: Phase
    private var body: [UInt8] = []
    private var chunked: ChunkedDecoder

    /// A body longer than `maxBodyBytes` fails with `.bodyTooLarge` (413) as soon as that is known:
    /// from Content-Length before any of the body is read, from a chunk's size before its data.
    /// Trailers are dropped, and more than `maxTrailerBytes` of them fail the request.
    public init(head: HTTPRequestHead, maxBodyBytes: Int, maxTrailerBytes: Int = 8 * 1024) {
        self.maxBodyBytes = maxBodyBytes
        chunked = ChunkedDecoder(maxBodyBytes: maxBodyBytes, maxTrailerBytes: maxTrailerBytes)
        let lengths = head.values(of: "content-length")
        let encodings = head.values(of: "transfer-encoding")
        if !encodings.isEmpty {
            let codings = TransferCodings(encodings)
            if !lengths.isEmpty {
                phase = .failed(.contentLengthWithTransferEncoding)
            } else if head.versionIs("HTTP/1.0") {
                phase = .failed(.badTransferEncoding("in HTTP/1.0"))
            } else if let problem = codings.problem {
                phase = .failed(.badTransferEncoding(problem))
            } else if !codings.lastIsChunked {
                // Without chunked last the body's end cannot be known (RFC 9112 6.3 item 4).
                phase = .failed(.badTransferEncoding("chunked is not the last coding"))
            } else if codings.count > 1 {
                phase = .failed(.unsupportedTransferEncoding) // gzip, chunked: nothing here decodes gzip
            } else {
                phase = .chunked
            }
            return
        }
        switch contentLength(lengths) {
        case .absent, .length(0): phase = .complete
        case .length(let length) where length <= maxBodyBytes:
            // Not all of a large announced length at once: the client may never send it.
            body.reserveCapacity(Swift.min(length, 1 << 20))
            phase = .fixed(remaining: length)
        case .length, .overflow: phase = .failed(.bodyTooLarge)
        case .invalid: phase = .failed(.badContentLength)
        }
    }

    /// Reads the body from `bytes[consumed...]` and advances `consumed` past what it used: all of
    /// it while the body goes on, up to the body's end once it is complete. After `.complete` or
    /// `.failed`, every call returns that again and consumes nothing.
    public mutating func read(_ bytes: UnsafeRawBufferPointer, consumed: inout Int) -> Progress {
        switch phase {
        case .complete:
            return .complete(body)
        case .failed(let error):
            return .failed(error)
        case .fixed(let remaining):
            let run = Swift.min(remaining, bytes.count - consumed)
            body.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[consumed..<consumed + run]))
            consumed += run
            guard run == remaining else {
                phase = .fixed(remaining: remaining - run)
                return .needMore
            }
        case .chunked:
            switch chunked.decode(bytes, consumed: &consumed, into: &body) {
            case .needMore:
                return .needMore
            case .done:
                break
            case .failed(let error):
                phase = .failed(error)
                body = []
                return .failed(error)
            }
        }
        phase = .complete
        return .complete(body)
    }
}

extension HTTPRequestHead {
    /// The values of every field named `name` (lower case), in arrival order.
    func values(of name: StaticString) -> [ArraySlice<UInt8>] {
        fields.filter { isName($0, name) }.map { bytes[Int($0.value.start)..<Int($0.value.end)] }
    }
}
