import LuaRuntime
import XCTest

extension LuaState {
    /// Starts a run that must not wait, and returns its failure.
    func runToEnd(_ ref: Int32, in global: EventGlobal, handler: StaticString? = nil, file: StaticString = #filePath, line: UInt = #line) -> String? {
        switch start(ref, in: global, handler: handler) {
        case .finished(let failure, _):
            return failure
        case .suspended(let run):
            XCTFail("the run waits", file: file, line: line)
            abandon(run)
            return "suspended"
        }
    }
}
