import CLua
import LuaRuntime
import WebSocketCodec

/// The publish/subscribe half of the `Websocket` service: `subscribe`, `unsubscribe`, `publish`,
/// `subscriptions`, `subscribers`.
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

    /// The registry entry of the open socket named by `socket_id`.
    private static func openSocket(_ L: OpaquePointer, _ worker: Worker) -> Result<Registry.Entry, ServiceFailure> {
        guard case .success(let id?) = optionalString(L, "socket_id") else { return .failure(.badRequest("socket_id is required and must be a string")) }
        guard let entry = worker.shared.registry.lookup(id) else { return .failure(.notFound("socket \(id) is not open")) }
        return .success(entry)
    }

    static let websocketSubscribe: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            let worker = worker(L)
            switch (topicArgument(L), openSocket(L, worker)) {
            case (.failure(let failure), _), (_, .failure(let failure)):
                return push(L, failure)
            case (.success(let topic), .success(let entry)):
                guard worker.shared.topics.subscribe(entry, topic: topic, registry: worker.shared.registry) else {
                    return push(L, .notFound("socket \(entry.info.socketId) is closed"))
                }
                return 0
            }
        }
    }

    static let websocketUnsubscribe: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            let worker = worker(L)
            switch (topicArgument(L), openSocket(L, worker)) {
            case (.failure(let failure), _), (_, .failure(let failure)):
                return push(L, failure)
            case (.success(let topic), .success(let entry)):
                worker.shared.topics.unsubscribe(entry.info.socketId, topic: topic)
                return 0
            }
        }
    }

    /// `publish{topic=, message=, type=}` → how many sockets the message was queued to.
    static let websocketPublish: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            let worker = worker(L)
            let topic: String
            switch topicArgument(L) {
            case .failure(let failure): return push(L, failure)
            case .success(let value): topic = value
            }
            lua_getfield(L, 1, "type")
            let type = lua_isnoneornil(L, -1) ? "data-text" : (lua_type(L, -1) == LUA_TSTRING ? lua_swiftstring(L, -1)! : "")
            lua_getfield(L, 1, "message")
            guard let message = lua_bytes(L, -1) else { return push(L, .badRequest("message must be a string (encode tables with to_json)")) }
            switch decodedMessage(type: type, message: message, runner: worker.runner, { opcode, payload in
                worker.owners.publish(topic, opcode, payload)
            }) {
            case .failure(let failure): return push(L, failure)
            case .success(let delivered):
                lua_pushinteger(L, lua_Integer(delivered))
                return 1
            }
        }
    }

    static let websocketSubscriptions: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            let worker = worker(L)
            guard lua_type(L, 1) == LUA_TTABLE else { return push(L, .badRequest("argument must be a table")) }
            switch openSocket(L, worker) {
            case .failure(let failure): return push(L, failure)
            case .success(let entry):
                let topics = worker.shared.topics.topics(of: entry.info.socketId)
                let list = LuaTable(pushedOn: L, items: topics.count)
                for (i, topic) in topics.enumerated() { list.set(i + 1, topic) }
                return 1
            }
        }
    }

    static let websocketSubscribers: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            switch topicArgument(L) {
            case .failure(let failure): return push(L, failure)
            case .success(let topic):
                let ids = worker(L).shared.topics.subscribers(of: topic).map(\.info.socketId).sorted()
                let list = LuaTable(pushedOn: L, items: ids.count)
                for (i, id) in ids.enumerated() { list.set(i + 1, id) }
                return 1
            }
        }
    }
}
