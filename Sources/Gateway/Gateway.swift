import CSystem
import Foundation
import LuaRuntime
import Reactor

/// A start-up failure: the message names the key or file at fault; the process exits with 2.
public struct StartupError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// The running gateway: one worker per loop, all listening on the same port.
public final class Gateway {
    private let shared: SharedState
    public let port: Int

    /// Loads routes and scripts, compiles every script once to report errors, and binds the port.
    public init(config: GatewayConfig) throws(StartupError) {
        Log.level = config.logLevel
        let folder = config.endpoints
        let routes: [Route]
        do { routes = try Router.discover(in: folder) } catch { throw StartupError(message: error.message) }
        let probe = LuaState()
        func load(_ file: String) throws(StartupError) -> [UInt8] {
            let path = (folder as NSString).appendingPathComponent(file)
            guard let data = FileManager.default.contents(atPath: path) else {
                throw StartupError(message: "script \(path) cannot be read")
            }
            let source = [UInt8](data)
            if case .failure(let error) = probe.compile(source, chunkName: path) {
                throw StartupError(message: "script \(path) does not compile: \(error.message)")
            }
            return source
        }
        let scripts = try routes.map { (route) throws(StartupError) in try load(route.file) }
        let handlerPath = (folder as NSString).appendingPathComponent(Router.eventHandlerFile)
        let eventHandler = FileManager.default.fileExists(atPath: handlerPath) ? try load(Router.eventHandlerFile) : nil
        shared = SharedState(config: config, router: Router(routes: routes), scripts: scripts, eventHandler: eventHandler, endpointsFolder: folder)

        cs_ignore_sigpipe()
        var listeners: [Int32] = []
        var port = config.port
        for _ in 0..<config.effectiveWorkers {
            do {
                let fd = try Socket.listen(host: config.host, port: UInt16(port))
                port = Socket.localPort(fd)
                listeners.append(fd)
            } catch {
                throw StartupError(message: "\(error)")
            }
        }
        self.port = port
        shared.workers = listeners.enumerated().map { Worker(index: $0.offset, shared: shared, listenFd: $0.element) }
        for route in routes { Log.info("route \(route.pattern) -> \(route.file)") }
        if eventHandler != nil { Log.info("event handler \(Router.eventHandlerFile) serves every other path") }
    }

    /// Starts the loops and blocks until SIGINT or SIGTERM.
    public func run() -> Int32 {
        _ = cs_block_signals()
        for worker in shared.workers { worker.start() }
        Log.info("wsgate listening on \(shared.config.host):\(port) with \(shared.workers.count) loops")
        while true {
            let signal = cs_wait_signal()
            if signal == SIGINT || signal == SIGTERM {
                Log.info("signal \(signal): stopping")
                return 0
            }
        }
    }
}
