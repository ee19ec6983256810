import Reactor

/// The connections of one loop that wait for a deadline: the upgrade request's, the close
/// handshake's, the lingering close's. One check every `granularity` while any wait acts on those
/// past theirs. A connection holds its place in the list, so leaving costs O(1) and nothing is
/// allocated per connection: a timer and a closure per connection held memory for the whole
/// timeout (10 s for an upgrade request), tens of megabytes at thousands of handshakes a second.
final class Deadlines {
    enum Kind {
        /// No complete upgrade request within limits.handshakeTimeoutMs.
        case request
        /// Our close frame unanswered (the session decides whether its timeout has passed).
        case closeHandshake
        /// Write half shut, waiting for the peer's EOF; or a slow reader given a last second.
        case linger
    }

    static let granularityNanos: UInt64 = 100_000_000

    private unowned let loop: EventLoop
    private var waiting: [Connection] = []
    private var armed = false

    init(loop: EventLoop) {
        self.loop = loop
    }

    /// How many connections wait.
    var count: Int { waiting.count }

    func set(_ connection: Connection, _ kind: Kind, after nanos: UInt64) {
        connection.deadline = (loop.now + nanos, kind)
        if connection.deadlineIndex < 0 {
            connection.deadlineIndex = waiting.count
            waiting.append(connection)
        }
        arm()
    }

    func clear(_ connection: Connection) {
        let index = connection.deadlineIndex
        guard index >= 0 else { return }
        let last = waiting.removeLast()
        if index < waiting.count {
            waiting[index] = last
            last.deadlineIndex = index
        }
        connection.deadlineIndex = -1
    }

    private func arm() {
        guard !armed else { return }
        armed = true
        loop.schedule(after: Deadlines.granularityNanos) { [unowned self] in
            armed = false
            check()
            if !waiting.isEmpty { arm() }
        }
    }

    /// Acts on every connection past its deadline. Backwards, so the swap of a leaving connection
    /// (an action may close others too) never skips one not yet seen.
    private func check() {
        let now = loop.now
        var i = waiting.count - 1
        while i >= 0 {
            if i < waiting.count, waiting[i].deadline.at <= now {
                let connection = waiting[i]
                clear(connection)
                connection.deadlinePassed(connection.deadline.kind)
            }
            i -= 1
        }
    }
}
