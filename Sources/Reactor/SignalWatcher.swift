import CSystem

/// SIGINT, SIGTERM and SIGHUP read from a signalfd on a loop, so a signal is handled as an ordinary
/// event and never interrupts a script. `blockSignals()` must run before any other thread starts:
/// threads inherit the mask, and a signal not blocked everywhere could go to a loop thread instead.
public final class SignalWatcher: IOHandler {
    private let fd: Int32
    private let received: (Int32) -> Void

    public static func blockSignals() {
        _ = cs_block_signals()
    }

    /// Watches on `loop`; `received` gets each signal number.
    public init(loop: EventLoop, received: @escaping (Int32) -> Void) {
        fd = cs_signalfd()
        self.received = received
        _ = loop.register(fd: fd, events: IOEvents.readable, handler: self)
    }

    public func ioReady(_ events: UInt32) {
        while true {
            let signal = cs_read_signal(fd)
            if signal == 0 { return }
            received(signal)
        }
    }
}
