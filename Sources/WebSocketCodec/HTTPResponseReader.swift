/// Reads one HTTP/1.1 response, to a request the client sent, from bytes that arrive in any
/// pieces: the head, any 1xx interim responses before it, and the body framed as RFC 9112 6.3 says.
/// The caller feeds what it read and learns whether the response is complete; the reader keeps the
/// head and body, nothing else.
///
/// Once complete, the reader says how many of the bytes it was given came after the response. A
/// server sends nothing unasked, so those bytes are a pipelining error or garbage, and the
/// connection must not carry another request (for a 101 they are the new protocol's first bytes).
public struct HTTPResponseReader {
    public struct Response: Equatable {
        public var status: Int
        /// Header fields in arrival order, names lower-cased, values trimmed.
        public var headers: [(name: String, value: String)]
        public var body: [UInt8]
        /// Whether the connection may carry another request: HTTP/1.1 unless `Connection: close`,
        /// HTTP/1.0 only with `Connection: keep-alive`, and never after a body that ended with the
        /// connection, a 101 or a CONNECT tunnel, or a body framed both ways (chunked and
        /// Content-Length, which one of the hops may have read the other way). Bytes after the
        /// response (`leftover`) also rule reuse out.
        public var keepAlive: Bool

        public init(status: Int, headers: [(name: String, value: String)], body: [UInt8], keepAlive: Bool) {
            self.status = status
            self.headers = headers
            self.body = body
            self.keepAlive = keepAlive
        }

        /// The first value of a header (name in lower case).
        public func header(_ name: String) -> String? { firstValue(headers, name) }

        public static func == (a: Response, b: Response) -> Bool {
            a.status == b.status && a.body == b.body && a.keepAlive == b.keepAlive
                && a.headers.count == b.headers.count
                && zip(a.headers, b.headers).allSatisfy { $0.name == $1.name && $0.value.utf8.elementsEqual($1.value.utf8) }
        }
    }

    public enum Progress: Equatable {
        case needMore
        /// The response ended; the last `leftover` bytes of the input just given were not part of it.
        case complete(Response, leftover: Int)
        case failed(HTTPFramingError)
    }

    private enum Phase {
        case head
        case fixed(remaining: Int)
        case chunked
        case untilClose
        case complete(Response)
        case failed(HTTPFramingError)
    }

    public let maxHeadBytes: Int
    public let maxBodyBytes: Int
    private let requestMethod: String
    private var phase = Phase.head
    /// The head being read, CRLFCRLF included once found.
    private var head: [UInt8] = []
    /// Bytes of every head so far, 1xx heads included: a server cannot keep the client reading
    /// interim responses without end.
    private var headBytes = 0
    /// Where the head's line endings stand: 0 in a line, 1 after its CR, 2 after CRLF, 3 after CRLFCR.
    private var lineState = 0
    private var body: [UInt8] = []
    private var chunked: ChunkedDecoder
    /// What the head said, kept while the body is read.
    private var status = 0
    private var headers: [(name: String, value: String)] = []
    private var keepAlive = false

    /// `requestMethod` is the method of the request this answers, as sent: a response to HEAD has
    /// no body whatever its head says, and a 2xx to CONNECT starts a tunnel.
    public init(maxHeadBytes: Int, maxBodyBytes: Int, requestMethod: String) {
        self.maxHeadBytes = maxHeadBytes
        self.maxBodyBytes = maxBodyBytes
        self.requestMethod = requestMethod
        // Trailers are dropped, but they are head-like: the head limit bounds them.
        chunked = ChunkedDecoder(maxBodyBytes: maxBodyBytes, maxTrailerBytes: maxHeadBytes)
    }

