/// A binary min-heap of values by deadline; values with the same deadline come out in the order
/// they went in. The loop's timers use it, and so does the keystore's expiry sweep.
public struct DeadlineHeap<Value> {
    private var entries: [(deadline: UInt64, seq: UInt64, value: Value)] = []
    private var seq: UInt64 = 0

    public init() {}

    public var count: Int { entries.count }
    public var nextDeadline: UInt64? { entries.first?.deadline }

    private func less(_ a: Int, _ b: Int) -> Bool {
        entries[a].deadline != entries[b].deadline ? entries[a].deadline < entries[b].deadline : entries[a].seq < entries[b].seq
    }

    public mutating func push(_ deadline: UInt64, _ value: Value) {
        seq += 1
        entries.append((deadline, seq, value))
        var i = entries.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard less(i, parent) else { break }
            entries.swapAt(i, parent)
            i = parent
        }
    }

    /// The earliest entry if its deadline is at or before `now`, taken out.
    public mutating func popDue(now: UInt64) -> (deadline: UInt64, value: Value)? {
        guard let first = entries.first, first.deadline <= now else { return nil }
        let last = entries.removeLast()
        if !entries.isEmpty {
            entries[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < entries.count && less(l, m) { m = l }
                if r < entries.count && less(r, m) { m = r }
                if m == i { break }
                entries.swapAt(i, m)
                i = m
            }
        }
        return (first.deadline, first.value)
    }
}
