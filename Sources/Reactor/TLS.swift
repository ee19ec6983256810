import COpenSSL
import CTLS
import Glibc

/// Why a certificate and key cannot serve, or a CA file cannot be trusted: every case names the
/// file and is worth exiting over.
public struct TLSError: Error, CustomStringConvertible {
    public enum Kind: Equatable {
        /// The file cannot be opened or read.
        case unreadable
        /// No usable PEM certificate, or no usable PEM private key, in the file.
        case notPEM
        /// The private key is encrypted; the gateway needs an unencrypted one.
        case encryptedKey
        /// The private key is not the one of the (leaf) certificate.
        case keyMismatch
        case expired
        case notYetValid
        /// Anything else OpenSSL refused (a key too small for its security level, out of memory...).
        case invalid
    }

    public let kind: Kind
    /// The file the problem is in (the key file for `keyMismatch`; "" for the system's trust store).
    public let file: String
    public let message: String

    public var description: String { message }
}

/// A server certificate chain and key with the TLS settings of the gateway: TLS 1.2 and 1.3 only,
/// OpenSSL's default ciphers, ALPN "http/1.1", session tickets, and per-connection buffers that
/// are released while a connection is idle.
///
/// Immutable after `load`, so one context serves the streams of every loop (SSL_new on a shared
/// SSL_CTX is thread-safe, and each SSL holds a reference to it). To reload certificates, load a
/// new context and hand it to new connections; existing ones keep the old one alive until they end.
public final class TLSServerContext: @unchecked Sendable {
    let ctx: OpaquePointer
    public let certificateFile: String
    public let privateKeyFile: String

    private init(ctx: OpaquePointer, certificateFile: String, privateKeyFile: String) {
        self.ctx = ctx
        self.certificateFile = certificateFile
        self.privateKeyFile = privateKeyFile
    }

    deinit { SSL_CTX_free(ctx) }

    /// Loads a PEM certificate file (the leaf first, then any intermediates) and its PEM private key.
    public static func load(certificateFile: String, privateKeyFile: String) throws(TLSError) -> TLSServerContext {
        try load(certificateFile: certificateFile, privateKeyFile: privateKeyFile, releaseBuffers: true)
    }

    /// `releaseBuffers: false` exists only to measure what SSL_MODE_RELEASE_BUFFERS saves.
    static func load(certificateFile: String, privateKeyFile: String, releaseBuffers: Bool) throws(TLSError) -> TLSServerContext {
        let certName = "TLS certificate \(certificateFile)"
        let keyName = "TLS private key \(privateKeyFile)"
        try checkReadable(certificateFile, name: certName)
        try checkReadable(privateKeyFile, name: keyName)

        ERR_clear_error()
        guard let ctx = SSL_CTX_new(TLS_server_method()) else {
            throw TLSError(kind: .invalid, file: certificateFile, message: "\(certName): cannot create a TLS context: \(errorText())")
        }
        // From here on the context is freed by the TLSServerContext, even when loading fails.
        let context = TLSServerContext(ctx: ctx, certificateFile: certificateFile, privateKeyFile: privateKeyFile)

        guard ctls_ctx_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 else {
            throw TLSError(kind: .invalid, file: certificateFile, message: "\(certName): cannot restrict TLS to 1.2 and later: \(errorText())")
        }
        var mode = Int(SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER)
        if releaseBuffers { mode |= Int(SSL_MODE_RELEASE_BUFFERS) }
        _ = ctls_ctx_set_mode(ctx, mode)
        ctls_ctx_select_http11_alpn(ctx)
        ctls_ctx_refuse_passphrases(ctx)

        if SSL_CTX_use_certificate_chain_file(ctx, certificateFile) != 1 {
            let pemProblem = ctls_error_queue_has(ERR_LIB_PEM, 0) == 1
            let why = errorText()
            throw pemProblem
                ? TLSError(kind: .notPEM, file: certificateFile, message: "\(certName): not a PEM certificate (\(why))")
                : TLSError(kind: .invalid, file: certificateFile, message: "\(certName): unusable certificate (\(why))")
        }

        var date = [CChar](repeating: 0, count: 64)
        let validity = ctls_ctx_certificate_validity(ctx, &date, date.count)
        let when = String(cString: date)
        switch Int(validity) {
        case Int(CTLS_CERT_EXPIRED):
            throw TLSError(kind: .expired, file: certificateFile, message: "\(certName): expired on \(when)")
        case Int(CTLS_CERT_NOT_YET_VALID):
            throw TLSError(kind: .notYetValid, file: certificateFile, message: "\(certName): not valid before \(when)")
        case Int(CTLS_CERT_UNKNOWN):
            throw TLSError(kind: .invalid, file: certificateFile, message: "\(certName): unreadable validity dates")
        default:
            break
        }

        let mismatch = TLSError(kind: .keyMismatch, file: privateKeyFile,
                                message: "\(keyName) does not match the certificate \(certificateFile)")
        ERR_clear_error()
        _ = ctls_passphrase_requested()
        if SSL_CTX_use_PrivateKey_file(ctx, privateKeyFile, SSL_FILETYPE_PEM) != 1 {
            if ctls_passphrase_requested() != 0 {
                ERR_clear_error()
                throw TLSError(kind: .encryptedKey, file: privateKeyFile,
                               message: "\(keyName): encrypted with a passphrase; an unencrypted key is needed")
            }
            if ctls_error_queue_has(ERR_LIB_X509, X509_R_KEY_VALUES_MISMATCH) == 1 {
                ERR_clear_error()
                throw mismatch
            }
            throw TLSError(kind: .notPEM, file: privateKeyFile, message: "\(keyName): not a PEM private key (\(errorText()))")
        }
        if SSL_CTX_check_private_key(ctx) != 1 {
            ERR_clear_error()
            throw mismatch
        }
        return context
    }
}

