/// One element of a `Sec-WebSocket-Extensions` value: `name; a; b=1; c="2"`.
public struct WebSocketExtension: Equatable {
    public struct Parameter: Equatable {
        public var name: String
        /// nil for a parameter without "=". A quoted value is stored unquoted and unescaped.
        public var value: String?

        public init(name: String, value: String? = nil) {
            self.name = name
            self.value = value
        }
    }

    /// As it appears on the wire; names are compared case-sensitively (RFC 7692 defines them in lower case).
    public var name: String
    public var parameters: [Parameter]

    public init(name: String, parameters: [Parameter] = []) {
        self.name = name
        self.parameters = parameters
    }

    /// Parses a `Sec-WebSocket-Extensions` value (RFC 6455 section 9.1); several header lines may be
    /// joined with ", ". Whitespace around ";", "," and "=" is allowed and empty list elements are
    /// skipped. Returns nil when the value is not syntactically valid: with a broken element the
    /// boundaries of the others cannot be trusted either.
    public static func parse(_ header: String) -> [WebSocketExtension]? {
        var parser = ExtensionHeaderParser(Array(header.utf8))
        return parser.parseList()
    }
}

private struct ExtensionHeaderParser {
    let bytes: [UInt8]
    var i = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func parseList() -> [WebSocketExtension]? {
        var result: [WebSocketExtension] = []
        while true {
            skipSpace()
            if i == bytes.count { return result }
            if bytes[i] == UInt8(ascii: ",") { // empty list element
                i += 1
                continue
            }
            guard let name = token() else { return nil }
            var parameters: [WebSocketExtension.Parameter] = []
            skipSpace()
            while i < bytes.count && bytes[i] == UInt8(ascii: ";") {
                i += 1
                skipSpace()
                guard let parameterName = token() else { return nil }
                skipSpace()
                var value: String?
                if i < bytes.count && bytes[i] == UInt8(ascii: "=") {
                    i += 1
                    skipSpace()
                    if i < bytes.count && bytes[i] == UInt8(ascii: "\"") {
                        guard let quoted = quotedString() else { return nil }
                        value = quoted
                    } else {
                        guard let plain = token() else { return nil }
                        value = plain
                    }
                    skipSpace()
                }
                parameters.append(.init(name: parameterName, value: value))
            }
            result.append(WebSocketExtension(name: name, parameters: parameters))
            if i == bytes.count { return result }
            guard bytes[i] == UInt8(ascii: ",") else { return nil }
            i += 1
        }
    }

    mutating func skipSpace() {
        while i < bytes.count && (bytes[i] == 0x20 || bytes[i] == 0x09) { i += 1 }
    }

    /// RFC 7230 tchar.
    static func isTokenByte(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
             UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
             UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    mutating func token() -> String? {
        let start = i
        while i < bytes.count && Self.isTokenByte(bytes[i]) { i += 1 }
        return i > start ? String(decoding: bytes[start..<i], as: UTF8.self) : nil
    }

    /// A quoted-string starting at the opening quote; backslash escapes one byte.
    mutating func quotedString() -> String? {
        i += 1
        var value: [UInt8] = []
        while i < bytes.count {
            let c = bytes[i]
            i += 1
            switch c {
            case UInt8(ascii: "\""):
                return String(decoding: value, as: UTF8.self)
            case UInt8(ascii: "\\"):
                guard i < bytes.count, bytes[i] == 0x09 || bytes[i] >= 0x20, bytes[i] != 0x7F else { return nil }
                value.append(bytes[i])
                i += 1
            case 0x09, 0x20...0x7E, 0x80...0xFF:
                value.append(c)
            default:
                return nil
            }
        }
        return nil // unterminated
    }
}

/// The parameters in force on a connection once permessage-deflate is negotiated (RFC 7692).
/// Names follow the RFC: `server*` describes what the server sends, `client*` what the client sends,
/// whichever side this endpoint is. See `sending(as:)` and `receiving(as:)`.
public struct DeflateSettings: Equatable, Sendable {
    /// The server resets its compressor after every message.
    public var serverNoContextTakeover: Bool
    /// The client resets its compressor after every message.
    public var clientNoContextTakeover: Bool
    /// The LZ77 window (base-2 log, 8...15) the server compresses with at most.
    public var serverMaxWindowBits: Int
    /// The LZ77 window (base-2 log, 8...15) the client compresses with at most.
    public var clientMaxWindowBits: Int

    public init(serverNoContextTakeover: Bool = false, clientNoContextTakeover: Bool = false,
                serverMaxWindowBits: Int = 15, clientMaxWindowBits: Int = 15) {
        self.serverNoContextTakeover = serverNoContextTakeover
        self.clientNoContextTakeover = clientNoContextTakeover
        self.serverMaxWindowBits = serverMaxWindowBits
        self.clientMaxWindowBits = clientMaxWindowBits
    }

