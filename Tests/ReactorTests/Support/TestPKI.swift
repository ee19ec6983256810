import Foundation
@testable import Reactor

// Real certificates made by the `openssl` command at test time, shared by every TLS test class.

/// A throw-away PKI in a temporary folder: root CA -> intermediate CA -> leaf for localhost and
/// 127.0.0.1, plus broken variants. Made once per test run.
final class TestPKI {
    static let shared: TestPKI = {
        do {
            let pki = try TestPKI()
            createdDir.locked { $0 = pki.dir }
            // At exit, not in a tearDown: the test classes that use the PKI run in any order.
            atexit {
                if let dir = TestPKI.createdDir.locked({ $0 }) { try? FileManager.default.removeItem(atPath: dir) }
            }
            return pki
        } catch {
            fatalError("cannot create test certificates: \(error)")
        }
    }()

    /// The folder to remove after the tests, when one was made.
    static let createdDir = Protected<String?>(nil)

    let dir: String
    /// The root alone: clients trust only this, so the intermediate must come from the server.
    var caFile: String { dir + "/ca.pem" }
    /// Leaf then intermediate.
    var chainFile: String { dir + "/chain.pem" }
    var keyFile: String { dir + "/leaf.key" }
    var otherKeyFile: String { dir + "/other.key" }
    var encryptedKeyFile: String { dir + "/encrypted.key" }
    var expiredFile: String { dir + "/expired.pem" }
    var futureFile: String { dir + "/future.pem" }
    var notPEMFile: String { dir + "/not-pem.pem" }
    var missingFile: String { dir + "/missing.pem" }

    private init() throws {
        dir = NSTemporaryDirectory() + "wsgate-tls-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir + "/db", withIntermediateDirectories: true)
        // One config for `req`, `x509 -extfile` and `ca`, independent of the system's openssl.cnf.
        let config = """
            [ req ]
            distinguished_name = dn
            prompt = no
            [ dn ]
            CN = unused
            [ v3_ca ]
            basicConstraints = critical, CA:TRUE
            keyUsage = critical, keyCertSign, cRLSign
            subjectKeyIdentifier = hash
            [ v3_leaf ]
            basicConstraints = CA:FALSE
            keyUsage = critical, digitalSignature, keyEncipherment
            extendedKeyUsage = serverAuth
            subjectAltName = DNS:localhost, IP:127.0.0.1
            [ ca ]
            default_ca = intermediate
            [ intermediate ]
            database = \(dir)/db/index.txt
            serial = \(dir)/db/serial
            new_certs_dir = \(dir)/db
            certificate = \(dir)/intermediate.pem
            private_key = \(dir)/intermediate.key
            default_md = sha256
            policy = any
            unique_subject = no
            [ any ]
            commonName = supplied

            """
        try config.write(toFile: dir + "/openssl.cnf", atomically: true, encoding: .utf8)
        try "".write(toFile: dir + "/db/index.txt", atomically: true, encoding: .utf8)
        try "1000\n".write(toFile: dir + "/db/serial", atomically: true, encoding: .utf8)
        try "this is not a certificate\n".write(toFile: dir + "/not-pem.pem", atomically: true, encoding: .utf8)

        let cnf = dir + "/openssl.cnf"
        func key(_ name: String, _ extra: [String] = []) throws {
            try run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"] + extra + ["-out", "\(dir)/\(name)"])
        }
        try key("ca.key")
        try key("intermediate.key")
        try key("leaf.key")
        try key("other.key")
        try key("encrypted.key", ["-aes256", "-pass", "pass:secret"])
        try run(["req", "-config", cnf, "-x509", "-new", "-key", "\(dir)/ca.key", "-subj", "/CN=wsgate test root",
                 "-extensions", "v3_ca", "-days", "2", "-out", "\(dir)/ca.pem"])
        try run(["req", "-config", cnf, "-new", "-key", "\(dir)/intermediate.key", "-subj", "/CN=wsgate test intermediate",
                 "-out", "\(dir)/intermediate.csr"])
        try run(["x509", "-req", "-in", "\(dir)/intermediate.csr", "-CA", "\(dir)/ca.pem", "-CAkey", "\(dir)/ca.key",
                 "-set_serial", "1", "-days", "2", "-extfile", cnf, "-extensions", "v3_ca", "-out", "\(dir)/intermediate.pem"])
        try run(["req", "-config", cnf, "-new", "-key", "\(dir)/leaf.key", "-subj", "/CN=localhost", "-out", "\(dir)/leaf.csr"])
        try run(["x509", "-req", "-in", "\(dir)/leaf.csr", "-CA", "\(dir)/intermediate.pem", "-CAkey", "\(dir)/intermediate.key",
                 "-set_serial", "2", "-days", "2", "-extfile", cnf, "-extensions", "v3_leaf", "-out", "\(dir)/leaf.pem"])
        // OpenSSL 3.0's `x509` cannot backdate; `ca` takes explicit start and end dates.
        for (file, start, end) in [("expired.pem", "20200101000000Z", "20200102000000Z"),
                                   ("future.pem", "20990101000000Z", "20990102000000Z")] {
            try run(["ca", "-batch", "-config", cnf, "-extensions", "v3_leaf", "-notext", "-in", "\(dir)/leaf.csr",
                     "-startdate", start, "-enddate", end, "-out", "\(dir)/\(file)"])
        }
        let leaf = try String(contentsOfFile: dir + "/leaf.pem", encoding: .utf8)
        let intermediate = try String(contentsOfFile: dir + "/intermediate.pem", encoding: .utf8)
        try (leaf + intermediate).write(toFile: chainFile, atomically: true, encoding: .utf8)
    }

    private func run(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        if process.terminationStatus != 0 {
            throw NSError(domain: "openssl", code: Int(process.terminationStatus),
                          userInfo: [NSLocalizedDescriptionKey: "openssl \(arguments.joined(separator: " ")): \(text)"])
        }
    }
}

extension TestPKI {
    /// The server context from the test chain and key, or from the files given instead.
    func serverContext(certificateFile: String? = nil, privateKeyFile: String? = nil,
                       releaseBuffers: Bool = true) throws(TLSError) -> TLSServerContext {
        try TLSServerContext.load(certificateFile: certificateFile ?? chainFile, privateKeyFile: privateKeyFile ?? keyFile,
                                  releaseBuffers: releaseBuffers)
    }
}
