import CSystem
import Glibc

/// One IPv4 or IPv6 address with a port, as getaddrinfo returned it; `Socket.connect` takes it.
public struct SocketAddress: CustomStringConvertible {
    let raw: cs_address

    /// "1.2.3.4:80" or "[::1]:80".
    public var description: String {
        var text = [CChar](repeating: 0, count: 80)
        withUnsafePointer(to: raw) { cs_address_text($0, &text, text.count) }
        return String(cString: text)
    }

    /// The address alone: "1.2.3.4" or "::1".
    public var host: String {
        let text = description
        guard let colon = text.lastIndex(of: ":") else { return text }
        let address = text[..<colon]
        return address.hasPrefix("[") ? String(address.dropFirst().dropLast()) : String(address)
    }
}

public struct ResolveError: Error, CustomStringConvertible {
    /// getaddrinfo's reason, e.g. "Name or service not known".
    public let message: String
    public var description: String { message }
}

/// Name resolution for outbound TCP connections, without blocking a loop.
public enum Resolver {
    /// More than enough to try each family a few times; the rest would only add connect timeouts.
    private static let maxAddresses = 16

    /// Resolves `host` off the loop and calls `done` on `loop`, always later (through `post`), never
    /// from inside this call. A literal IPv4 or IPv6 address needs no DNS, so it is converted at
    /// once instead of queueing behind lookups that may be waiting for a slow name server.
    public static func resolve(host: String, port: UInt16, on loop: EventLoop, _ done: @escaping (Result<[SocketAddress], ResolveError>) -> Void) {
        if isNumeric(host) {
            let result = lookup(host, port)
            loop.post { done(result) }
            return
        }
        LookupThreads.shared.submit {
            let result = lookup(host, port)
            loop.post { done(result) }
        }
    }

    private static func isNumeric(_ host: String) -> Bool {
        var scratch = in6_addr()
        return inet_pton(AF_INET, host, &scratch) == 1 || inet_pton(AF_INET6, host, &scratch) == 1
    }

    /// Blocks for as long as getaddrinfo does.
    private static func lookup(_ host: String, _ port: UInt16) -> Result<[SocketAddress], ResolveError> {
        var found = [cs_address](repeating: cs_address(), count: maxAddresses)
        var error = [CChar](repeating: 0, count: 256)
        let count = cs_resolve(host, port, &found, Int32(maxAddresses), &error, error.count)
        guard count > 0 else { return .failure(ResolveError(message: String(cString: error))) }
        return .success(found[..<Int(count)].map { SocketAddress(raw: $0) })
    }
}

/// The threads that run getaddrinfo, which can block for seconds.
///
/// Bounded, so that scripts dialing many names at once queue lookups instead of creating a thread
/// each; more than one, so that a name whose server does not answer (5 s per try) does not hold up
/// every other lookup. Threads start only when lookups are queued and none is idle, and then stay,
/// waiting on a condition. Not Dispatch: the reactor does not otherwise use it, and blocking calls
/// on its global queues would tie up the worker threads everything else in the process shares.
final class LookupThreads: @unchecked Sendable { // the queue and counters are guarded by `mutex`
    static let shared = LookupThreads()
    private static let maxThreads = 4

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var queue: [() -> Void] = []
    private var threads = 0
    private var idle = 0

    // Lives as long as the process: never deinitialized, so the mutex and condition are never freed.
    private init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    func submit(_ job: @escaping () -> Void) {
        pthread_mutex_lock(mutex)
        queue.append(job)
        let startThread = queue.count > idle && threads < LookupThreads.maxThreads
        if startThread { threads += 1 }
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
        if startThread { start() }
    }

    private func start() {
        var thread = pthread_t()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        let rc = pthread_create(&thread, &attributes, { _ in
            LookupThreads.shared.work()
            return nil
        }, nil)
        pthread_attr_destroy(&attributes)
        if rc != 0 {
            // The job stays queued for a thread that exists or the next one a submit starts; if none
            // ever does, the caller's own timeout reports the lookup.
            pthread_mutex_lock(mutex)
            threads -= 1
            pthread_mutex_unlock(mutex)
        }
    }

    private func work() {
        while true {
            pthread_mutex_lock(mutex)
            while queue.isEmpty {
                idle += 1
                pthread_cond_wait(condition, mutex)
                idle -= 1
            }
            let job = queue.removeFirst()
            pthread_mutex_unlock(mutex)
            job()
        }
    }
}
