import CLua
import LuaRuntime
import WebSocketCodec

/// What `_connect.lua` sees: `websocketInfo` with type "connect", the upgrade's fields, and
/// `accept{claims=, expires_at=}` and `reject{status=, message=}` to decide.
extension ScriptAPI {
    static func pushConnectInfo(_ L: OpaquePointer, _ gate: ConnectGate) {
        let upgrade = gate.upgrade
        let table = LuaTable(pushedOn: L, fields: 10)
        table.set("type", literal: "connect")
        table.set("uri", upgrade.uri)
        table.set("route", upgrade.route)
        table.set("socket_id", upgrade.socketId)
        pushHeaders(L, upgrade.head)
        table.setFromTop("headers")
        pushPairs(L, upgrade.parameters)
        table.setFromTop("parameters")
        table.set("subprotocol", upgrade.subprotocol)
        table.set("remote_addr", gate.connection.remoteAddress)
        table.set("accept", connectAccept)
        table.set("reject", connectReject)
    }

    /// The gate of the hook that is running, unless it has decided already.
    private static func undecidedGate(_ L: OpaquePointer) -> Result<ConnectGate, ServiceFailure> {
        guard let gate = worker(L).runner.currentGate else { return .failure(.badRequest("only the connect hook can accept or reject")) }
        guard gate.decision == nil else { return .failure(.conflict("the connection was already accepted or rejected")) }
        return .success(gate)
    }

    private static let connectAccept: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            let gate: ConnectGate
            switch undecidedGate(L) {
            case .failure(let failure): return push(L, failure)
            case .success(let found): gate = found
            }
            gate.decision = acceptance(L)
            return 0
        }
    }

    /// What `accept`'s argument asks for; arguments that cannot be honoured make the gate fail closed.
    private static func acceptance(_ L: OpaquePointer) -> ConnectGate.Decision {
        guard !lua_isnoneornil(L, 1) else { return .accept(claimsJSON: "{}", expiresAt: nil) }
        guard lua_type(L, 1) == LUA_TTABLE else { return .invalid("accept expects a table {claims=, expires_at=}") }
        var claimsJSON = "{}"
        if lua_getfield(L, 1, "claims") != LUA_TNIL {
            guard lua_type(L, -1) == LUA_TTABLE else { return .invalid("claims must be a table") }
            var bytes: [UInt8] = []
            if let error = JSONBridge.encode(L, index: -1, into: &bytes) { return .invalid("claims cannot be encoded as JSON: \(error)") }
            guard bytes.first == UInt8(ascii: "{") else { return .invalid("claims must be a table with string keys, not a list") }
            claimsJSON = String(decoding: bytes, as: UTF8.self)
        }
        var expiresAt: Double?
        if lua_getfield(L, 1, "expires_at") != LUA_TNIL {
            guard lua_type(L, -1) == LUA_TNUMBER else { return .invalid("expires_at must be a number of Unix seconds") }
            expiresAt = lua_tonumberx(L, -1, nil)
        }
        return .accept(claimsJSON: claimsJSON, expiresAt: expiresAt)
    }

    private static let connectReject: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            let gate: ConnectGate
            switch undecidedGate(L) {
            case .failure(let failure): return push(L, failure)
            case .success(let found): gate = found
            }
            var status = 401
            var message = ""
            if lua_type(L, 1) == LUA_TTABLE {
                if lua_getfield(L, 1, "status") != LUA_TNIL {
                    var isInteger: Int32 = 0
                    let value = lua_tointegerx(L, -1, &isInteger)
                    status = isInteger != 0 ? Int(clamping: value) : 0
                }
                if lua_getfield(L, 1, "message") != LUA_TNIL {
                    guard lua_type(L, -1) == LUA_TSTRING, let text = lua_swiftstring(L, -1) else {
                        gate.decision = .invalid("reject's message must be a string")
                        return 0
                    }
                    message = text
                }
            } else if !lua_isnoneornil(L, 1) {
                gate.decision = .invalid("reject expects a table {status=, message=}")
                return 0
            }
            guard (400...499).contains(status) || status == 503 else {
                gate.decision = .invalid("reject's status must be 400 to 499 or 503")
                return 0
            }
            gate.decision = .reject(status: status, message: message)
            return 0
        }
    }
}
