import Glibc

public enum LogLevel: Int, Comparable, CaseIterable {
    case debug, info, warn, error

    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }

    var label: String {
        switch self {
        case .debug: return "DEBUG"
        case .info: return "INFO"
        case .warn: return "WARN"
        case .error: return "ERROR"
        }
    }
}

/// One line per event on stderr: UTC timestamp, level, message. Multi-line messages (tracebacks)
/// are folded onto the line so log collectors keep them together.
public enum Log {
    /// Set once at start-up, before any loop runs.
    public nonisolated(unsafe) static var level = LogLevel.info

    @inline(__always)
    public static func enabled(_ l: LogLevel) -> Bool { l >= level }

    public static func debug(_ message: @autoclosure () -> String) { write(.debug, message) }
    public static func info(_ message: @autoclosure () -> String) { write(.info, message) }
    public static func warn(_ message: @autoclosure () -> String) { write(.warn, message) }
    public static func error(_ message: @autoclosure () -> String) { write(.error, message) }

    private static func write(_ l: LogLevel, _ message: () -> String) {
        guard l >= level else { return }
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var tm = tm()
        var seconds = ts.tv_sec
        gmtime_r(&seconds, &tm)
        let stamp = String(format4: Int(tm.tm_year) + 1900) + "-" + pad2(tm.tm_mon + 1) + "-" + pad2(tm.tm_mday)
            + "T" + pad2(tm.tm_hour) + ":" + pad2(tm.tm_min) + ":" + pad2(tm.tm_sec)
            + "." + pad3(Int(ts.tv_nsec / 1_000_000)) + "Z"
        let body = message().split(separator: "\n", omittingEmptySubsequences: false).joined(separator: " | ")
        var line = stamp + " " + l.label + " " + body + "\n"
        line.withUTF8 { buffer in _ = Glibc.write(2, buffer.baseAddress, buffer.count) }
    }

    private static func pad2(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
    private static func pad3(_ v: Int) -> String { v < 10 ? "00\(v)" : (v < 100 ? "0\(v)" : "\(v)") }
}

private extension String {
    init(format4 v: Int) { self = String(v) }
}
