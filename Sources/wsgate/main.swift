import ArgumentParser
import Foundation
import Gateway
import Redis

struct WSGate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wsgate",
        abstract: "A WebSocket gateway that routes each connection to a Lua endpoint script.",
        subcommands: [Serve.self, ProbeCommand.self],
        defaultSubcommand: Serve.self
    )
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the gateway (the default when no subcommand is given)."
    )

    @Option(help: "JSON config file.")
    var config: String?

    @Option(help: "Address to listen on (overrides the config's host).")
    var host: String?

    @Option(help: "Port to listen on (overrides the config's port).")
    var port: Int?

    @Option(help: "Folder of endpoint scripts (overrides the config's endpoints).")
    var endpoints: String?

    @Option(help: "Event loops to run; 0 means one per core (overrides the config's workers).")
    var workers: Int?

    @Option(name: .customLong("tls-cert"), help: "PEM certificate (chain) for wss:// (overrides the config's tls.certificate).")
    var tlsCertificate: String?

    @Option(name: .customLong("tls-key"), help: "PEM private key for wss:// (overrides the config's tls.privateKey).")
    var tlsPrivateKey: String?

    @Option(name: .customLong("admin-port"), help: "Port of the management API on admin.host (overrides the config's admin.port; 0 = off).")
    var adminPort: Int?

    @Option(name: .customLong("admin-token-file"), help: "File holding the management API's bearer token (overrides the config's admin.tokenFile).")
    var adminTokenFile: String?

    @Option(help: "Join a cluster on this Redis, redis://host[:port][/db] (sets the config's cluster.redis).")
    var redis: String?

    /// The config file (or the defaults) with the command line's overrides on top; read again on SIGHUP.
    func settings() throws(ConfigError) -> GatewayConfig {
        var settings = GatewayConfig()
        if let config { settings = try GatewayConfig.load(path: config) }
        if let host { settings.host = host }
        if let port {
            guard (0...65535).contains(port) else { throw ConfigError(message: "--port must be between 0 and 65535") }
            settings.port = port
        }
        if let endpoints { settings.endpoints = endpoints }
        if let tlsCertificate { settings.tlsCertificate = tlsCertificate }
        if let tlsPrivateKey { settings.tlsPrivateKey = tlsPrivateKey }
        if (settings.tlsCertificate == nil) != (settings.tlsPrivateKey == nil) {
            throw ConfigError(message: "TLS needs both a certificate and a private key (--tls-cert and --tls-key)")
        }
        if let adminPort {
            guard (0...65535).contains(adminPort) else { throw ConfigError(message: "--admin-port must be between 0 and 65535") }
            settings.adminPort = adminPort
        }
        if let adminTokenFile {
            settings.adminTokenFile = adminTokenFile
            settings.adminToken = nil
        }
        _ = try settings.resolvedAdminToken()
        if let redis {
            switch RedisEndpoint.parse(redis) {
            case .success(let endpoint):
                if settings.cluster == nil { settings.cluster = ClusterSettings(redis: endpoint) } else { settings.cluster!.redis = endpoint }
            case .failure(let problem): throw ConfigError(message: "--redis \(problem.message)")
            }
        }
        _ = try settings.cluster?.resolvedPassword()
        if let workers {
            guard (0...1024).contains(workers) else { throw ConfigError(message: "--workers must be between 0 and 1024") }
            settings.workers = workers
        }
        return settings
    }

    func run() throws {
        do {
            let gateway = try Gateway(config: try settings(), reloadConfig: settings)
            throw ExitCode(gateway.run())
        } catch let error as ConfigError {
            fail(error.message)
        } catch let error as StartupError {
            fail(error.message)
        }
    }

    private func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("wsgate: \(message)\n".utf8))
        Foundation.exit(2)
    }
}

struct ProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe",
        abstract: "Check a WebSocket endpoint: connect, optionally send, wait for the first message, close.",
        discussion: "Prints one JSON object. Exit status: 0 connected, 1 not connected, 2 bad arguments."
    )

    @Argument(help: "ws:// or wss:// URL.")
    var url: String

    @Option(help: "Text message to send once connected.")
    var data: String?

    @Option(help: "Seconds to wait for the connection and the first message.")
    var timeout: Double = 5

    @Option(name: .customLong("header"), help: "Extra request header, \"Name: value\" (repeatable).")
    var headers: [String] = []

    @Flag(help: "Do not verify the server's TLS certificate.")
    var insecure = false

    @Option(name: .customLong("ca-file"), help: "PEM file of CAs to trust instead of the system store.")
    var caFile: String?

    @Flag(name: .customLong("no-compression"), help: "Do not offer permessage-deflate.")
    var noCompression = false

    func run() throws {
        let (json, code) = Probe.run(Probe.Options(url: url, data: data, timeoutSeconds: timeout, headers: headers,
                                                   insecure: insecure, caFile: caFile, compression: !noCompression))
        print(json)
        throw ExitCode(code)
    }
}

// Usage errors exit with 2, as start-up errors and a probe's bad arguments do (ArgumentParser's
// default is 64).
do {
    var command = try WSGate.parseAsRoot()
    try command.run()
} catch {
    if WSGate.exitCode(for: error) == .validationFailure {
        FileHandle.standardError.write(Data((WSGate.fullMessage(for: error) + "\n").utf8))
        exit(2)
    }
    WSGate.exit(withError: error)
}
