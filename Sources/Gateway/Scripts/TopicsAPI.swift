import CLua
import LuaRuntime
import WebSocketCodec

/// The publish/subscribe half of the `Websocket` service: `subscribe`, `unsubscribe`, `publish`,
/// `subscriptions`, `subscribers`. In a cluster a call on another node's socket waits for that
/// node, `subscribers` gathers every node's, and `publish` reaches every node's subscribers.
extension ScriptAPI {
    /// The `topic` field of the table argument, checked.
    private static func topicArgument(_ L: OpaquePointer) -> Result<String, ServiceFailure> {
        guard lua_type(L, 1) == LUA_TTABLE else { return .failure(.badRequest("argument must be a table")) }
        guard case .success(let topic?) = optionalString(L, "topic") else { return .failure(.badRequest("topic is required and must be a string")) }
        return checkedTopic(topic)
    }

    static func checkedTopic(_ topic: String) -> Result<String, ServiceFailure> {
        guard !topic.isEmpty, topic.utf8.count <= Topics.maxTopicBytes else {
            return .failure(.badRequest("topic must be 1 to \(Topics.maxTopicBytes) bytes"))
        }
        return .success(topic)
    }

    private typealias TopicChange = (OwnerPath, String, String, ((ServiceFailure?) -> Void)?) -> OwnerAnswer<ServiceFailure?>

    /// `subscribe` and `unsubscribe`: `{socket_id=, topic=}` → nil or an error, from the socket's node.
    private static func changeTopic(_ L: OpaquePointer, _ change: TopicChange) -> Int32 {
        let worker = worker(L)
        switch (topicArgument(L), socketIdArgument(L)) {
        case (.failure(let failure), _), (_, .failure(let failure)):
            return push(L, failure)
        case (.success(let topic), .success(let id)):
            let later = LaterAnswer(L, worker.runner)
            switch change(worker.owners, id, topic, later?.then(pushOutcome)) {
            case .now(let failure): return pushOutcome(L, failure)
            case .later: return later?.wait(L) ?? -1
            }
        }
    }

    static let websocketSubscribe: lua_CFunction = { L in
        withoutMemoryLimit(L) { changeTopic($0) { $0.subscribe($1, topic: $2, then: $3) } }
    }

    static let websocketUnsubscribe: lua_CFunction = { L in
        withoutMemoryLimit(L) { changeTopic($0) { $0.unsubscribe($1, topic: $2, then: $3) } }
    }

    static let websocketSubscriptions: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            guard lua_type(L, 1) == LUA_TTABLE else { return push(L, .badRequest("argument must be a table")) }
            let worker = worker(L)
            switch socketIdArgument(L) {
            case .failure(let failure): return push(L, failure)
            case .success(let id):
                let later = LaterAnswer(L, worker.runner)
                switch worker.owners.subscriptions(id, then: later?.then(pushTopics)) {
                case .now(let topics): return pushTopics(L, topics)
                case .later: return later?.wait(L) ?? -1
                }
            }
        }
    }

    private static func pushTopics(_ L: OpaquePointer, _ topics: Result<[String], ServiceFailure>) -> Int32 {
        switch topics {
        case .failure(let failure): return push(L, failure)
        case .success(let list): return pushList(L, list)
        }
    }

    static let websocketSubscribers: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            switch topicArgument(L) {
            case .failure(let failure): return push(L, failure)
            case .success(let topic):
                let worker = worker(L)
                let local = worker.shared.topics.subscribers(of: topic).map(\.info.socketId)
                guard worker.remoteCalls != nil else { return pushList(L, local.sorted()) }
                return waitForAllNodes(L, worker, .subscribers, topic: topic) { L, replies in
                    pushList(L, (local + replies.flatMap { NodeMessage.lines($0.payload) }).sorted())
                }
            }
        }
    }

    /// `publish{topic=, message=, type=, wait=}` → how many sockets the message was queued to, on
    /// every node; with `wait=false`, on this node, without waiting for the others' counts.
    static let websocketPublish: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            let worker = worker(L)
            let topic: String
            switch topicArgument(L) {
            case .failure(let failure): return push(L, failure)
            case .success(let value): topic = value
            }
            let (wait, type, message): (Bool, String, UnsafeRawBufferPointer)
            switch messageArguments(L) {
            case .failure(let failure): return push(L, failure)
            case .success(let fields): (wait, type, message) = fields
            }
            let later = LaterAnswer(L, worker.runner)
            switch decodedMessage(type: type, message: message, runner: worker.runner, { opcode, payload in
                worker.owners.publish(topic, opcode, payload, wait: wait, then: later?.then(pushCount))
            }) {
            case .failure(let failure): return push(L, failure)
            case .success(.now(let delivered)): return pushCount(L, delivered)
            case .success(.later): return later?.wait(L) ?? -1
            }
        }
    }

    private static func pushCount(_ L: OpaquePointer, _ count: Int) -> Int32 {
        lua_pushinteger(L, lua_Integer(count))
        return 1
    }
}
