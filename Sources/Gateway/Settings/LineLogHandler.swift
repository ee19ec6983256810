import Glibc
import Logging

/// How a log line looks: `text` is "timestamp LEVEL [route=… socket=…] message", `json` one object
/// a line with `ts`, `level`, `msg`, and `socket_id` / `route` where they apply.
public enum LogFormat: String, CaseIterable {
    case text, json
}

/// swift-log's handler for the gateway: every event becomes one line on stderr, written with one
/// `write(2)` so lines from different loops never interleave. Multi-line messages (tracebacks)
/// are folded onto their line in text (" | ") and escaped in JSON, so log collectors keep them
/// together. Filtering is done before the logger is called (`Log.level` is reloadable), so this
/// handler takes every level.
struct LineLogHandler: LogHandler {
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var line = render(event, format: Log.format, at: Self.realtime())
        line.withUTF8 { buffer in _ = Glibc.write(2, buffer.baseAddress, buffer.count) }
    }

    /// The line for one event, newline included.
    func render(_ event: LogEvent, format: LogFormat, at time: timespec) -> String {
        let stamp = Self.timestamp(time)
        let fields = self.metadata.merging(event.metadata ?? [:]) { $1 }
        let route = fields["route"].map { "\($0)" }
        let socket = fields["socket_id"].map { "\($0)" }
        let message = event.message.description
        switch format {
        case .text:
            var line = stamp + " " + Self.label(event.level) + " "
            if let route { line += "route=" + route + " " }
            if let socket { line += "socket=" + socket + " " }
            return line + message.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: " | ") + "\n"
        case .json:
            var line = "{\"ts\":\"" + stamp + "\",\"level\":\"" + Self.label(event.level).lowercased() + "\",\"msg\":"
            JSONText.append(message, to: &line)
            if let socket { line += ",\"socket_id\":"; JSONText.append(socket, to: &line) }
            if let route { line += ",\"route\":"; JSONText.append(route, to: &line) }
            return line + "}\n"
        }
    }

    static func label(_ level: Logger.Level) -> String {
        switch level {
        case .trace, .debug: return "DEBUG"
        case .info, .notice: return "INFO"
        case .warning: return "WARN"
        case .error, .critical: return "ERROR"
        }
    }

    static func realtime() -> timespec {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return ts
    }

    /// ISO 8601 UTC with milliseconds.
    static func timestamp(_ ts: timespec) -> String {
        var tm = tm()
        var seconds = ts.tv_sec
        gmtime_r(&seconds, &tm)
        return String(Int(tm.tm_year) + 1900) + "-" + pad(Int(tm.tm_mon) + 1, 2) + "-" + pad(Int(tm.tm_mday), 2)
            + "T" + pad(Int(tm.tm_hour), 2) + ":" + pad(Int(tm.tm_min), 2) + ":" + pad(Int(tm.tm_sec), 2)
            + "." + pad(Int(ts.tv_nsec / 1_000_000), 3) + "Z"
    }

    private static func pad(_ value: Int, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }
}
