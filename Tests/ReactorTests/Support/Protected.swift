import Reactor

final class Protected<Value>: @unchecked Sendable {
    private let lock = Lock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func locked<T>(_ body: (inout Value) -> T) -> T { lock.locked { body(&value) } }
}
