import CSystem
import Glibc

/// Something the loop calls when its file descriptor is ready.
public protocol IOHandler: AnyObject {
    func ioReady(_ events: UInt32)
}

/// Readiness bits, as epoll reports them.
public enum IOEvents {
    public static let readable: UInt32 = CS_EPOLLIN
    public static let writable: UInt32 = CS_EPOLLOUT
    public static let error: UInt32 = CS_EPOLLERR
    public static let hangup: UInt32 = CS_EPOLLHUP
    /// Report readiness when it arises, not while it lasts: the handler must read until a read comes
    /// up short (the socket is drained then, and whatever arrives later is reported anew). Spares
    /// the kernel polling again, in the next wait, every socket the last one reported.
    public static let edgeTriggered: UInt32 = CS_EPOLLET
}

/// One epoll event loop on one thread. Everything registered with it is touched only from that
/// thread; other threads reach it through `post`, which queues a job and wakes the loop via eventfd.
public final class EventLoop {
    public let index: Int
    let epfd: Int32
    private let wakeFd: Int32
    private var slots: [IOHandler?] = []
    private var generations: [UInt32] = []
    private var freeSlots: [Int] = []
    private var timers = DeadlineHeap<() -> Void>()
    private var mailbox: [() -> Void] = []
    private let mailboxLock = Lock()
    /// Called once after every batch of events, timers and mailbox jobs: where batched writes are flushed.
    public var afterIteration: (() -> Void)?

    /// Monotonic time in nanoseconds, refreshed once per loop iteration.
    public private(set) var now: UInt64 = EventLoop.monotonicNanos() {
        didSet { wallCache = -1 }
    }
    @usableFromInline var wallCache: Int64 = -1

    /// Wall-clock milliseconds since the Unix epoch when this iteration's events were received: read
    /// on first use in an iteration, so the events of one batch cost one clock read between them.
    /// Inlinable: every script event reads it, and a call across modules retains the loop.
    @inlinable public var wallNowMillis: Int64 {
        if wallCache < 0 { wallCache = EventLoop.wallMillis() }
        return wallCache
    }

    public init(index: Int) {
        self.index = index
        epfd = cs_epoll_create()
        wakeFd = cs_eventfd()
        precondition(epfd >= 0 && wakeFd >= 0, "cannot create epoll or eventfd: errno \(cs_errno())")
        _ = cs_epoll_add(epfd, wakeFd, CS_EPOLLIN, UInt64.max)
    }

    deinit {
        close(epfd)
        close(wakeFd)
    }

    public struct Registration: Equatable {
        fileprivate let token: UInt64
        public static let none = Registration(token: UInt64.max - 1)
    }

    /// Watches `fd` for `events`; the handler is held strongly until `deregister`.
    public func register(fd: Int32, events: UInt32, handler: IOHandler) -> Registration {
        let slot: Int
        if let free = freeSlots.popLast() {
            slot = free
            slots[slot] = handler
        } else {
            slot = slots.count
            slots.append(handler)
            generations.append(0)
        }
        let token = UInt64(generations[slot]) << 32 | UInt64(slot)
        if cs_epoll_add(epfd, fd, events, token) != 0 {
            slots[slot] = nil
            freeSlots.append(slot)
            return .none
        }
        return Registration(token: token)
    }

    public func modify(fd: Int32, events: UInt32, registration: Registration) {
        _ = cs_epoll_mod(epfd, fd, events, registration.token)
    }

    /// Stops watching `fd`; events already fetched for it in this batch are discarded.
    public func deregister(fd: Int32, registration: Registration) {
        guard registration != .none else { return }
        _ = cs_epoll_del(epfd, fd)
        forget(registration)
    }

    /// Stops watching `fd`, which the caller closes next: closing its only descriptor takes it out
    /// of the epoll set, so this spares the `epoll_ctl` (a system call per connection). Should the
    /// socket outlive the close (a descriptor inherited by a child), its events carry a stale
    /// token and are discarded.
    public func deregisterForClose(fd: Int32, registration: Registration) {
        guard registration != .none else { return }
        forget(registration)
    }

    private func forget(_ registration: Registration) {
        let slot = Int(registration.token & 0xFFFF_FFFF)
        slots[slot] = nil
        generations[slot] &+= 1
        freeSlots.append(slot)
    }

    /// Runs `job` on this loop's thread; callable from any thread.
    public func post(_ job: @escaping () -> Void) {
        let wasEmpty = mailboxLock.locked {
            mailbox.append(job)
            return mailbox.count == 1
        }
        if wasEmpty { _ = cs_eventfd_signal(wakeFd) }
    }

    /// Runs `action` on this loop after `delayNanos`. Timers are not cancellable: the action checks
    /// whether it still applies.
    public func schedule(after delayNanos: UInt64, _ action: @escaping () -> Void) {
        timers.push(now &+ delayNanos, action)
    }

    /// Runs for the life of the process.
    public func run() -> Never {
        while true { runOnce() }
    }

    private var events = [cs_event](repeating: cs_event(), count: 256)

    /// One iteration: waits for events or the next timer (at most `maxWaitMs`), then handles them.
    public func runOnce(maxWaitMs: Int32 = 60_000) {
        var timeout: Int32 = maxWaitMs
        if let deadline = timers.nextDeadline {
            let wait = deadline > now ? (deadline - now + 999_999) / 1_000_000 : 0
            timeout = Int32(min(wait, UInt64(maxWaitMs)))
        }
        let n = events.withUnsafeMutableBufferPointer { cs_epoll_wait(epfd, $0.baseAddress, 256, timeout) }
        now = EventLoop.monotonicNanos()
        if n < 0 {
            if cs_errno() == EINTR { return }
            fatalError("epoll_wait failed: errno \(cs_errno())")
        }
        for i in 0..<Int(n) {
            let event = events[i]
            if event.token == UInt64.max {
                drainMailbox()
                continue
            }
            let slot = Int(event.token & 0xFFFF_FFFF)
            guard slot < slots.count, UInt64(generations[slot]) == event.token >> 32, let handler = slots[slot] else { continue }
            handler.ioReady(event.events)
        }
        while let due = timers.popDue(now: now) { due.value() }
        afterIteration?()
    }

    private func drainMailbox() {
        _ = cs_eventfd_drain(wakeFd)
        let jobs = mailboxLock.locked { () -> [() -> Void] in
            let taken = mailbox
            mailbox.removeAll(keepingCapacity: true)
            return taken
        }
        for job in jobs { job() }
    }

    public static func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Wall-clock milliseconds since the Unix epoch.
    public static func wallMillis() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}