private func checkReadable(_ path: String, name: String) throws(TLSError) {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    var failure = fd < 0 ? errno : 0
    if fd >= 0 {
        // open() succeeds on a folder; read() tells.
        var byte: UInt8 = 0
        if Glibc.read(fd, &byte, 1) < 0 { failure = errno }
        close(fd)
    }
    if failure != 0 {
        throw TLSError(kind: .unreadable, file: path, message: "\(name): cannot read: \(String(cString: strerror(failure)))")
    }
}

/// The settings of the gateway's outbound TLS connections: TLS 1.2 and 1.3 only, OpenSSL's default
/// ciphers, ALPN offering "http/1.1", the server's certificate verified against the system's trust
/// store or one CA file, and the same buffer modes as the server side.
///
/// Immutable after `load` and shared by the streams of every loop, as `TLSServerContext` is.
public final class TLSClientContext: @unchecked Sendable {
    let ctx: OpaquePointer
    /// The only trusted certificates when set; the system's trust store otherwise.
    public let caFile: String?

    private init(ctx: OpaquePointer, caFile: String?) {
        self.ctx = ctx
        self.caFile = caFile
    }

    deinit { SSL_CTX_free(ctx) }

    /// Trusts the certificates of the PEM file `caFile` only, or the system's trust store when nil.
    public static func load(caFile: String?) throws(TLSError) -> TLSClientContext {
        let name = caFile.map { "TLS CA file \($0)" } ?? "TLS client"
        if let caFile { try checkReadable(caFile, name: name) }

        ERR_clear_error()
        guard let ctx = SSL_CTX_new(TLS_client_method()) else {
            throw TLSError(kind: .invalid, file: caFile ?? "", message: "\(name): cannot create a TLS context: \(errorText())")
        }
        let context = TLSClientContext(ctx: ctx, caFile: caFile)

        guard ctls_ctx_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 else {
            throw TLSError(kind: .invalid, file: caFile ?? "", message: "\(name): cannot restrict TLS to 1.2 and later: \(errorText())")
        }
        _ = ctls_ctx_set_mode(ctx, Int(SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS))
        // The wire format: each protocol name preceded by its length. (0 is success here.)
        let alpn: [UInt8] = [8] + Array("http/1.1".utf8)
        guard SSL_CTX_set_alpn_protos(ctx, alpn, UInt32(alpn.count)) == 0 else {
            throw TLSError(kind: .invalid, file: caFile ?? "", message: "\(name): cannot offer ALPN: \(errorText())")
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)

        if let caFile {
            if SSL_CTX_load_verify_locations(ctx, caFile, nil) != 1 {
                throw TLSError(kind: .notPEM, file: caFile, message: "\(name): no PEM certificates (\(errorText()))")
            }
            // The file is what the user chose to trust, so an intermediate or a server's own
            // certificate in it is an anchor too, as it is for curl: the chain need not reach a root.
            _ = X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx), UInt(X509_V_FLAG_PARTIAL_CHAIN))
        } else if SSL_CTX_set_default_verify_paths(ctx) != 1 {
            throw TLSError(kind: .invalid, file: "", message: "\(name): cannot use the system's trusted certificates: \(errorText())")
        }
        return context
    }
}

