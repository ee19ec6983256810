/// Client side of the RFC 6455 opening handshake: the upgrade request and the check of the answer.
public enum ClientHandshake {
    /// Names a script cannot set: the handshake writes them itself, or they would make the request
    /// something other than a bodiless upgrade (content-length, transfer-encoding).
    private static let reservedNames: Set<String> = [
        "host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version", "sec-websocket-accept",
        "sec-websocket-extensions", "content-length", "transfer-encoding",
    ]

    /// A fresh Sec-WebSocket-Key: 16 random bytes in base64. RFC 6455 4.1 wants them unpredictable,
    /// hence the system generator.
    public static func makeKey() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (generator.next() as UInt64, generator.next() as UInt64)
        return withUnsafeBytes(of: bytes) { Base64.encode($0) }
    }

    /// The GET request: Host, Upgrade, Connection, Sec-WebSocket-Key and Sec-WebSocket-Version, the
    /// permessage-deflate offer when `deflate` is given, then `headers` in order (each must have
    /// passed `headerProblem`), then the blank line.
    public static func request(url: WebSocketURL, key: String, headers: [(name: String, value: String)], deflate: DeflatePolicy? = nil) -> [UInt8] {
        var text = "GET \(url.requestTarget) HTTP/1.1\r\nHost: \(url.hostHeader)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        text += "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n"
        if let deflate { text += "Sec-WebSocket-Extensions: \(PerMessageDeflate.clientOffer(policy: deflate))\r\n" }
        for header in headers { text += "\(header.name): \(header.value)\r\n" }
        text += "\r\n"
        return Array(text.utf8)
    }

    /// Why a header given by a user cannot go into the request, or nil when it can.
    public static func headerProblem(name: String, value: String) -> String? {
        guard !name.isEmpty, name.utf8.allSatisfy(isTokenByte) else {
            return "header name \"\(name)\" is not a valid HTTP token"
        }
        // RFC 9110 5.5: CR, LF and NUL would end or split the header (request smuggling); the other
        // control characters except tab are not allowed in a field value either.
        if value.utf8.contains(where: { ($0 < 0x20 && $0 != 0x09) || $0 == 0x7F }) {
            return "header \"\(name)\" has a control character (CR, LF, NUL...) in its value"
        }
        if reservedNames.contains(asciiLowercased(name)) {
            return "header \"\(name)\" is set by the WebSocket handshake itself"
        }
        return nil
    }

    /// Why `response` does not accept the upgrade asked for with `key`, or nil when it does.
    /// An extension must be the permessage-deflate answer to `offeredDeflate` (any is refused when
    /// none was offered); a subprotocol must be one of `offeredProtocols`.
    public static func problem(with response: HTTPResponseHead, key: String, offeredProtocols: [String] = [],
                               offeredDeflate: DeflatePolicy? = nil) -> String? {
        guard response.status == 101 else {
            if (300..<400).contains(response.status) {
                if let location = response.header("location") { return "redirect to \(location) not followed" }
                return "redirect (\(statusText(response))) without a Location not followed"
            }
            return "bad status \(statusText(response))"
        }
        guard response.headerContainsToken("upgrade", "websocket") else {
            return "the response has no \"Upgrade: websocket\""
        }
        guard response.headerContainsToken("connection", "upgrade") else {
            return "the response has no \"Connection: Upgrade\""
        }
        // Every field of a name counts, not only the first: repeated field lines mean the same as one
        // line with the values joined by commas (RFC 9110 5.3), so "Sec-WebSocket-Extensions:" then
        // "Sec-WebSocket-Extensions: x" chooses x. Values are compared as UTF-8 bytes: String == is
        // canonical equivalence, under which "\u{212A}" (KELVIN SIGN) == "K".
        // (Regressions in Fuzz/corpus/regressions/: client-second-extensions-field,
        // client-second-protocol-field, client-kelvin-sign-in-accept.)
        let accepts = values(response, "sec-websocket-accept")
        guard !accepts.isEmpty else {
            return "the response has no Sec-WebSocket-Accept"
        }
        let expected = Handshake.acceptValue(forKey: key)
        if let accept = accepts.first(where: { !sameBytes($0, expected) }) {
            return "Sec-WebSocket-Accept \"\(accept)\" does not match the key sent"
        }
        if let extensions = extensionsValue(response) {
            guard let offered = offeredDeflate else { return "the server chose the extension \"\(extensions)\", which was not offered" }
            if PerMessageDeflate.acceptResponse(extensions, offered: offered) == nil {
                return "the server's extension answer \"\(extensions)\" does not fit the permessage-deflate offer"
            }
        }
        let protocols = values(response, "sec-websocket-protocol")
        if let chosen = protocols.first(where: { chosen in !offeredProtocols.contains { sameBytes($0, chosen) } }) {
            return "the server chose the subprotocol \"\(chosen)\", which was not offered"
        }
        if let first = protocols.first, protocols.contains(where: { !sameBytes($0, first) }) {
            return "the server chose more than one subprotocol: \(protocols.joined(separator: ", "))"
        }
        return nil
    }

    /// The permessage-deflate settings a response that passed `problem(with:...offeredDeflate:)`
    /// put in force; nil when it chose no extension.
    public static func deflateSettings(_ response: HTTPResponseHead, offered: DeflatePolicy) -> DeflateSettings? {
        extensionsValue(response).flatMap { PerMessageDeflate.acceptResponse($0, offered: offered) }
    }

    /// Every non-empty Sec-WebSocket-Extensions field, joined as one list; nil when there is none.
    private static func extensionsValue(_ response: HTTPResponseHead) -> String? {
        let fields = values(response, "sec-websocket-extensions").filter { !$0.isEmpty }
        return fields.isEmpty ? nil : fields.joined(separator: ", ")
    }

    /// The values of every field called `name`, in order.
    private static func values(_ response: HTTPResponseHead, _ name: String) -> [String] {
        response.headers.filter { $0.name == name }.map(\.value)
    }

    private static func sameBytes(_ a: String, _ b: String) -> Bool { a.utf8.elementsEqual(b.utf8) }

    private static func statusText(_ response: HTTPResponseHead) -> String {
        response.reason.isEmpty ? "\(response.status)" : "\(response.status) \(response.reason)"
    }
}
