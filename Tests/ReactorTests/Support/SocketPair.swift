import Foundation
import Glibc
import Reactor

// Loopback TCP sockets for tests that need a real peer.

/// As the gateway does: writes to a closed socket report EPIPE instead of killing the process.
/// For the `setUp()` of test classes that write to sockets their peer may have closed.
func ignoreSIGPIPE() {
    signal(SIGPIPE, SIG_IGN)
}

/// A connected loopback TCP pair, both ends non-blocking.
struct SocketPair {
    let server: Int32
    let client: Int32

    /// `buffer`: SO_SNDBUF/SO_RCVBUF for both ends (0 keeps the defaults), small to force partial writes.
    init(buffer: Int32 = 0) {
        let listener = try! Socket.listen(host: "127.0.0.1", port: 0)
        defer { Socket.close(listener) }
        let client = connectLoopback(port: Socket.localPort(listener), buffer: buffer)
        var server: Int32 = -1
        let deadline = Date().addingTimeInterval(5)
        while server < 0 && Date() < deadline {
            if case .socket(let fd, _) = Socket.accept(listener) { server = fd } else { usleep(1000) }
        }
        precondition(server >= 0, "accept timed out")
        if buffer > 0 { setBuffers(server, buffer) }
        self.server = server
        self.client = client
    }

    func close() {
        Socket.close(server)
        Socket.close(client)
    }
}

func setBuffers(_ fd: Int32, _ size: Int32) {
    var size = size
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
}

/// A non-blocking client socket connected to 127.0.0.1:port.
func connectLoopback(port: Int, buffer: Int32 = 0) -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    precondition(fd >= 0)
    if buffer > 0 { setBuffers(fd, buffer) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let rc = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    precondition(rc == 0, "connect failed: errno \(errno)")
    _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    return fd
}

/// Waits until one of `fds` is ready for its events, or `timeoutMs`.
func waitFor(_ fds: [(Int32, Int16)], timeoutMs: Int32 = 100) {
    var polls = fds.map { pollfd(fd: $0.0, events: $0.1, revents: 0) }
    _ = poll(&polls, nfds_t(polls.count), timeoutMs)
}

let pollIn = Int16(POLLIN)
let pollOut = Int16(POLLOUT)
