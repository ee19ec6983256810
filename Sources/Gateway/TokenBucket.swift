/// A per-connection token bucket: `rate` tokens a second, holding at most `burst`.
/// Time is monotonic nanoseconds supplied by the caller, so the bucket itself never reads a clock.
public struct TokenBucket {
    private var tokens: Double
    private var last: UInt64

    public init(burst: Int, now: UInt64) {
        tokens = Double(burst)
        last = now
    }

    private mutating func refill(now: UInt64, rate: Double, burst: Int) {
        if now > last {
            tokens = min(Double(max(burst, 1)), tokens + Double(now - last) * rate / 1e9)
        }
        last = now
    }

    /// Takes one token if one is available.
    public mutating func take(now: UInt64, rate: Double, burst: Int) -> Bool {
        refill(now: now, rate: rate, burst: burst)
        if tokens >= 1 {
            tokens -= 1
            return true
        }
        return false
    }

    /// Nanoseconds until a token is due (0 when one is available now).
    public mutating func nanosUntilToken(now: UInt64, rate: Double, burst: Int) -> UInt64 {
        refill(now: now, rate: rate, burst: burst)
        return tokens >= 1 ? 0 : UInt64(((1 - tokens) * 1e9 / rate).rounded(.up))
    }
}