    /// How this endpoint compresses: the window for its `MessageDeflater` and whether to pass
    /// `resetAfter: true` (no context takeover; the deflater may then be shared by connections).
    public func sending(as role: Role) -> (windowBits: Int, noContextTakeover: Bool) {
        switch role {
        case .server: return (serverMaxWindowBits, serverNoContextTakeover)
        case .client: return (clientMaxWindowBits, clientNoContextTakeover)
        }
    }

    /// How this endpoint decompresses: the window for its `MessageInflater` and whether the peer
    /// resets after every message (then `resetAfter: true`, and the inflater may be shared).
    public func receiving(as role: Role) -> (windowBits: Int, noContextTakeover: Bool) {
        switch role {
        case .server: return (clientMaxWindowBits, clientNoContextTakeover)
        case .client: return (serverMaxWindowBits, serverNoContextTakeover)
        }
    }
}

/// What an endpoint is willing to negotiate. Names follow the RFC as in `DeflateSettings`.
///
/// As a server: `serverNoContextTakeover` / `clientNoContextTakeover` are required of every
/// connection (they make one shared deflater and inflater per loop possible); `serverMaxWindowBits`
/// caps our compression window (9...15: zlib cannot produce a raw stream with an 8-bit window);
/// `clientMaxWindowBits` caps the client's window when the client offers to accept a cap (8...15).
///
/// As a client: the same fields become the offer, and a response that does not grant
/// `serverNoContextTakeover` / `serverMaxWindowBits` is refused.
/// Out-of-range window bits are clamped when used.
public struct DeflatePolicy: Equatable, Sendable {
    public var serverNoContextTakeover: Bool
    public var clientNoContextTakeover: Bool
    public var serverMaxWindowBits: Int
    public var clientMaxWindowBits: Int

    public init(serverNoContextTakeover: Bool = true, clientNoContextTakeover: Bool = true,
                serverMaxWindowBits: Int = 15, clientMaxWindowBits: Int = 15) {
        self.serverNoContextTakeover = serverNoContextTakeover
        self.clientNoContextTakeover = clientNoContextTakeover
        self.serverMaxWindowBits = serverMaxWindowBits
        self.clientMaxWindowBits = clientMaxWindowBits
    }
}

/// RFC 7692 permessage-deflate negotiation (section 7.1).
public enum PerMessageDeflate {
    public static let extensionName = "permessage-deflate"

    /// Server side: walks the permessage-deflate offers of a `Sec-WebSocket-Extensions` request value in
    /// order and accepts the first one it can honour. Returns the settings in force and the value for the
    /// response's `Sec-WebSocket-Extensions` header, or nil to go on without compression (no acceptable
    /// offer, or a syntactically broken header). Other extensions are ignored.
    ///
    /// An offer is skipped (RFC 7692 section 7) when it has an unknown parameter, a parameter twice, a
    /// value on a `*_no_context_takeover` parameter, window bits that are not 8...15 written without
    /// leading zeros, a `server_max_window_bits` without a value, or asks for `server_max_window_bits=8`
    /// (zlib cannot deflate raw with an 8-bit window, and answering 9 would exceed the request).
    public static func negotiate(offers header: String, policy: DeflatePolicy) -> (settings: DeflateSettings, responseHeader: String)? {
        guard let extensions = WebSocketExtension.parse(header) else { return nil }
        let ourServerBits = clamp(policy.serverMaxWindowBits, 9...15)
        let ourClientBits = clamp(policy.clientMaxWindowBits, 8...15)
        for offer in extensions where offer.name == extensionName {
            guard let params = OfferParameters(offer.parameters) else { continue }
            if let requested = params.serverMaxWindowBits, requested < 9 { continue }

            var settings = DeflateSettings()
            settings.serverNoContextTakeover = params.serverNoContextTakeover || policy.serverNoContextTakeover
            settings.clientNoContextTakeover = params.clientNoContextTakeover || policy.clientNoContextTakeover
            settings.serverMaxWindowBits = min(params.serverMaxWindowBits ?? 15, ourServerBits)
            // Without client_max_window_bits in the offer the client may not support a cap at all.
            settings.clientMaxWindowBits = params.clientMaxWindowBitsOffered ? min(params.clientMaxWindowBits ?? 15, ourClientBits) : 15

            var response = extensionName
            if settings.serverNoContextTakeover { response += "; server_no_context_takeover" }
            if settings.clientNoContextTakeover { response += "; client_no_context_takeover" }
            if params.serverMaxWindowBits != nil || ourServerBits < 15 {
                response += "; server_max_window_bits=\(settings.serverMaxWindowBits)"
            }
            if params.clientMaxWindowBitsOffered {
                response += "; client_max_window_bits=\(settings.clientMaxWindowBits)"
            }
            return (settings, response)
        }
        return nil
    }

