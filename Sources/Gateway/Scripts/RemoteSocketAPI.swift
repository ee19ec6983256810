import CLua
import CLuaSupport
import LuaRuntime

/// The cluster half of the `Websocket` service: a call on a socket of another node, or on every
/// node's sockets, waits for the replies (`RemoteCalls`) and answers what a local call would.
extension ScriptAPI {
    /// Waits for `request`'s reply from `node`; a successful reply is pushed by `answer`.
    static func waitForNode(_ L: OpaquePointer, _ worker: Worker, _ request: NodeMessage, to node: String,
                            answer: @escaping (OpaquePointer, NodeMessage) -> Int32) -> Int32 {
        guard let calls = worker.remoteCalls else { return push(L, .notFound("socket \(request.socket) is not open")) }
        worker.runner.suspendRun(L) { [unowned worker] run, wait in
            calls.call(request, to: node) { [weak run] result in
                guard let run else { return }
                worker.runner.resume(run, wait: wait) { thread in
                    LuaState.withMemoryLimitSuspended(thread) {
                        switch result.flatMap({ reply in reply.outcome.map { _ in reply } }) {
                        case .failure(let failure): return push(thread, failure)
                        case .success(let reply): return answer(thread, reply)
                        }
                    }
                }
            }
        }
        return -1
    }

    /// Waits for every other live node's reply to `operation`; `answer` pushes the result made of
    /// them together with this node's own part.
    static func waitForAllNodes(_ L: OpaquePointer, _ worker: Worker, _ operation: NodeMessage.Operation, topic: String = "",
                                answer: @escaping (OpaquePointer, [NodeMessage]) -> Int32) -> Int32 {
        guard let calls = worker.remoteCalls else { return answer(L, []) }
        worker.runner.suspendRun(L) { [unowned worker] run, wait in
            calls.callAll(operation, topic: topic) { [weak run] result in
                guard let run else { return }
                worker.runner.resume(run, wait: wait) { thread in
                    LuaState.withMemoryLimitSuspended(thread) {
                        switch result {
                        case .failure(let failure): return push(thread, failure)
                        case .success(let replies): return answer(thread, replies)
                        }
                    }
                }
            }
        }
        return -1
    }

    /// `Websocket.info` of a socket of another node: its fields as that node sent them.
    static func remoteInfo(_ L: OpaquePointer, _ worker: Worker, socket: String, on node: String) -> Int32 {
        var request = worker.remoteCalls!.request(.info)
        request.socket = socket
        return waitForNode(L, worker, request, to: node) { L, reply in
            let failed = reply.payload.withUnsafeBytes { JSONBridge.decode(L, $0) }
            if failed != nil { return push(L, .badGateway("node \(node) sent an unreadable info object")) }
            lua_pushswift(L, "open")
            lua_setfield(L, -2, "type")
            return 1
        }
    }
}
