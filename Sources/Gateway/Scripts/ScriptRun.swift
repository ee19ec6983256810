import LuaRuntime

/// A script run that waits (for `sleep`, an HTTP response): its Lua coroutine, what it runs for,
/// and the wait in progress. Exists only while the run is suspended; the runner resumes it when
/// the wait's answer comes, or abandons it at `scripts.waitTimeoutMs`.
final class ScriptRun {
    enum Subject {
        /// A socket's event: the socket's later events wait for this run (see `Connection.waitingRun`).
        case socket(Connection, ScriptEvent)
        /// An outbound connection's event: its later events wait too (`OutboundLink.waitingRun`).
        case link(OutboundLink, OutboundEvent)
        /// An HTTP request to an endpoint script: its connection reads nothing more until it answers.
        case http(HTTPEndpointCall)
        /// The connect hook for an upgrade: the 101 (or the refusal) waits for it.
        case gate(ConnectGate)
    }

    let lua: LuaRun
    let subject: Subject
    let script: EndpointScript
    /// Loop time when the run started, for `scripts.waitTimeoutMs`.
    let startedAt: UInt64
    /// Numbers the run's waits: an answer resumes the run only while its wait is the current one.
    private(set) var wait = 0
    /// Stops the current wait's work (closes an HTTP request's socket) when the run is abandoned.
    var cancelWait: (() -> Void)?
    private(set) var ended = false
    /// The socket closed while the run waited: its close event runs once the run has ended.
    var closeDeferred = false

    init(lua: LuaRun, subject: Subject, script: EndpointScript, startedAt: UInt64) {
        self.lua = lua
        self.subject = subject
        self.script = script
        self.startedAt = startedAt
    }

    /// Starts a new wait; returns its number.
    func nextWait() -> Int {
        wait += 1
        cancelWait = nil
        return wait
    }

    func end() {
        ended = true
        cancelWait = nil
    }

    /// Whether the answer to wait `number` may resume the run.
    func accepts(_ number: Int) -> Bool { !ended && wait == number }

    /// The route and socket a log line about this run names (an outbound link has neither).
    var route: String? {
        switch subject {
        case .socket(let connection, _): return connection.info?.route
        case .link: return nil
        case .http(let call): return call.route
        case .gate(let gate): return gate.upgrade.route
        }
    }

    var socketId: String? {
        switch subject {
        case .socket(let connection, _): return connection.socketId
        case .link, .http: return nil
        case .gate(let gate): return gate.upgrade.socketId
        }
    }

    /// What ran: "event=data", "outbound=name event=open", "http", "connect".
    var what: String {
        switch subject {
        case .socket(_, let event): return "event=\(event.name)"
        case .link(let link, let event): return "outbound=\(link.name) event=\(event.name)"
        case .http: return "http"
        case .gate: return "connect"
        }
    }
}
