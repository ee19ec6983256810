import CSystem
import Glibc

public struct SocketError: Error, CustomStringConvertible {
    public let operation: String
    public let errno: Int32
    public var description: String { "\(operation): \(String(cString: strerror(errno)))" }
    /// The process (EMFILE) or the system (ENFILE) has no descriptor left.
    public var isOutOfDescriptors: Bool { errno == EMFILE || errno == ENFILE }
}

/// Thin wrappers over the socket calls the gateway needs, with errno turned into results.
public enum Socket {
    /// A non-blocking listening socket with SO_REUSEPORT, so every loop can own one on the same
    /// port, and TCP_NODELAY, which the sockets it accepts inherit.
    public static func listen(host: String, port: UInt16, backlog: Int32 = 4096) throws(SocketError) -> Int32 {
        let fd = cs_listen(host, port, backlog)
        if fd < 0 { throw SocketError(operation: "listen on \(host):\(port)", errno: -fd) }
        return fd
    }

    public static func localPort(_ fd: Int32) -> Int { Int(cs_local_port(fd)) }

    /// A descriptor to keep in reserve (/dev/null), or -1.
    public static func openReserve() -> Int32 { Glibc.open("/dev/null", O_RDONLY | O_CLOEXEC) }

    /// The peer's IP address as text, or "" when the socket has none.
    public static func peerAddress(_ fd: Int32) -> String {
        addressText { cs_peer_address(fd, $0, $1) == 0 }
    }

    /// Text a C function writes into room for an IP address (INET6_ADDRSTRLEN), "" when it fails.
    private static func addressText(_ write: (UnsafeMutablePointer<CChar>, Int) -> Bool) -> String {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: 48) { room in
            write(room.baseAddress!, room.count) ? String(cString: room.baseAddress!) : ""
        }
    }

    public enum AcceptResult {
        /// The socket and its peer's IP address as `peerAddress` gives it (taken from the accept,
        /// which spares a `getpeername` per connection).
        case socket(Int32, peer: String)
        case wouldBlock
        case failed(SocketError)
    }

    /// Accepts one connection, non-blocking, with TCP_NODELAY from the listener.
    public static func accept(_ listenFd: Int32) -> AcceptResult {
        var fd: Int32 = -1
        let peer = addressText {
            fd = cs_accept(listenFd, $0, $1)
            return fd >= 0
        }
        if fd >= 0 { return .socket(fd, peer: peer) }
        if -fd == EAGAIN || -fd == EWOULDBLOCK { return .wouldBlock }
        return .failed(SocketError(operation: "accept", errno: -fd))
    }

    /// Starts a non-blocking connect (TCP_NODELAY set) and returns its socket: when it becomes
    /// writable, `pendingError` tells whether the connection was made.
    public static func connect(_ address: SocketAddress) -> Result<Int32, SocketError> {
        let fd = withUnsafePointer(to: address.raw) { cs_connect($0) }
        if fd < 0 { return .failure(SocketError(operation: "connect to \(address)", errno: -fd)) }
        return .success(fd)
    }

    /// SO_ERROR: 0 once a non-blocking connect has succeeded, else why it failed (ECONNREFUSED...).
    public static func pendingError(_ fd: Int32) -> Int32 { cs_socket_error(fd) }

    public enum IOResult {
        case bytes(Int)
        case wouldBlock
        case closed
        case failed(Int32)
    }

    /// recv/send rather than read/write: the socket calls skip the file layer's position lock and
    /// checks (about 4% of a core on a 64-byte echo), and send cannot raise SIGPIPE.
    @inline(__always)
    public static func read(_ fd: Int32, into p: UnsafeMutableRawPointer, count: Int) -> IOResult {
        while true {
            let n = Glibc.recv(fd, p, count, 0)
            if n > 0 { return .bytes(n) }
            if n == 0 { return .closed }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            return .failed(e)
        }
    }

    @inline(__always)
    public static func write(_ fd: Int32, from p: UnsafeRawPointer, count: Int) -> IOResult {
        while true {
            let n = Glibc.send(fd, p, count, Int32(MSG_NOSIGNAL))
            if n >= 0 { return .bytes(n) }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            return .failed(e)
        }
    }

    public static func shutdownWrite(_ fd: Int32) { _ = Glibc.shutdown(fd, Int32(SHUT_WR)) }

    public static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    /// A write to a socket the peer closed returns EPIPE instead of killing the process.
    public static func ignoreBrokenPipes() { cs_ignore_sigpipe() }
}
