import COpenSSL
import CTLS
import Foundation
import XCTest
@testable import Reactor

// TLS ends written straight against OpenSSL, for the other side of a TLSStream.

/// The client side, written straight against OpenSSL's client API.
final class TestClient {
    let ctx: OpaquePointer
    let ssl: OpaquePointer
    let fd: Int32
    /// What to poll for before the next call.
    var waitEvents = pollIn

    struct Options {
        var alpn: [String]? = ["http/1.1"]
        var minVersion: Int32 = 0
        var maxVersion: Int32 = 0
        var cipherList: String?
        var session: OpaquePointer?
    }

    init(fd: Int32, caFile: String = TestPKI.shared.caFile, options: Options = Options()) {
        self.fd = fd
        ctx = SSL_CTX_new(TLS_client_method())!
        precondition(SSL_CTX_load_verify_locations(ctx, caFile, nil) == 1)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
        if options.minVersion != 0 { precondition(ctls_ctx_set_min_proto_version(ctx, options.minVersion) == 1) }
        if options.maxVersion != 0 { precondition(ctls_ctx_set_max_proto_version(ctx, options.maxVersion) == 1) }
        if let ciphers = options.cipherList { precondition(SSL_CTX_set_cipher_list(ctx, ciphers) == 1) }
        ssl = SSL_new(ctx)!
        SSL_set_fd(ssl, fd)
        SSL_set_connect_state(ssl)
        precondition(ctls_set_sni(ssl, "localhost") == 1)
        precondition(SSL_set1_host(ssl, "localhost") == 1)
        if let alpn = options.alpn {
            var wire: [UInt8] = []
            for name in alpn { wire.append(UInt8(name.utf8.count)); wire += Array(name.utf8) }
            precondition(SSL_set_alpn_protos(ssl, wire, UInt32(wire.count)) == 0)
        }
        if let session = options.session { SSL_set_session(ssl, session) }
    }

    deinit {
        SSL_free(ssl)
        SSL_CTX_free(ctx)
    }

    /// CTLS_OK, CTLS_WANT_*, CTLS_CLOSED or CTLS_FAILED.
    func handshake() -> Int32 {
        var e: Int32 = 0
        let status = ctls_handshake(ssl, &e)
        track(status)
        return status
    }

    /// Reads everything available now; returns the bytes and the final status.
    func readAvailable() -> ([UInt8], Int32) {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            var done = 0
            var e: Int32 = 0
            let status = ctls_read(ssl, &buffer, buffer.count, &done, &e)
            track(status)
            if status == CTLS_OK { out += buffer[0..<done]; continue }
            return (out, status)
        }
    }

    /// Writes all of `bytes`, waiting for the socket as needed (the server must not need pumping).
    func writeAll(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            var done = 0
            var e: Int32 = 0
            let status = bytes.withUnsafeBytes { ctls_write(ssl, $0.baseAddress! + offset, bytes.count - offset, &done, &e) }
            if status == CTLS_OK { offset += done } else if status == CTLS_WANT_WRITE || status == CTLS_WANT_READ {
                waitFor([(fd, status == CTLS_WANT_WRITE ? pollOut : pollIn)])
            } else {
                XCTFail("client write failed: \(status)")
                return
            }
        }
    }

    var alpn: String? {
        var data: UnsafePointer<UInt8>?
        var length: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &data, &length)
        guard let data, length > 0 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: data, count: Int(length)), as: UTF8.self)
    }

    private func track(_ status: Int32) {
        if status == CTLS_WANT_WRITE { waitEvents = pollOut } else if status == CTLS_WANT_READ { waitEvents = pollIn }
    }
}

/// A server end as a bare OpenSSL handle on the context of a TLSServerContext, for what TLSStream
/// does not expose (the server name a client sent).
final class BareTLSServer {
    let ssl: OpaquePointer

    init(context: TLSServerContext, fd: Int32) {
        ssl = SSL_new(context.ctx)!
        SSL_set_fd(ssl, fd)
        SSL_set_accept_state(ssl)
    }

    deinit {
        SSL_free(ssl)
    }

    /// CTLS_OK, CTLS_WANT_*, CTLS_CLOSED or CTLS_FAILED.
    func handshake() -> Int32 {
        var e: Int32 = 0
        return ctls_handshake(ssl, &e)
    }
}
