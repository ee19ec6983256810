// swift-tools-version:6.0
import PackageDescription

// Swift 5 language mode on purpose: every loop's state is confined to its own thread by
// construction, which the Swift 6 checker cannot express without @unchecked annotations
// on nearly every type of the reactor and the Lua binding.
// Release builds do not check exclusivity at run time, as the standard library is built: the
// checks were a tenth of the instructions of a 64-byte echo (every inout use of a connection's
// buffers), and debug builds, which the tests run, still check every access.
let hotPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "wsgate",
    products: [
        .executable(name: "wsgate", targets: ["wsgate"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
    ],
    targets: [
        .systemLibrary(name: "CLua", pkgConfig: "lua5.4", providers: [.apt(["liblua5.4-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // No pkgConfig: hiredis.pc adds -D_FILE_OFFSET_BITS=64, which SwiftPM refuses with a warning; the headers are under /usr/include/hiredis.
        .systemLibrary(name: "CHiredis", providers: [.apt(["libhiredis-dev"])]),
        .target(name: "CSystem"),
        .target(name: "CBase64"),
        .target(name: "CSignature", dependencies: ["COpenSSL"]),
        .target(name: "WebSocketCodec", dependencies: ["CBase64", "COpenSSL", "CZlib"], swiftSettings: hotPath),
        .target(name: "CTLS", dependencies: ["COpenSSL"]),
        .target(name: "Reactor", dependencies: ["CSystem", "CTLS", "COpenSSL"], swiftSettings: hotPath),
        .target(name: "Redis", dependencies: ["CHiredis", "Reactor"]),
        .target(name: "CLuaSupport", dependencies: ["CLua"]),
        .target(name: "LuaRuntime", dependencies: ["CLua", "CLuaSupport"], swiftSettings: hotPath),
        .target(name: "Gateway", dependencies: [
            "WebSocketCodec", "Reactor", "LuaRuntime", "CLua", "CSignature", "Redis",
            .product(name: "Logging", package: "swift-log"),
        ], swiftSettings: hotPath),
        .executableTarget(name: "wsgate", dependencies: [
            "Gateway", "Redis",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "WebSocketCodecTests", dependencies: ["WebSocketCodec", "CBase64"]),
        .testTarget(name: "LuaRuntimeTests", dependencies: ["LuaRuntime", "CLua"]),
        .testTarget(name: "GatewayTests", dependencies: ["Gateway", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "ReactorTests", dependencies: ["Reactor", "CTLS", "COpenSSL"]),
        .testTarget(name: "RedisTests", dependencies: ["Redis", "Reactor"]),
    ],
    swiftLanguageModes: [.v5]
)
