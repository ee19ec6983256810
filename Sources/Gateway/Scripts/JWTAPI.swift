import CLua
import Foundation
import LuaRuntime

/// The `jwt` global: `jwt.verify(token, options)` returns the token's claims as a table, or
/// `nil, reason` (see `JWT.Failure`; options that cannot work give `"bad options: ..."`).
extension ScriptAPI {
    static func installJWT(in lua: LuaState) {
        let L = lua.L
        lua.setBaseGlobal("jwt") {
            let table = LuaTable(pushedOn: L, fields: 1)
            table.set("verify", jwtVerify)
        }
    }

    private static func failure(_ L: OpaquePointer, _ reason: String) -> Int32 {
        lua_pushnil(L)
        lua_pushswift(L, reason)
        return 2
    }

    private static let jwtVerify: lua_CFunction = { L in
        withoutMemoryLimit(L) { L in
            guard let token = lua_bytes(L, 1) else { return failure(L, JWT.Failure.malformed.rawValue) }
            switch jwtOptions(L) {
            case .failure(let problem):
                return failure(L, "bad options: \(problem.message)")
            case .success(let options):
                switch JWT.verify(token, options, now: Int(Date().timeIntervalSince1970)) {
                case .failure(let reason):
                    return failure(L, reason.rawValue)
                case .success(let payload):
                    if let error = payload.withUnsafeBytes({ JSONBridge.decode(L, $0) }) {
                        return failure(L, "\(JWT.Failure.malformed.rawValue): \(error)")
                    }
                    return 1
                }
            }
        }
    }

    private struct OptionProblem: Error { let message: String }

    /// The options table at argument 2: `secret` or `public_key` (one of them), `algorithms`,
    /// `audience` (a string or a list), `issuer`, `leeway_s`.
    private static func jwtOptions(_ L: OpaquePointer) -> Result<JWT.Options, OptionProblem> {
        guard lua_type(L, 2) == LUA_TTABLE else { return .failure(OptionProblem(message: "the second argument must be a table")) }
        func bytes(_ field: String) -> [UInt8]? {
            lua_getfield(L, 2, field)
            defer { lua_pop(L, 1) }
            return lua_bytes(L, -1).map { Array($0) }
        }
        func strings(_ field: String) -> [String]?? {
            lua_getfield(L, 2, field)
            defer { lua_pop(L, 1) }
            switch lua_type(L, -1) {
            case LUA_TNIL: return .some(nil)
            case LUA_TSTRING: return .some([lua_swiftstring(L, -1)!])
            case LUA_TTABLE:
                var list: [String] = []
                let count = lua_rawlen(L, -1)
                guard count > 0 else { return nil }
                for i in 1...count {
                    guard lua_rawgeti(L, -1, lua_Integer(i)) == LUA_TSTRING, let s = lua_swiftstring(L, -1) else {
                        lua_pop(L, 1)
                        return nil
                    }
                    list.append(s)
                    lua_pop(L, 1)
                }
                return .some(list)
            default: return nil
            }
        }
        let key: JWT.Key
        switch (bytes("secret"), bytes("public_key")) {
        case (let secret?, nil):
            guard !secret.isEmpty else { return .failure(OptionProblem(message: "secret is empty")) }
            key = .secret(secret)
        case (nil, let pem?): key = .publicKey(pem)
        case (nil, nil): return .failure(OptionProblem(message: "give secret or public_key"))
        default: return .failure(OptionProblem(message: "give secret or public_key, not both"))
        }
        guard let usable = JWT.algorithms(for: key) else {
            return .failure(OptionProblem(message: "public_key is not a PEM RSA or EC public key"))
        }
        guard let algorithms = strings("algorithms") else { return .failure(OptionProblem(message: "algorithms must be a list of names")) }
        guard let audience = strings("audience") else { return .failure(OptionProblem(message: "audience must be a string or a list of them")) }
        lua_getfield(L, 2, "issuer")
        let issuer = lua_type(L, -1) == LUA_TSTRING ? lua_swiftstring(L, -1) : nil
        let issuerIsValid = issuer != nil || lua_isnoneornil(L, -1)
        lua_pop(L, 1)
        guard issuerIsValid else { return .failure(OptionProblem(message: "issuer must be a string")) }
        lua_getfield(L, 2, "leeway_s")
        defer { lua_pop(L, 1) }
        var leeway = 0
        if !lua_isnoneornil(L, -1) {
            var isInteger: Int32 = 0
            let value = lua_tointegerx(L, -1, &isInteger)
            guard isInteger != 0, value >= 0, value <= 86_400 else { return .failure(OptionProblem(message: "leeway_s must be an integer from 0 to 86400")) }
            leeway = Int(value)
        }
        return .success(JWT.Options(key: key, algorithms: algorithms ?? usable, audience: audience ?? [],
                                    issuer: issuer, leewaySeconds: leeway))
    }
}
