import CLua
import LuaRuntime

/// The `Websocket` calls that span every node of a cluster (`list`, `closeAll`, `subscribers`):
/// the run waits for every other live node's reply.
extension ScriptAPI {
    /// Asks every other live node for `operation`; `answer` pushes the result made of their
    /// replies (with this node's own part, which the caller has). Without a cluster it answers at once.
    static func waitForAllNodes(_ L: OpaquePointer, _ worker: Worker, _ operation: NodeMessage.Operation, topic: String = "",
                                answer: @escaping (OpaquePointer, [NodeMessage]) -> Int32) -> Int32 {
        guard let calls = worker.remoteCalls else { return answer(L, []) }
        guard let later = LaterAnswer(L, worker.runner) else { return -1 }
        calls.callAll(operation, topic: topic) { result in
            later.answer { L in
                switch result {
                case .failure(let failure): return push(L, failure)
                case .success(let replies): return answer(L, replies)
                }
            }
        }
        return later.wait(L)
    }

    /// Pushes no result for a success, the error object for a failure.
    static func pushOutcome(_ L: OpaquePointer, _ failure: ServiceFailure?) -> Int32 {
        failure.map { push(L, $0) } ?? 0
    }
}
