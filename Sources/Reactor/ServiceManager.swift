import CSystem

/// What a daemon tells its service manager: systemd's notify protocol (`Type=notify` units) and
/// the open-files limit.
public enum ServiceManager {
    /// Sends `state` ("READY=1", "STOPPING=1", "STATUS=...") to NOTIFY_SOCKET; nothing happens when
    /// the process was not started by systemd. Returns false when the message could not be sent.
    @discardableResult
    public static func notify(_ state: String) -> Bool {
        cs_sd_notify(state) == 0
    }

    /// Raises the soft open-files limit to the hard one (systemd starts services at 1,024);
    /// returns the limit in force, or nil when it cannot be read.
    public static func raiseOpenFilesLimit() -> Int? {
        let limit = cs_raise_nofile()
        return limit < 0 ? nil : limit
    }
}