    /// Reads `bytes`, all of them: what follows a complete response is counted in `leftover`, and
    /// after `.complete` or `.failed` every call returns that again (all of a later input is leftover).
    public mutating func read(_ bytes: UnsafeRawBufferPointer) -> Progress {
        var i = 0
        let n = bytes.count
        while true {
            switch phase {
            case .complete(let response):
                return .complete(response, leftover: n - i)
            case .failed(let error):
                return .failed(error)
            case .head:
                guard i < n else { return .needMore }
                // Still .head after this: more head bytes to come, or another head after a 1xx.
                if let failure = readHead(bytes, &i) { return fail(failure) }
            case .fixed(let remaining):
                guard i < n else { return .needMore }
                let run = Swift.min(remaining, n - i)
                body.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i..<i + run]))
                i += run
                if run == remaining { finish(keepAlive: keepAlive) } else { phase = .fixed(remaining: remaining - run) }
            case .chunked:
                switch chunked.decode(bytes, consumed: &i, into: &body) {
                case .needMore: return .needMore
                case .done: finish(keepAlive: keepAlive)
                case .failed(let error): return fail(error)
                }
            case .untilClose:
                guard n - i <= maxBodyBytes - body.count else { return fail(.bodyTooLarge) }
                body.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[i...]))
                return .needMore
            }
        }
    }

    /// The peer closed the connection: a body read until the close is complete, anything else
    /// unfinished is truncated.
    public mutating func endOfInput() -> Progress {
        switch phase {
        case .complete(let response):
            return .complete(response, leftover: 0)
        case .failed(let error):
            return .failed(error)
        case .untilClose:
            finish(keepAlive: false)
            return endOfInput()
        case .head where headBytes == 0:
            return fail(.closedBeforeResponse)
        case .head, .fixed, .chunked:
            return fail(.truncated)
        }
    }

    private mutating func fail(_ error: HTTPFramingError) -> Progress {
        phase = .failed(error)
        head = []
        body = []
        return .failed(error)
    }

    private mutating func finish(keepAlive: Bool) {
        phase = .complete(Response(status: status, headers: headers, body: body, keepAlive: keepAlive))
        head = []
        body = []
        headers = []
    }

    /// Reads head bytes from `bytes[i...]` up to the blank line, then acts on the head. Lines must
    /// end in CRLF: a bare LF, or a CR alone, is where readers that disagree on line ends disagree
    /// on where the body starts.
    private mutating func readHead(_ bytes: UnsafeRawBufferPointer, _ i: inout Int) -> HTTPFramingError? {
        let start = i
        // The head limit bounds the scan, so the head is never copied beyond it.
        let end = Swift.min(bytes.count, i + (maxHeadBytes - headBytes))
        var found = false
        while i < end && !found {
            let b = bytes[i]
            i += 1
            switch (lineState, b) {
            case (0, 0x0D), (2, 0x0D): lineState += 1
            case (1, 0x0A): lineState = 2
            case (3, 0x0A): found = true
            case (1, _), (3, _): return .malformedHead("CR without LF")
            case (_, 0x0A): return .malformedHead("bare LF")
            default: lineState = 0
            }
        }
        head.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start..<i]))
        headBytes += i - start
        guard found else { return headBytes >= maxHeadBytes ? .headTooLarge : nil }
        lineState = 0
        let parsed = head.withUnsafeBytes { HTTPResponseParser.parse($0) }
        head.removeAll(keepingCapacity: true)
        switch parsed {
        case .failure(.malformed(let reason)): return .malformedHead(reason)
        case .success(let response): return begin(response)
        }
    }

    /// Acts on a parsed head: another head to wait for after a 1xx, or how the body is framed.
    private mutating func begin(_ response: HTTPResponseHead) -> HTTPFramingError? {
        let http10: Bool
        switch response.version {
        case "HTTP/1.0": http10 = true
        case "HTTP/1.1": http10 = false
        default:
            // A later 1.x is read as 1.1 (RFC 9112 2.3); anything else is no answer to an HTTP/1.1 request.
            let v = Array(response.version.utf8)
            guard v.count == 8, v[0..<7].elementsEqual("HTTP/1.".utf8), v[7] >= 0x31 && v[7] <= 0x39 else {
                return .malformedHead("unsupported version \(response.version)")
            }
            http10 = false
        }
        status = response.status
        if status < 200 && status != 101 { return nil } // interim: the real response follows
        headers = response.headers
        keepAlive = http10 ? containsToken(headers, "connection", "keep-alive") && !containsToken(headers, "connection", "close")
            : !containsToken(headers, "connection", "close")

        if status == 101 || (requestMethod == "CONNECT" && (200..<300).contains(status)) {
            finish(keepAlive: false) // the connection is no longer HTTP
            return nil
        }
        if requestMethod == "HEAD" || status == 204 || status == 304 {
            finish(keepAlive: keepAlive)
            return nil
        }
        let lengths = headers.filter { $0.name == "content-length" }.map(\.value.utf8)
        let encodings = headers.filter { $0.name == "transfer-encoding" }.map(\.value.utf8)
        if !encodings.isEmpty {
            if http10 { return .badTransferEncoding("in HTTP/1.0") }
            let codings = TransferCodings(encodings)
            if let problem = codings.problem { return .badTransferEncoding(problem) }
            // Framed by Transfer-Encoding, which overrides Content-Length; a server that sent both
            // may have an intermediary that framed by the other, so the connection is not reused.
            if !lengths.isEmpty { keepAlive = false }
            if codings.lastIsChunked {
                phase = .chunked
            } else {
                keepAlive = false
                phase = .untilClose
            }
            return nil
        }
        switch contentLength(lengths) {
        case .invalid: return .badContentLength
        case .overflow: return .bodyTooLarge
        case .length(let length):
            guard length <= maxBodyBytes else { return .bodyTooLarge }
            if length == 0 {
                finish(keepAlive: keepAlive)
            } else {
                // Not all of a large announced length at once: the server may never send it.
                body.reserveCapacity(Swift.min(length, 1 << 20))
                phase = .fixed(remaining: length)
            }
        case .absent:
            keepAlive = false
            phase = .untilClose
        }
        return nil
    }
}