    /// Client side: the `Sec-WebSocket-Extensions` value to offer. It always includes
    /// `client_max_window_bits` (with a value when the policy caps our window below 15) so that a
    /// server may cap our window; the offer asks for `server_no_context_takeover` and
    /// `server_max_window_bits` as the policy says.
    public static func clientOffer(policy: DeflatePolicy) -> String {
        var offer = extensionName
        if policy.serverNoContextTakeover { offer += "; server_no_context_takeover" }
        if policy.clientNoContextTakeover { offer += "; client_no_context_takeover" }
        let serverBits = clamp(policy.serverMaxWindowBits, 8...15)
        if serverBits < 15 { offer += "; server_max_window_bits=\(serverBits)" }
        let clientBits = clamp(policy.clientMaxWindowBits, 9...15)
        offer += clientBits < 15 ? "; client_max_window_bits=\(clientBits)" : "; client_max_window_bits"
        return offer
    }

    /// Client side: validates the server's `Sec-WebSocket-Extensions` response value against the offer
    /// `clientOffer(policy: offered)` made. Returns the settings in force, or nil when the response is
    /// invalid and the connection must fail (RFC 6455 4.1, RFC 7692 7.1): not exactly one
    /// permessage-deflate element, another extension, an unknown or repeated parameter, a bad value,
    /// `client_max_window_bits` without a value or above what was offered, `server_max_window_bits`
    /// above what was asked, or a requested `server_no_context_takeover` / `server_max_window_bits` left
    /// out. Call it only when the response has the header; without it there is no compression.
    ///
    /// A `client_max_window_bits=8` answer is accepted: `MessageDeflater` then runs zlib with a 9-bit
    /// window, whose matches never reach further back than 250 bytes, so the output fits an 8-bit window.
    public static func acceptResponse(_ header: String, offered policy: DeflatePolicy) -> DeflateSettings? {
        guard let extensions = WebSocketExtension.parse(header), extensions.count == 1,
              extensions[0].name == extensionName,
              let params = OfferParameters(extensions[0].parameters) else { return nil }
        let askedServerBits = clamp(policy.serverMaxWindowBits, 8...15)
        let offeredClientBits = clamp(policy.clientMaxWindowBits, 9...15)

        if policy.serverNoContextTakeover && !params.serverNoContextTakeover { return nil }
        if askedServerBits < 15 {
            guard let granted = params.serverMaxWindowBits, granted <= askedServerBits else { return nil }
        }
        if params.clientMaxWindowBitsOffered {
            guard let granted = params.clientMaxWindowBits, granted <= offeredClientBits else { return nil }
        }

        var settings = DeflateSettings()
        settings.serverNoContextTakeover = params.serverNoContextTakeover
        settings.clientNoContextTakeover = params.clientNoContextTakeover || policy.clientNoContextTakeover
        settings.serverMaxWindowBits = params.serverMaxWindowBits ?? 15
        settings.clientMaxWindowBits = min(params.clientMaxWindowBits ?? 15, offeredClientBits)
        return settings
    }

    private static func clamp(_ value: Int, _ range: ClosedRange<Int>) -> Int {
        min(max(value, range.lowerBound), range.upperBound)
    }
}

/// The four RFC 7692 parameters of one offer or response, validated for syntax: nil for an unknown
/// parameter, a repeated one, a value where none is allowed, a missing `server_max_window_bits` value,
/// or window bits that are not a decimal 8...15 without leading zeros.
private struct OfferParameters {
    var serverNoContextTakeover = false
    var clientNoContextTakeover = false
    var serverMaxWindowBits: Int?
    var clientMaxWindowBitsOffered = false
    var clientMaxWindowBits: Int?

    init?(_ parameters: [WebSocketExtension.Parameter]) {
        var seen: Set<String> = []
        for parameter in parameters {
            guard seen.insert(parameter.name).inserted else { return nil }
            switch parameter.name {
            case "server_no_context_takeover":
                guard parameter.value == nil else { return nil }
                serverNoContextTakeover = true
            case "client_no_context_takeover":
                guard parameter.value == nil else { return nil }
                clientNoContextTakeover = true
            case "server_max_window_bits":
                guard let value = parameter.value, let bits = Self.windowBits(value) else { return nil }
                serverMaxWindowBits = bits
            case "client_max_window_bits":
                clientMaxWindowBitsOffered = true
                if let value = parameter.value {
                    guard let bits = Self.windowBits(value) else { return nil }
                    clientMaxWindowBits = bits
                }
            default:
                return nil
            }
        }
    }

    static func windowBits(_ text: String) -> Int? {
        let digits = Array(text.utf8)
        guard (1...2).contains(digits.count), digits[0] != UInt8(ascii: "0"),
              digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        let value = digits.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
        return (8...15).contains(value) ? value : nil
    }
}
