/// A per-connection token bucket, kept as a theoretical arrival time (GCRA) in whole nanoseconds so
/// the rate is exact however the takes are spaced. Time is monotonic nanoseconds from the caller.
public struct TokenBucket {
    /// When the bucket would be full again if nothing more were taken.
    private var fullAt: UInt64

    public init(now: UInt64) {
        fullAt = now
    }

    @inline(__always)
    private static func interval(_ rate: Double) -> UInt64 { UInt64((1e9 / rate).rounded()) }

    /// Takes one token if one is available: at most `burst` at once, refilled at `rate` a second.
    public mutating func take(now: UInt64, rate: Double, burst: Int) -> Bool {
        let interval = TokenBucket.interval(rate)
        let start = max(fullAt, now)
        guard start - now <= interval * UInt64(max(burst, 1) - 1) else { return false }
        fullAt = start + interval
        return true
    }

    /// Nanoseconds until a token is due (0 when one is available now).
    public func nanosUntilToken(now: UInt64, rate: Double, burst: Int) -> UInt64 {
        let interval = TokenBucket.interval(rate)
        let tolerance = interval * UInt64(max(burst, 1) - 1)
        let available = fullAt > tolerance ? fullAt - tolerance : 0
        return available > now ? available - now : 0
    }
}
