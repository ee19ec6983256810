import Reactor

/// Accepts connections for one worker; every worker has its own SO_REUSEPORT socket (one for the
/// main port, one for the admin port when that is on).
final class Listener: IOHandler {
    unowned let worker: Worker
    let fd: Int32
    private let admin: Bool
    private(set) var registration = EventLoop.Registration.none
    /// A descriptor kept in reserve: out of descriptors, it is let go for a moment to accept a
    /// pending connection and close it at once, so clients past the limit are refused rather than
    /// left waiting in the backlog.
    private var reserve: Int32 = Socket.openReserve()
    private var lastRefusalLog: UInt64 = 0

    init(worker: Worker, fd: Int32, admin: Bool = false) {
        self.worker = worker
        self.fd = fd
        self.admin = admin
        registration = worker.loop.register(fd: fd, events: IOEvents.readable, handler: self)
    }

    func ioReady(_ events: UInt32) {
        for _ in 0..<64 {
            switch Socket.accept(fd) {
            case .socket(let client, let peer): Connection.accept(fd: client, peer: peer, worker: worker, admin: admin)
            case .wouldBlock: return
            case .failed(let error) where error.isOutOfDescriptors && reserve >= 0:
                Socket.close(reserve)
                if case .socket(let client, _) = Socket.accept(fd) { Socket.close(client) }
                reserve = Socket.openReserve()
                worker.metrics.reject(.limit)
                if worker.loop.now &- lastRefusalLog > 1_000_000_000 {
                    lastRefusalLog = worker.loop.now
                    Log.warn("\(error): refusing new connections until sockets close (raise the open files limit)")
                }
            case .failed(let error):
                // Out of descriptors without a reserve: the pending connection stays readable, so
                // stop watching for a moment rather than spin.
                Log.warn("\(error); pausing accepts for 100 ms")
                worker.loop.modify(fd: fd, events: 0, registration: registration)
                worker.loop.schedule(after: 100_000_000) { [self] in
                    worker.loop.modify(fd: fd, events: IOEvents.readable, registration: registration)
                }
                return
            }
        }
    }
}