/// The outcome of `TLSStream.handshake()`.
public enum TLSStatus: Equatable {
    case done
    /// Call again when the socket is readable.
    case wantRead
    /// Call again when the socket is writable (EPOLLOUT).
    case wantWrite
    /// The peer closed the connection.
    case closed
    /// A protocol error (a plain-HTTP client, no shared version or cipher...): close the socket,
    /// sending nothing more.
    case failed(String)
}

/// The outcome of `TLSStream.read` and `TLSStream.write`.
public enum TLSIOResult: Equatable {
    /// Bytes of plaintext read or accepted (always > 0).
    case bytes(Int)
    /// Retry when the socket is readable. (A write can need this too, rarely.)
    case wantRead
    /// Retry when the socket is writable. (A read can need this too: OpenSSL may have to answer
    /// the peer, e.g. a TLS 1.3 key update, before it can go on reading.)
    case wantWrite
    /// The peer closed: close_notify received, or the TCP stream ended (with or without one).
    case closed
    /// A protocol or socket error: close the socket; do not call `shutdown()`.
    case failed(String)
}

/// One TLS connection over a non-blocking socket, server or client side, owned by one loop's thread.
///
/// Nothing here blocks: each call makes one OpenSSL call that does as much I/O as the socket
/// allows, and says what to wait for when it could not finish. With level-triggered epoll:
/// - Call `handshake()` on readiness until it returns `.done` (register for EPOLLIN on `.wantRead`,
///   EPOLLOUT on `.wantWrite`). OpenSSL reads no further than the record it needs (no read-ahead),
///   so bytes sent right behind the handshake stay in the socket and epoll reports them.
/// - Call `shutdown()` before closing the socket on an orderly close: besides telling the peer, it
///   keeps OpenSSL from invalidating the session (SSL_free drops sessions of unfinished streams).
/// - Writes go through write(2), not send(MSG_NOSIGNAL): SIGPIPE must be ignored (cs_ignore_sigpipe).
/// - After a read that returned bytes, read again while `hasBufferedInput`: decrypted bytes that
///   OpenSSL holds do not make the socket readable.
/// - Writes may be partial. After `.wantWrite` (or `.wantRead`), the next write must pass the same
///   unsent bytes again: the pointer may change (the buffer may move or grow) and more bytes may
///   follow, but the first ones must be the same and not fewer.
///
/// The stream never closes the file descriptor: the owner closes it after the stream is done with it.
public final class TLSStream {
    private let ssl: OpaquePointer
    /// A fatal error happened: OpenSSL must not be asked to send close_notify.
    private var broken = false
    private var shutdownSent = false

    /// Set when the peer's certificate is checked: a failed handshake is then first explained by it.
    private let verifiesPeer: Bool
    /// Why the client stream could not be set up; its handshake fails with this.
    private var setupProblem: String?

    public init(context: TLSServerContext, fd: Int32) {
        ssl = TLSStream.newSSL(context.ctx, fd)
        SSL_set_accept_state(ssl)
        verifiesPeer = false
    }

