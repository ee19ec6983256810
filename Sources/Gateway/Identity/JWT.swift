import CSignature
import Foundation
import WebSocketCodec

/// Verifies a JSON Web Token (RFC 7519, compact JWS): the signature with OpenSSL (`csig_verify`),
/// then the registered claims `exp`, `nbf`, `iss` and `aud`. No I/O, no state.
enum JWT {
    enum Key {
        /// An HMAC secret: HS256, HS384, HS512.
        case secret([UInt8])
        /// A PEM public key: RS256, RS384, RS512 for RSA, ES256, ES384 for EC.
        case publicKey([UInt8])
    }

    struct Options {
        var key: Key
        /// The algorithms accepted; those the key cannot check are never accepted (an RSA key's
        /// text is no HMAC secret), and `none` never is.
        var algorithms: [String]
        var audience: [String] = []
        var issuer: String?
        var leewaySeconds = 0
    }

    /// Why a token was refused, as scripts see it.
    enum Failure: String, Error {
        case malformed
        case algorithmNotAllowed = "algorithm not allowed"
        case badSignature = "bad signature"
        case expired
        case notYetValid = "not yet valid"
        case badAudience = "bad audience"
        case badIssuer = "bad issuer"
    }

    static let hmacAlgorithms = ["HS256", "HS384", "HS512"]
    static let rsaAlgorithms = ["RS256", "RS384", "RS512"]
    static let ecAlgorithms = ["ES256", "ES384"]

    /// The algorithms `key` can check: nil when it is not a key at all (a public key that is not a
    /// PEM RSA or EC public key).
    static func algorithms(for key: Key) -> [String]? {
        switch key {
        case .secret: return hmacAlgorithms
        case .publicKey(let pem):
            switch pem.withUnsafeBytes({ csig_public_key_kind($0.baseAddress, $0.count) }) {
            case 1: return rsaAlgorithms
            case 2: return ecAlgorithms
            default: return nil
            }
        }
    }

    /// The token's claims as JSON text (the payload's bytes), once its signature and claims pass.
    static func verify(_ token: UnsafeRawBufferPointer, _ options: Options, now: Int) -> Result<[UInt8], Failure> {
        let parts = token.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 3, let headerJSON = base64URLDecode(parts[0]), let payload = base64URLDecode(parts[1]),
              let signature = base64URLDecode(parts[2]),
              let header = try? JSONSerialization.jsonObject(with: Data(headerJSON)) as? [String: Any],
              let algorithm = header["alg"] as? String,
              // Extensions a token says must be understood (RFC 7515 §4.1.11): none are here.
              header["crit"] == nil
        else { return .failure(.malformed) }
        // A secret checks only HMAC, a public key only signatures (csig_verify holds RSA and EC
        // keys to their own algorithms): an RSA key's text can never pass as an HMAC secret.
        let keyBytes: [UInt8]
        let family: [String]
        switch options.key {
        case .secret(let bytes): (keyBytes, family) = (bytes, hmacAlgorithms)
        case .publicKey(let bytes): (keyBytes, family) = (bytes, rsaAlgorithms + ecAlgorithms)
        }
        guard family.contains(algorithm), options.algorithms.contains(algorithm) else { return .failure(.algorithmNotAllowed) }
        let signingInput = UnsafeRawBufferPointer(rebasing: token[..<(parts[0].count + 1 + parts[1].count)])
        let verdict = keyBytes.withUnsafeBytes { key in
            signature.withUnsafeBytes { sig in
                csig_verify(algorithm, key.baseAddress, key.count, signingInput.baseAddress, signingInput.count, sig.baseAddress, sig.count)
            }
        }
        guard verdict == 1 else { return .failure(verdict == 0 ? .badSignature : .algorithmNotAllowed) }
        guard let claims = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any] else { return .failure(.malformed) }
        if let failure = check(claims, options, now: now) { return .failure(failure) }
        return .success(payload)
    }

    private static func check(_ claims: [String: Any], _ options: Options, now: Int) -> Failure? {
        func seconds(_ name: String) -> Double?? {
            guard let value = claims[name] else { return .some(nil) }
            guard let number = value as? NSNumber else { return nil }
            return .some(number.doubleValue)
        }
        guard let expires = seconds("exp"), let notBefore = seconds("nbf") else { return .malformed }
        let leeway = Double(options.leewaySeconds)
        if let expires, Double(now) >= expires + leeway { return .expired }
        if let notBefore, Double(now) + leeway < notBefore { return .notYetValid }
        if let issuer = options.issuer, claims["iss"] as? String != issuer { return .badIssuer }
        if !options.audience.isEmpty {
            let audiences: [String]
            switch claims["aud"] {
            case let single as String: audiences = [single]
            case let list as [Any]: audiences = list.compactMap { $0 as? String }
            default: audiences = []
            }
            if !audiences.contains(where: options.audience.contains) { return .badAudience }
        }
        return nil
    }

    /// base64url without padding (RFC 7515 §2), through the canonical base64 decoder.
    private static func base64URLDecode(_ part: UnsafeRawBufferPointer.SubSequence) -> [UInt8]? {
        guard part.count % 4 != 1 else { return nil }
        var text = [UInt8]()
        text.reserveCapacity(part.count + 3)
        for byte in part {
            switch byte {
            case UInt8(ascii: "-"): text.append(UInt8(ascii: "+"))
            case UInt8(ascii: "_"): text.append(UInt8(ascii: "/"))
            case UInt8(ascii: "+"), UInt8(ascii: "/"), UInt8(ascii: "="): return nil
            default: text.append(byte)
            }
        }
        while text.count % 4 != 0 { text.append(UInt8(ascii: "=")) }
        return text.withUnsafeBytes { Base64.decode($0) }
    }
}
