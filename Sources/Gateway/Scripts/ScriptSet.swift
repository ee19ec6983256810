import Foundation
import LuaRuntime

/// The scripts of the endpoints folder at one moment: routes and the source of every script, each
/// checked to compile. Files starting with "_" are no routes: the event handler and the scripts of
/// outbound connections.
struct ScriptSet {
    var routes: [Route] = []
    /// Sources by file relative to the endpoints folder, "_" files included.
    var sources: [String: [UInt8]] = [:]

    var hasEventHandler: Bool { sources[Router.eventHandlerFile] != nil }

    /// A script that failed to compile or could not be read, with the reason (file and line).
    struct Problem {
        let file: String
        let message: String
    }

    /// Reads the folder. A script that does not compile is reported; with `previous`, its previous
    /// version is kept in service, else it is left out.
    static func load(folder: String, previous: ScriptSet?) throws(ConfigError) -> (ScriptSet, [Problem]) {
        let files = try Router.scriptFiles(in: folder)
        let routes = files.filter { !Router.isPrivate($0) }.map { Route(file: $0) }
        let probe = LuaState()
        var set = ScriptSet()
        var problems: [Problem] = []
        for file in files {
            let path = (folder as NSString).appendingPathComponent(file)
            let failure: String
            if let data = FileManager.default.contents(atPath: path) {
                let source = [UInt8](data)
                if previous?.sources[file] == source {
                    set.sources[file] = source
                    continue
                }
                switch probe.compile(source, chunkName: path) {
                case .success(let ref):
                    probe.release(ref)
                    set.sources[file] = source
                    continue
                case .failure(let error):
                    failure = "does not compile: \(error.message)"
                }
            } else {
                failure = "cannot be read"
            }
            problems.append(Problem(file: path, message: "script \(path) \(failure)"))
            if let old = previous?.sources[file] { set.sources[file] = old }
        }
        set.routes = routes.filter { set.sources[$0.file] != nil }
        return (set, problems)
    }
}

/// One script compiled in one loop's Lua state. Sockets hold it, so a new version of the file
/// takes effect at their next event; `removed` marks a file that is gone.
final class EndpointScript {
    let file: String
    var source: [UInt8]
    var ref: Int32
    var removed = false
    /// Runs started and runs that failed, on this loop (for /metrics).
    var runs = 0
    var errors = 0
    /// The `route` label of its metrics: the route pattern, or the file of a script that is no route.
    let metricsRoute: String

    /// The catch-all event handler (read for every event: compared once).
    let isEventHandler: Bool

    init(file: String, source: [UInt8], ref: Int32) {
        self.file = file
        self.source = source
        self.ref = ref
        metricsRoute = Router.isPrivate(file) ? file : Route(file: file).pattern
        isEventHandler = file == Router.eventHandlerFile
    }
}
