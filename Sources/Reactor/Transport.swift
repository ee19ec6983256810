/// The byte stream under a connection: the socket itself, or TLS over it.
public struct Transport {
    public enum Result {
        case bytes(Int)
        /// Nothing more now; epoll says when.
        case wouldBlock
        /// TLS needs the socket writable before it can read again (a key update in flight).
        case wantWrite
        /// TLS needs to read before it can write again.
        case wantRead
        case closed
        case failed(String)
    }

    public let fd: Int32
    public var tls: TLSStream?

    public init(fd: Int32, tls: TLSStream?) {
        self.fd = fd
        self.tls = tls
    }

    @inline(__always)
    public func read(into p: UnsafeMutableRawPointer, count: Int) -> Result {
        guard let tls else {
            switch Socket.read(fd, into: p, count: count) {
            case .bytes(let n): return .bytes(n)
            case .wouldBlock: return .wouldBlock
            case .closed: return .closed
            case .failed(let e): return .failed("errno \(e)")
            }
        }
        switch tls.read(into: p, count: count) {
        case .bytes(let n): return .bytes(n)
        case .wantRead: return .wouldBlock
        case .wantWrite: return .wantWrite
        case .closed: return .closed
        case .failed(let why): return .failed(why)
        }
    }

    /// Writes some of the bytes.
    @inline(__always)
    public func write(from p: UnsafeRawPointer, count: Int) -> Result {
        guard let tls else {
            switch Socket.write(fd, from: p, count: count) {
            case .bytes(let n): return .bytes(n)
            case .wouldBlock: return .wouldBlock
            case .closed: return .closed
            case .failed(let e): return .failed("errno \(e)")
            }
        }
        switch tls.write(from: p, count: count) {
        case .bytes(let n): return .bytes(n)
        case .wantRead: return .wantRead
        case .wantWrite: return .wouldBlock
        case .closed: return .closed
        case .failed(let why): return .failed(why)
        }
    }

    /// Decrypted bytes waiting inside OpenSSL: epoll will not report them.
    public var hasBufferedInput: Bool { tls?.hasBufferedInput ?? false }

    /// Ends our direction: TLS close_notify, then the TCP write half.
    public func shutdownWrite() {
        tls?.shutdown()
        Socket.shutdownWrite(fd)
    }
}
