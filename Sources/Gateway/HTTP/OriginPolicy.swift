import Foundation

/// The origin allow-list: an upgrade's Origin must match one of the patterns, as a whole, against
/// the full origin (`scheme://host[:port]`), against `host:port` or against `host`.
struct OriginPolicy {
    private let patterns: [NSRegularExpression]

    init(patterns: [String]) {
        self.patterns = patterns.compactMap(OriginPolicy.compile)
    }

    static func compile(_ pattern: String) -> NSRegularExpression? {
        try? NSRegularExpression(pattern: "^(?:" + pattern + ")$", options: [.caseInsensitive])
    }

    var allowsEveryOrigin: Bool { patterns.isEmpty }

    func allows(origin: String?) -> Bool {
        if patterns.isEmpty { return true }
        guard let origin, !origin.isEmpty else { return false }
        var candidates = [origin]
        if let schemeEnd = origin.range(of: "://") {
            let hostPort = String(origin[schemeEnd.upperBound...])
            candidates.append(hostPort)
            if let colon = hostPort.lastIndex(of: ":"), !hostPort.hasSuffix("]") {
                candidates.append(String(hostPort[..<colon]))
            }
        }
        return candidates.contains { candidate in
            let range = NSRange(candidate.startIndex..., in: candidate)
            return patterns.contains { $0.firstMatch(in: candidate, range: range) != nil }
        }
    }
}
