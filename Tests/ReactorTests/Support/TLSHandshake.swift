import CTLS
import Foundation
import Reactor

// One loop to drive a handshake between any two ends: TLSStream in either role, TestClient, or
// BareTLSServer.

/// One end of a handshake under test.
protocol HandshakeEnd: AnyObject {
    associatedtype Status: Equatable
    /// Before the first call: nothing read yet.
    static var initialStatus: Status { get }
    /// One step; call again while the status is pending.
    func handshake() -> Status
    /// The status asks for another call once the socket is ready.
    static func isPending(_ status: Status) -> Bool
    /// The handshake finished.
    static func isDone(_ status: Status) -> Bool
    /// What to poll for before the next call, after a pending status.
    static func waitEvents(after status: Status) -> Int16
}

extension TLSStatus {
    var waitEvents: Int16 { self == .wantWrite ? pollOut : pollIn }
}

extension TLSStream: HandshakeEnd {
    static var initialStatus: TLSStatus { .wantRead }
    static func isPending(_ status: TLSStatus) -> Bool { status == .wantRead || status == .wantWrite }
    static func isDone(_ status: TLSStatus) -> Bool { status == .done }
    static func waitEvents(after status: TLSStatus) -> Int16 { status.waitEvents }
}

/// An end driven through `ctls_handshake`, whose status is CTLS_OK, CTLS_WANT_*, CTLS_CLOSED or CTLS_FAILED.
protocol CTLSHandshakeEnd: HandshakeEnd where Status == Int32 {}

extension CTLSHandshakeEnd {
    static var initialStatus: Int32 { Int32(CTLS_WANT_READ) }
    static func isPending(_ status: Int32) -> Bool { status == CTLS_WANT_READ || status == CTLS_WANT_WRITE }
    static func isDone(_ status: Int32) -> Bool { status == CTLS_OK }
    static func waitEvents(after status: Int32) -> Int16 { status == CTLS_WANT_WRITE ? pollOut : pollIn }
}

extension TestClient: CTLSHandshakeEnd {}
extension BareTLSServer: CTLSHandshakeEnd {}

/// Drives both handshakes until both finish or either side stops; returns both outcomes.
func handshakeBoth<Server: HandshakeEnd, Client: HandshakeEnd>(_ server: Server, _ pair: SocketPair, _ client: Client,
                                                                timeout: TimeInterval = 10)
    -> (server: Server.Status, client: Client.Status) {
    var serverStatus = Server.initialStatus
    var clientStatus = Client.initialStatus
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if Server.isPending(serverStatus) { serverStatus = server.handshake() }
        if Client.isPending(clientStatus) { clientStatus = client.handshake() }
        let serverPending = Server.isPending(serverStatus)
        let clientPending = Client.isPending(clientStatus)
        if !serverPending && !clientPending { break }
        // One side finished or failed while the other still waits: give it a last chance to see why.
        if !serverPending && !Server.isDone(serverStatus) || !clientPending && !Client.isDone(clientStatus) {
            waitFor([(pair.client, pollIn), (pair.server, pollIn)], timeoutMs: 50)
            if serverPending { serverStatus = server.handshake() }
            if clientPending { clientStatus = client.handshake() }
            break
        }
        var fds: [(Int32, Int16)] = []
        if serverPending { fds.append((pair.server, Server.waitEvents(after: serverStatus))) }
        if clientPending { fds.append((pair.client, Client.waitEvents(after: clientStatus))) }
        waitFor(fds)
    }
    return (serverStatus, clientStatus)
}
