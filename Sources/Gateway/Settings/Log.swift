import Logging

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

    fileprivate var loggerLevel: Logger.Level {
        switch self {
        case .debug: return .debug
        case .info: return .info
        case .warn: return .warning
        case .error: return .error
        }
    }
}

/// The gateway's log, one line per event on stderr through swift-log (`LineLogHandler`). The
/// level is checked here first, so a disabled line costs no message, and both the level and the
/// format change on SIGHUP. Events about one socket or route say which, as fields of their own.
public enum Log {
    /// Set at start-up and on reload, before loops read them.
    public nonisolated(unsafe) static var level = LogLevel.info
    public nonisolated(unsafe) static var format = LogFormat.text

    private static let logger = Logger(label: "wsgate") { _ in LineLogHandler() }

    @inline(__always)
    public static func enabled(_ l: LogLevel) -> Bool { l >= level }

    public static func debug(_ message: @autoclosure () -> String, socket: String? = nil, route: String? = nil) {
        write(.debug, message, socket, route)
    }
    public static func info(_ message: @autoclosure () -> String, socket: String? = nil, route: String? = nil) {
        write(.info, message, socket, route)
    }
    public static func warn(_ message: @autoclosure () -> String, socket: String? = nil, route: String? = nil) {
        write(.warn, message, socket, route)
    }
    public static func error(_ message: @autoclosure () -> String, socket: String? = nil, route: String? = nil) {
        write(.error, message, socket, route)
    }

    private static func write(_ l: LogLevel, _ message: () -> String, _ socket: String?, _ route: String?) {
        guard l >= level else { return }
        var metadata: Logger.Metadata?
        if socket != nil || route != nil {
            var fields = Logger.Metadata()
            if let socket { fields["socket_id"] = .string(socket) }
            if let route { fields["route"] = .string(route) }
            metadata = fields
        }
        logger.log(level: l.loggerLevel, "\(message())", metadata: metadata)
    }
}
