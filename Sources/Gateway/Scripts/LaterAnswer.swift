import CLua
import CLuaSupport
import LuaRuntime

/// The answer a run waits for from an operation that answers later (another node's): the run is
/// known once it has suspended, the answer whenever it comes, and the second of the two resumes
/// the run with what the answer pushes. Made only where the run may wait (`cls_may_wait`): a call
/// that cannot wait passes no `then`, starts nothing, and its waiting function raises the error.
final class LaterAnswer {
    private unowned let runner: ScriptRunner
    private weak var run: ScriptRun?
    private var wait = 0
    private var suspended = false
    private var pending: ((OpaquePointer) -> Int32)?

    init?(_ L: OpaquePointer, _ runner: ScriptRunner) {
        guard cls_may_wait(L) != 0 else { return nil }
        self.runner = runner
    }

    /// Suspends the calling run until the answer; the waiting function's prepare returns this (-1).
    func wait(_ L: OpaquePointer) -> Int32 {
        runner.suspendRun(L) { [self] run, wait in
            self.run = run
            self.wait = wait
            suspended = true
            if let pending { resume(pending) }
        }
        return -1
    }

    /// A `then` for an operation: its value, pushed by `push`, answers the run.
    func then<T>(_ push: @escaping (OpaquePointer, T) -> Int32) -> (T) -> Void {
        { [self] value in answer { push($0, value) } }
    }

    func answer(_ push: @escaping (OpaquePointer) -> Int32) {
        guard suspended else {
            pending = push
            return
        }
        resume(push)
    }

    private func resume(_ push: @escaping (OpaquePointer) -> Int32) {
        pending = nil
        // An abandoned run is gone: its answer goes nowhere.
        guard let run else { return }
        runner.resume(run, wait: wait) { thread in LuaState.withMemoryLimitSuspended(thread) { push(thread) } }
    }
}