    /// The client side. `serverName` is the host of the URL: sent as SNI unless it is an IP address,
    /// and, when `verify` is set, the name (or address) the certificate must be issued for.
    /// `verify: false` accepts any certificate.
    public init(client context: TLSClientContext, fd: Int32, serverName: String, isIPLiteral: Bool, verify: Bool) {
        ssl = TLSStream.newSSL(context.ctx, fd)
        SSL_set_connect_state(ssl)
        verifiesPeer = verify
        ERR_clear_error() // so that a setup problem reports its own errors only
        // RFC 6066 forbids IP addresses in SNI.
        if !isIPLiteral && ctls_set_sni(ssl, serverName) != 1 {
            setupProblem = "TLS: cannot send \"\(serverName)\" as the server name (\(errorText()))"
        }
        if verify {
            let named = isIPLiteral
                ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), serverName)
                : SSL_set1_host(ssl, serverName)
            if named != 1 {
                setupProblem = "TLS: cannot verify certificates for \"\(serverName)\" (\(errorText()))"
            }
        } else {
            SSL_set_verify(ssl, SSL_VERIFY_NONE, nil)
        }
    }

    private static func newSSL(_ ctx: OpaquePointer, _ fd: Int32) -> OpaquePointer {
        guard let ssl = SSL_new(ctx) else { fatalError("SSL_new failed: out of memory") }
        guard SSL_set_fd(ssl, fd) == 1 else { fatalError("SSL_set_fd failed: out of memory") }
        return ssl
    }

    deinit { SSL_free(ssl) }

    public func handshake() -> TLSStatus {
        if let setupProblem {
            broken = true
            return .failed(setupProblem)
        }
        var sysErrno: Int32 = 0
        switch ctls_handshake(ssl, &sysErrno) {
        case Int32(CTLS_OK): return .done
        case Int32(CTLS_WANT_READ): return .wantRead
        case Int32(CTLS_WANT_WRITE): return .wantWrite
        case Int32(CTLS_CLOSED): return .closed
        default:
            // The error queue only says "certificate verify failed"; the verify result says why.
            let verdict = SSL_get_verify_result(ssl)
            if verifiesPeer && verdict != X509_V_OK {
                broken = true
                ERR_clear_error()
                return .failed("TLS certificate verification failed: \(String(cString: X509_verify_cert_error_string(verdict)))")
            }
            return .failed(failure(sysErrno))
        }
    }

    /// Reads up to `count` (> 0) bytes of plaintext.
    public func read(into p: UnsafeMutableRawPointer, count: Int) -> TLSIOResult {
        precondition(count > 0, "TLSStream.read needs room for at least one byte")
        var done = 0
        var sysErrno: Int32 = 0
        let status = ctls_read(ssl, p, count, &done, &sysErrno)
        return result(status, done, sysErrno)
    }

    /// Encrypts and sends part of `count` bytes: `.bytes(n)` covers one TLS record (up to 16 KiB),
    /// plus the record a previous `.wantWrite` left pending, so n <= 32 KiB; call again for the rest.
    public func write(from p: UnsafeRawPointer, count: Int) -> TLSIOResult {
        if count == 0 { return .bytes(0) }
        var done = 0
        var sysErrno: Int32 = 0
        let status = ctls_write(ssl, p, count, &done, &sysErrno)
        return result(status, done, sysErrno)
    }

    /// Decrypted bytes wait inside OpenSSL (SSL_pending > 0): read again before waiting for epoll.
    public var hasBufferedInput: Bool { SSL_pending(ssl) > 0 }

    /// Sends close_notify if the socket takes it now; never waits for the peer's. Call once,
    /// before closing the socket; does nothing after a failure or before the handshake is done.
    public func shutdown() {
        guard !broken, !shutdownSent, SSL_is_init_finished(ssl) == 1 else { return }
        shutdownSent = true
        _ = ctls_shutdown(ssl)
    }

    /// The protocol chosen by ALPN ("http/1.1"), or nil when the client offered none we speak.
    public var negotiatedALPN: String? {
        var data: UnsafePointer<UInt8>?
        var length: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &data, &length)
        guard let data, length > 0 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: data, count: Int(length)), as: UTF8.self)
    }

    /// "TLSv1.3" or "TLSv1.2" once the handshake is done.
    public var protocolVersion: String { String(cString: SSL_get_version(ssl)) }

    private func result(_ status: Int32, _ done: Int, _ sysErrno: Int32) -> TLSIOResult {
        switch status {
        case Int32(CTLS_OK): return .bytes(done)
        case Int32(CTLS_WANT_READ): return .wantRead
        case Int32(CTLS_WANT_WRITE): return .wantWrite
        case Int32(CTLS_CLOSED): return .closed
        default: return .failed(failure(sysErrno))
        }
    }

    private func failure(_ sysErrno: Int32) -> String {
        broken = true
        let text = errorText(sysErrno)
        return text.isEmpty ? "TLS error" : text
    }
}

/// Drains the thread's OpenSSL error queue as text (or strerror(sysErrno) when it is empty).
private func errorText(_ sysErrno: Int32 = 0) -> String {
    var buffer = [CChar](repeating: 0, count: 512)
    _ = ctls_error_text(&buffer, buffer.count, sysErrno)
    return String(cString: buffer)
}
