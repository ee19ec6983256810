/// One message between nodes on a node's Redis channel ("{prefix}:node:{id}"): a request for an
/// operation on the receiver's sockets, or the reply to one. Binary: fixed fields, then
/// length-prefixed strings, then the payload (a message's bytes, an info object's JSON, a list).
struct NodeMessage: Equatable {
    enum Kind: UInt8 {
        case request = 0x51   // "Q"
        case reply = 0x52     // "R"
    }

    enum Operation: UInt8 {
        case send = 1, close, info, list, closeAll, probe
        case subscribe, unsubscribe, subscriptions, subscribers, publish
        /// The management API's description of a socket.
        case describe

        /// The metrics' label of a request for it.
        var label: String {
            switch self {
            case .send: "node_send"
            case .close: "node_close"
            case .info: "node_info"
            case .list: "node_list"
            case .closeAll: "node_closeAll"
            case .probe: "node_probe"
            case .subscribe: "node_subscribe"
            case .unsubscribe: "node_unsubscribe"
            case .subscriptions: "node_subscriptions"
            case .subscribers: "node_subscribers"
            case .publish: "node_publish"
            case .describe: "node_describe"
            }
        }
    }

    var kind: Kind
    var operation: Operation
    /// Pairs a reply with its request: unique per requesting loop, from 1; 0 for a request that
    /// wants no reply (a call that does not wait: `wait=false`).
    var id: UInt64
    /// Who asked, and the loop that waits for the reply.
    var node: String
    var loop: UInt16
    /// The socket the operation is for; empty when none.
    var socket = ""
    /// The topic of a topic operation; empty when none.
    var topic = ""
    /// send: the opcode; close: unused.
    var opcode: UInt8 = 0
    /// A reply's status: 0 for success, else the HTTP-like status of the `ServiceFailure`.
    var status: UInt16 = 0
    /// A failed reply's message.
    var error = ""
    var payload: [UInt8] = []

    private static let version: UInt8 = 1

    func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(24 + node.utf8.count + socket.utf8.count + topic.utf8.count + error.utf8.count + payload.count)
        out.append(NodeMessage.version)
        out.append(kind.rawValue)
        out.append(operation.rawValue)
        out.append(opcode)
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: id >> UInt64(shift))) }
        out.append(UInt8(loop >> 8))
        out.append(UInt8(truncatingIfNeeded: loop))
        out.append(UInt8(status >> 8))
        out.append(UInt8(truncatingIfNeeded: status))
        func append(_ text: String) {
            let bytes = text.utf8.prefix(Int(UInt16.max))
            out.append(UInt8(truncatingIfNeeded: bytes.count >> 8))
            out.append(UInt8(truncatingIfNeeded: bytes.count))
            out.append(contentsOf: bytes)
        }
        append(node)
        append(socket)
        append(topic)
        append(error)
        out.append(contentsOf: payload)
        return out
    }

    /// nil for bytes that are not a message of this version.
    init?(decoding bytes: [UInt8]) {
        guard bytes.count >= 16, bytes[0] == NodeMessage.version, let kind = Kind(rawValue: bytes[1]),
              let operation = Operation(rawValue: bytes[2]) else { return nil }
        self.kind = kind
        self.operation = operation
        opcode = bytes[3]
        id = bytes[4..<12].reduce(0) { $0 << 8 | UInt64($1) }
        loop = UInt16(bytes[12]) << 8 | UInt16(bytes[13])
        status = UInt16(bytes[14]) << 8 | UInt16(bytes[15])
        var offset = 16
        var texts: [String] = []
        for _ in 0..<4 {
            guard offset + 2 <= bytes.count else { return nil }
            let count = Int(bytes[offset]) << 8 | Int(bytes[offset + 1])
            offset += 2
            guard offset + count <= bytes.count else { return nil }
            texts.append(String(decoding: bytes[offset..<offset + count], as: UTF8.self))
            offset += count
        }
        (node, socket, topic, error) = (texts[0], texts[1], texts[2], texts[3])
        payload = Array(bytes[offset...])
    }

    init(kind: Kind, operation: Operation, id: UInt64, node: String, loop: UInt16) {
        self.kind = kind
        self.operation = operation
        self.id = id
        self.node = node
        self.loop = loop
    }

    var wantsReply: Bool { id != 0 }

    /// The reply to this request, from `node`.
    func reply(from node: String, _ outcome: Result<[UInt8], ServiceFailure>) -> NodeMessage {
        var reply = NodeMessage(kind: .reply, operation: operation, id: id, node: node, loop: loop)
        reply.socket = socket
        reply.topic = topic
        switch outcome {
        case .success(let payload): reply.payload = payload
        case .failure(let failure):
            reply.status = UInt16(failure.status)
            reply.error = failure.message
        }
        return reply
    }

    /// A payload that is a list, one item a line (socket ids, topics).
    static func lines(_ payload: [UInt8]) -> [String] {
        payload.split(separator: UInt8(ascii: "\n")).map { String(decoding: $0, as: UTF8.self) }
    }

    /// A reply's outcome as the caller gets it.
    var outcome: Result<[UInt8], ServiceFailure> {
        guard status != 0 else { return .success(payload) }
        return .failure(ServiceFailure(status: Int(status), message: error))
    }
}

extension ServiceFailure {
    /// The failure a status stands for (a reply from another node).
    init(status: Int, message: String) {
        switch status {
        case 400: self = .badRequest(message)
        case 404: self = .notFound(message)
        case 409: self = .conflict(message)
        case 429: self = .tooManyRequests(message)
        case 502: self = .badGateway(message)
        case 504: self = .gatewayTimeout(message)
        case 507: self = .insufficientStorage(message)
        default: self = .unavailable(message)
        }
    }
}
