import Foundation
import WebSocketCodec

/// A route: an endpoint script and the URL path pattern its file name gives.
public struct Route: Equatable {
    public enum Segment: Equatable {
        case literal(String)
        case parameter(String)

        var isLiteral: Bool {
            if case .literal = self { return true }
            return false
        }
    }

    /// The pattern as scripts see it, e.g. "/chat/{room}".
    public let pattern: String
    public let segments: [Segment]
    /// The script's path relative to the endpoints folder, e.g. "chat/{room}.lua".
    public let file: String
    /// An HTTP endpoint script (`NAME.http.lua`): plain HTTP requests, not WebSockets.
    public let isHTTP: Bool

    public init(file: String) {
        self.file = file
        isHTTP = file.hasSuffix(".http.lua")
        let stem = isHTTP ? String(file.dropLast(9)) : file.hasSuffix(".lua") ? String(file.dropLast(4)) : file
        pattern = "/" + stem
        segments = stem.split(separator: "/").map { part in
            if part.count > 2, part.first == "{", part.last == "}" {
                return .parameter(String(part.dropFirst().dropLast()))
            }
            return .literal(String(part))
        }
    }
}

/// Maps request paths to routes; a literal segment beats a parameter at the first position where
/// two matching routes differ.
public struct Router {
    public let routes: [Route]

    public init(routes: [Route]) {
        self.routes = routes
    }

    public struct Match {
        public let routeIndex: Int
        /// Path parameters, percent-decoded.
        public let parameters: [(name: String, value: String)]
    }

    public func match(path: String) -> Match? {
        // Split and decoded once, over UTF-8: splitting and searching a String by Characters cost
        // more than the rest of routing an upgrade.
        let parts = path.utf8.split(separator: UInt8(ascii: "/")).map {
            URLComponentsDecoding.percentDecode(Substring($0), plusAsSpace: false)
        }
        var best: Int?
        for (index, route) in routes.enumerated() where route.segments.count == parts.count {
            let matches = zip(route.segments, parts).allSatisfy { segment, part in
                if case .literal(let text) = segment { return text == part }
                return true
            }
            guard matches else { continue }
            if let current = best, !Router.moreSpecific(route, than: routes[current]) { continue }
            best = index
        }
        guard let best else { return nil }
        var parameters: [(name: String, value: String)] = []
        for (segment, part) in zip(routes[best].segments, parts) {
            if case .parameter(let name) = segment { parameters.append((name, part)) }
        }
        return Match(routeIndex: best, parameters: parameters)
    }

    /// At the first position where one has a literal segment and the other a parameter, `a` has
    /// the literal.
    private static func moreSpecific(_ a: Route, than b: Route) -> Bool {
        for (x, y) in zip(a.segments, b.segments) where x.isLiteral != y.isLiteral { return x.isLiteral }
        return false
    }

    /// The file name of the optional catch-all event handler in the endpoints folder.
    public static let eventHandlerFile = "_websocket_info.lua"

    /// The file name of the optional hook run before every upgrade (it may refuse it).
    public static let connectHookFile = "_connect.lua"

    /// Every `.lua` file below `folder` as a route, sorted by file, except where the file or a folder
    /// on its path starts with "_" (the event handler and outbound connections' scripts live there).
    public static func discover(in folder: String) throws(ConfigError) -> [Route] {
        try scriptFiles(in: folder).filter { !isPrivate($0) }.map { Route(file: $0) }
    }

    /// Whether a script file is no route: its name or a folder on its path starts with "_".
    static func isPrivate(_ file: String) -> Bool {
        file.split(separator: "/").contains { $0.hasPrefix("_") }
    }

    /// Every `.lua` file below `folder`, relative and sorted, except hidden ones (a name on the path
    /// starting with ".", such as the timestamped folders of a Kubernetes ConfigMap mount; symlinks
    /// to files are followed).
    static func scriptFiles(in folder: String) throws(ConfigError) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue,
              FileManager.default.isReadableFile(atPath: folder),
              // The enumerator does not descend into a folder given as a symlink: resolve it first.
              let enumerator = FileManager.default.enumerator(atPath: URL(fileURLWithPath: folder).resolvingSymlinksInPath().path) else {
            throw ConfigError(message: "endpoints folder \(folder) cannot be read")
        }
        var files: [String] = []
        while let relative = enumerator.nextObject() as? String {
            var isFolder: ObjCBool = false
            guard relative.hasSuffix(".lua"),
                  !relative.split(separator: "/").contains(where: { $0.hasPrefix(".") }),
                  FileManager.default.fileExists(atPath: folder + "/" + relative, isDirectory: &isFolder),
                  !isFolder.boolValue else { continue }
            files.append(relative)
        }
        return files.sorted()
    }
}
