import Reactor

/// A loop's idle keep-alive connections of `Http.request`, by scheme, host, port and TLS trust.
/// An idle connection is watched: anything it reports (the server's close, bytes nobody asked
/// for) ends it, and so does `idleNanos` without use.
final class HTTPConnectionPool {
    private final class Idle: IOHandler {
        var transport: Transport
        let key: String
        var registration = EventLoop.Registration.none
        unowned let pool: HTTPConnectionPool

        init(transport: Transport, key: String, pool: HTTPConnectionPool) {
            self.transport = transport
            self.key = key
            self.pool = pool
        }

        func ioReady(_ events: UInt32) { pool.discard(self) }
    }

    /// Idle connections kept per key, and how long.
    private static let perKey = 8
    private static let idleNanos: UInt64 = 30_000_000_000

    private let loop: EventLoop
    private var idle: [String: [Idle]] = [:]

    init(loop: EventLoop) {
        self.loop = loop
    }

    /// An idle connection for `key`, unwatched, or nil.
    func take(_ key: String) -> Transport? {
        guard var list = idle[key], let entry = list.popLast() else { return nil }
        idle[key] = list.isEmpty ? nil : list
        loop.deregister(fd: entry.transport.fd, registration: entry.registration)
        entry.registration = .none
        return entry.transport
    }

    /// Keeps a connection whose response ended cleanly for the next request to `key`.
    func put(_ transport: Transport, key: String) {
        let entry = Idle(transport: transport, key: key, pool: self)
        entry.registration = loop.register(fd: transport.fd, events: IOEvents.readable, handler: entry)
        guard entry.registration != .none, (idle[key]?.count ?? 0) < HTTPConnectionPool.perKey else {
            close(entry)
            return
        }
        idle[key, default: []].append(entry)
        loop.schedule(after: HTTPConnectionPool.idleNanos) { [weak self, weak entry] in
            guard let self, let entry else { return }
            self.discard(entry)
        }
    }

    private func discard(_ entry: Idle) {
        guard var list = idle[entry.key], let i = list.firstIndex(where: { $0 === entry }) else { return }
        list.remove(at: i)
        idle[entry.key] = list.isEmpty ? nil : list
        close(entry)
    }

    private func close(_ entry: Idle) {
        if entry.registration != .none { loop.deregister(fd: entry.transport.fd, registration: entry.registration) }
        entry.registration = .none
        entry.transport.tls = nil // freed before the descriptor can be reused
        Socket.close(entry.transport.fd)
    }
}
