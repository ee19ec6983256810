import XCTest
import WebSocketCodec

// MARK: - Helpers

/// JSON-ish text of exactly `count` bytes, the kind of traffic a gateway carries.
private func sampleText(_ count: Int, seed: UInt64 = 1) -> [UInt8] {
    var random = SplitMix64(seed: seed)
    let names = ["alice", "bob", "carol", "dave", "eve", "mallory", "trent", "peggy"]
    var out: [UInt8] = []
    out.reserveCapacity(count + 128)
    while out.count < count {
        let record = "{\"id\":\(random.below(100_000)),\"user\":\"\(names[random.below(names.count)])\",\"score\":\(random.below(1000)),\"online\":\(random.below(2) == 1)}\n"
        out.append(contentsOf: record.utf8)
    }
    return Array(out.prefix(count))
}

/// The text the Python payloads below were made from.
private let pythonItems: [UInt8] = Array((0..<80).map { "item \($0 % 37) value \($0 * 7 % 101);" }.joined().utf8)

/// Payloads made by CPython's zlib (1.2.13): `zlib.compressobj(level, zlib.DEFLATED, -15)`,
/// `compress(data) + flush(zlib.Z_SYNC_FLUSH)` with the trailing 00 00 FF FF removed, except:
/// takeover1/takeover2 come from one compressobj (context takeover, `pythonItems` twice);
/// final1 is `compress(items) + flush(zlib.Z_FINISH)` (a BFINAL block, nothing stripped) and final2
/// the same from a compressobj with `zdict=items`, i.e. referring back into final1's message;
/// window9 is `compressobj(9, zlib.DEFLATED, -9, 9)`. hello is "Hello" (the RFC 7692 7.2.3.1
/// example), fox is "The quick brown fox jumps over the lazy dog. " * 20 at level 9.
private enum Python {
    static let hello: [UInt8] = [
        0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00,
    ]
    static let fox: [UInt8] = [
        0x0a, 0xc9, 0x48, 0x55, 0x28, 0x2c, 0xcd, 0x4c, 0xce, 0x56, 0x48, 0x2a, 0xca, 0x2f, 0xcf, 0x53,
        0x48, 0xcb, 0xaf, 0x50, 0xc8, 0x2a, 0xcd, 0x2d, 0x28, 0x56, 0xc8, 0x2f, 0x4b, 0x2d, 0x52, 0x28,
        0x01, 0x4a, 0xe7, 0x24, 0x56, 0x55, 0x2a, 0xa4, 0xe4, 0xa7, 0xeb, 0x29, 0x84, 0x8c, 0x2a, 0x1e,
        0x55, 0x3c, 0xaa, 0x98, 0xda, 0x8a, 0x01, 0x00,
    ]
    static let takeover1: [UInt8] = [
        0x5c, 0x93, 0xbb, 0x6d, 0x44, 0x31, 0x0c, 0x04, 0x5b, 0xb9, 0x12, 0x1e, 0x49, 0x7d, 0x48, 0x5c,
        0x35, 0x0e, 0x2e, 0x38, 0xc0, 0xce, 0x6c, 0xd7, 0x6f, 0x18, 0xda, 0x11, 0xa0, 0x17, 0x6e, 0x40,
        0x68, 0x56, 0x1c, 0xbe, 0xbf, 0x5f, 0x5f, 0x8f, 0xeb, 0xf1, 0xfb, 0xf1, 0xf9, 0xf3, 0x7a, 0x5c,
        0xcf, 0xf7, 0x7f, 0x34, 0xc5, 0xb9, 0xa2, 0x2b, 0x5a, 0x5b, 0x39, 0x94, 0xdd, 0x56, 0x6e, 0xe4,
        0x5c, 0xb9, 0x2b, 0x47, 0x5f, 0x79, 0x28, 0x37, 0x5f, 0x79, 0x92, 0x6b, 0xe5, 0x54, 0xee, 0x63,
        0xe5, 0x52, 0x1e, 0x21, 0x1c, 0xf0, 0x26, 0x7c, 0x1b, 0x50, 0x84, 0x06, 0x62, 0x0a, 0xd1, 0x60,
        0x2c, 0x31, 0x1a, 0x90, 0x25, 0x48, 0x83, 0x92, 0x09, 0x28, 0x8d, 0x09, 0x30, 0x8d, 0x09, 0x38,
        0x5d, 0xbd, 0x0c, 0xd0, 0x50, 0x31, 0x07, 0x34, 0xd4, 0xcc, 0x01, 0x6d, 0xaa, 0xe6, 0x80, 0x76,
        0x75, 0x73, 0x40, 0x87, 0xba, 0x39, 0xa0, 0x83, 0xdf, 0x07, 0x74, 0x8a, 0xd4, 0x21, 0x4d, 0x91,
        0x3a, 0xa4, 0x29, 0x52, 0x87, 0xb4, 0x44, 0xea, 0x90, 0x6a, 0x22, 0x00, 0xd5, 0x40, 0xc0, 0x69,
        0x1a, 0x08, 0x38, 0x5d, 0xd5, 0x62, 0x2f, 0x5d, 0xd5, 0x02, 0xce, 0x50, 0xb5, 0xd8, 0x1f, 0xaa,
        0x6a, 0x01, 0x67, 0x57, 0x35, 0x1e, 0xed, 0x6c, 0x8d, 0xa6, 0x14, 0xa3, 0x28, 0x94, 0xe4, 0x3c,
        0x3d, 0xcb, 0x7e, 0x7a, 0x56, 0x7e, 0x7a, 0x56, 0x75, 0x7a, 0xd6, 0x4f, 0xcd, 0xcc, 0x4f, 0xcd,
        0xac, 0x6e, 0x9a, 0xf9, 0xb8, 0x69, 0x16, 0x88, 0x08, 0x61, 0x43, 0x44, 0x10, 0x1b, 0x95, 0x60,
        0xec, 0x68, 0x05, 0xe4, 0x40, 0x2b, 0x28, 0x07, 0x5a, 0x81, 0x39, 0xd1, 0x0a, 0xd0, 0xf4, 0x9b,
        0x67, 0x89, 0x56, 0x90, 0x16, 0x5a, 0x41, 0x8a, 0x88, 0x80, 0x32, 0x00, 0xa7, 0x31, 0xb0, 0x6f,
        0x16, 0x0f, 0xf7, 0xd1, 0xe2, 0x21, 0x9c, 0x81, 0x87, 0xfb, 0x6c, 0x59, 0xd7, 0xbe, 0x5b, 0x3c,
        0x84, 0xb3, 0xa3, 0x15, 0x9c, 0x03, 0xad, 0xf6, 0xe1, 0xa2, 0xd5, 0xde, 0x39, 0x5a, 0x41, 0x9a,
        0x68, 0xb5, 0x0f, 0x17, 0xad, 0x20, 0xb5, 0xeb, 0xba, 0x89, 0x36, 0x4e, 0xcf, 0x8c, 0xb5, 0xd1,
        0x95, 0x6a, 0xe4, 0x79, 0x7a, 0x16, 0xed, 0xf4, 0xac, 0xd9, 0xe9, 0x59, 0xcb, 0xe7, 0x1f, 0x00,
    ]
    static let takeover2: [UInt8] = [
        0x42, 0x31, 0x7f, 0xb4, 0xb4, 0x1c, 0x2d, 0x2d, 0x47, 0x4b, 0xcb, 0xd1, 0xd2, 0x72, 0xb4, 0xb4,
        0xc4, 0x51, 0x5a, 0x02, 0x00,
    ]
    static let empty: [UInt8] = [
        0x00,
    ]
    static let final1: [UInt8] = [
        0x5d, 0x93, 0xbb, 0x6d, 0x44, 0x31, 0x0c, 0x04, 0x5b, 0xb9, 0x12, 0x1e, 0x49, 0x7d, 0x48, 0x5c,
        0x35, 0x0e, 0x2e, 0x38, 0xc0, 0xce, 0x6c, 0xd7, 0x6f, 0x18, 0xda, 0x11, 0xa0, 0x17, 0x6e, 0x40,
        0x68, 0x56, 0x1c, 0xbe, 0xbf, 0x5f, 0x5f, 0x8f, 0xeb, 0xf1, 0xfb, 0xf1, 0xf9, 0xf3, 0x7a, 0x5c,
        0xcf, 0xf7, 0x7f, 0x34, 0xc5, 0xb9, 0xa2, 0x2b, 0x5a, 0x5b, 0x39, 0x94, 0xdd, 0x56, 0x6e, 0xe4,
        0x5c, 0xb9, 0x2b, 0x47, 0x5f, 0x79, 0x28, 0x37, 0x5f, 0x79, 0x92, 0x6b, 0xe5, 0x54, 0xee, 0x63,
        0xe5, 0x52, 0x1e, 0x21, 0x1c, 0xf0, 0x26, 0x7c, 0x1b, 0x50, 0x84, 0x06, 0x62, 0x0a, 0xd1, 0x60,
        0x2c, 0x31, 0x1a, 0x90, 0x25, 0x48, 0x83, 0x92, 0x09, 0x28, 0x8d, 0x09, 0x30, 0x8d, 0x09, 0x38,
        0x5d, 0xbd, 0x0c, 0xd0, 0x50, 0x31, 0x07, 0x34, 0xd4, 0xcc, 0x01, 0x6d, 0xaa, 0xe6, 0x80, 0x76,
        0x75, 0x73, 0x40, 0x87, 0xba, 0x39, 0xa0, 0x83, 0xdf, 0x07, 0x74, 0x8a, 0xd4, 0x21, 0x4d, 0x91,
        0x3a, 0xa4, 0x29, 0x52, 0x87, 0xb4, 0x44, 0xea, 0x90, 0x6a, 0x22, 0x00, 0xd5, 0x40, 0xc0, 0x69,
        0x1a, 0x08, 0x38, 0x5d, 0xd5, 0x62, 0x2f, 0x5d, 0xd5, 0x02, 0xce, 0x50, 0xb5, 0xd8, 0x1f, 0xaa,
        0x6a, 0x01, 0x67, 0x57, 0x35, 0x1e, 0xed, 0x6c, 0x8d, 0xa6, 0x14, 0xa3, 0x28, 0x94, 0xe4, 0x3c,
        0x3d, 0xcb, 0x7e, 0x7a, 0x56, 0x7e, 0x7a, 0x56, 0x75, 0x7a, 0xd6, 0x4f, 0xcd, 0xcc, 0x4f, 0xcd,
        0xac, 0x6e, 0x9a, 0xf9, 0xb8, 0x69, 0x16, 0x88, 0x08, 0x61, 0x43, 0x44, 0x10, 0x1b, 0x95, 0x60,
        0xec, 0x68, 0x05, 0xe4, 0x40, 0x2b, 0x28, 0x07, 0x5a, 0x81, 0x39, 0xd1, 0x0a, 0xd0, 0xf4, 0x9b,
        0x67, 0x89, 0x56, 0x90, 0x16, 0x5a, 0x41, 0x8a, 0x88, 0x80, 0x32, 0x00, 0xa7, 0x31, 0xb0, 0x6f,
        0x16, 0x0f, 0xf7, 0xd1, 0xe2, 0x21, 0x9c, 0x81, 0x87, 0xfb, 0x6c, 0x59, 0xd7, 0xbe, 0x5b, 0x3c,
        0x84, 0xb3, 0xa3, 0x15, 0x9c, 0x03, 0xad, 0xf6, 0xe1, 0xa2, 0xd5, 0xde, 0x39, 0x5a, 0x41, 0x9a,
        0x68, 0xb5, 0x0f, 0x17, 0xad, 0x20, 0xb5, 0xeb, 0xba, 0x89, 0x36, 0x4e, 0xcf, 0x8c, 0xb5, 0xd1,
        0x95, 0x6a, 0xe4, 0x79, 0x7a, 0x16, 0xed, 0xf4, 0xac, 0xd9, 0xe9, 0x59, 0xcb, 0xe7, 0x1f,
    ]
    static let final2: [UInt8] = [
        0x43, 0x31, 0x7f, 0xb4, 0xb4, 0x1c, 0x2d, 0x2d, 0x47, 0x4b, 0xcb, 0xd1, 0xd2, 0x72, 0xb4, 0xb4,
        0xc4, 0x51, 0x5a, 0x02, 0x00,
    ]
    static let window9: [UInt8] = [
        0x3c, 0xcf, 0xbb, 0x6d, 0x43, 0x31, 0x10, 0x05, 0xd1, 0x56, 0x5e, 0x09, 0x6f, 0x77, 0xf9, 0x85,
        0xaa, 0x71, 0xa0, 0x40, 0x80, 0x9c, 0xd9, 0xae, 0xdf, 0x30, 0x38, 0xe3, 0xf0, 0x02, 0x24, 0xf6,
        0xcc, 0xeb, 0xeb, 0xf9, 0x79, 0xdd, 0xd7, 0xcf, 0xc7, 0xfb, 0xfb, 0x79, 0xdd, 0x8f, 0xd7, 0xdf,
        0x0c, 0xe6, 0x3c, 0x33, 0x99, 0xd1, 0xce, 0x2e, 0x76, 0xc6, 0xd9, 0xcd, 0xbd, 0xce, 0xee, 0xec,
        0xea, 0x67, 0x0f, 0x76, 0xcb, 0xb3, 0xa7, 0x7b, 0x9f, 0xbd, 0xd8, 0x7d, 0x9c, 0xbd, 0xd9, 0xa3,
        0xe0, 0xc8, 0x9b, 0xfa, 0xfe, 0x81, 0x08, 0x43, 0xe2, 0x82, 0x18, 0x1a, 0x37, 0xc6, 0x10, 0xb9,
        0x41, 0x86, 0x4a, 0x7f, 0xa8, 0x0c, 0x7f, 0xc8, 0x0c, 0x7f, 0xe8, 0x4c, 0xba, 0x42, 0x68, 0x11,
        0x96, 0x42, 0x8b, 0xb2, 0x14, 0xda, 0x48, 0x4b, 0xa1, 0x9d, 0xb6, 0x14, 0x3a, 0x68, 0x4b, 0xa1,
        0x83, 0xb6, 0x14, 0x3a, 0x91, 0xa6, 0xd2, 0x85, 0x34, 0x95, 0x2e, 0xa4, 0xa9, 0x74, 0x23, 0x4d,
        0xa5, 0xfc, 0x28, 0xa1, 0x7c, 0x28, 0x9d, 0xc1, 0x87, 0xd2, 0x99, 0xa4, 0x95, 0xce, 0x24, 0xad,
        0x74, 0x16, 0x69, 0xa5, 0xb3, 0x91, 0x56, 0x3a, 0x3b, 0x69, 0x1e, 0xed, 0x94, 0x79, 0x74, 0x18,
        0x66, 0xa8, 0x4a, 0x37, 0x4a, 0x2f, 0x2e, 0x90, 0x1e, 0xdc, 0x18, 0xbd, 0xb7, 0x21, 0x4e, 0xef,
        0x9d, 0xb9, 0x6c, 0xe4, 0xf9, 0x76, 0xf3, 0x3c, 0xf4, 0x25, 0x45, 0x21, 0xb0, 0x28, 0x0a, 0x85,
        0x8d, 0xa2, 0x90, 0xd8, 0x4c, 0xd2, 0xd8, 0x69, 0x0a, 0x91, 0x83, 0xa8, 0x50, 0x39, 0xa8, 0x0a,
        0x99, 0x13, 0x67, 0x08, 0x5d, 0x40, 0x43, 0xe9, 0x42, 0x9a, 0x4a, 0x37, 0xd2, 0x54, 0xca, 0x8f,
        0x14, 0xea, 0x07, 0x9d, 0xe1, 0x07, 0x9d, 0x49, 0x5a, 0xea, 0x2c, 0xd2, 0x52, 0x67, 0x91, 0x96,
        0x3a, 0x1b, 0x69, 0xa9, 0xb3, 0x93, 0x96, 0x3a, 0x3b, 0x69, 0xa5, 0x73, 0x90, 0x56, 0x3a, 0x27,
        0xd0, 0x12, 0x3a, 0x91, 0x96, 0xd2, 0x85, 0xb4, 0x94, 0x6e, 0xa4, 0xa5, 0x34, 0x6e, 0xa8, 0x25,
        0x95, 0x2f, 0x5e, 0x0d, 0x7e, 0x78, 0x34, 0x4d, 0x73, 0x53, 0xe6, 0xc9, 0x22, 0xcc, 0x8b, 0x8d,
        0x2e, 0x0f, 0xb6, 0xf5, 0xf8, 0x05,
    ]
}

private func negotiate(_ offer: String, _ policy: DeflatePolicy = DeflatePolicy()) -> (settings: DeflateSettings, responseHeader: String)? {
    PerMessageDeflate.negotiate(offers: offer, policy: policy)
}

private let permissive = DeflatePolicy(serverNoContextTakeover: false, clientNoContextTakeover: false)

private func roundTrip(_ deflater: MessageDeflater, _ inflater: MessageInflater, _ message: [UInt8], takeover: Bool,
                       file: StaticString = #filePath, line: UInt = #line) -> Int {
    let payload = deflater.compress(message, resetAfter: !takeover)
    let (plain, result) = inflater.inflate(payload, resetAfter: !takeover)
    XCTAssertEqual(result, .ok, file: file, line: line)
    XCTAssertTrue(plain == message, "round trip of \(message.count) bytes differs", file: file, line: line)
    return payload.count
}

/// Inflates `payload` fed in the given fragment sizes (the last fragment takes the rest).
private func inflateFragmented(_ inflater: MessageInflater, _ payload: [UInt8], sizes: inout SplitMix64,
                               maxFragment: Int, limit: Int = .max, resetAfter: Bool = true) -> ([UInt8], InflateResult) {
    var out: [UInt8] = []
    var offset = 0
    while true {
        let size = min(sizes.below(maxFragment + 1), payload.count - offset) // 0 gives empty fragments too
        let final = offset + size == payload.count && sizes.below(4) != 0
        let result = payload[offset..<(offset + size)].withUnsafeBytes {
            inflater.inflate($0, into: &out, limit: limit, final: final, resetAfter: resetAfter)
        }
        offset += size
        if result != .ok || final { return (out, result) }
    }
}

private func isCorrupt(_ result: InflateResult) -> Bool {
    if case .corrupt = result { return true }
    return false
}

// MARK: - Header parsing

extension PerMessageDeflateTests {
    func testParseParametersQuotedValuesAndWhitespace() {
        let parsed = WebSocketExtension.parse(#"permessage-deflate; a; b=1;c = "2" ,  x-ext ;y="a,b\"c" , , last"#)
        XCTAssertEqual(parsed, [
            WebSocketExtension(name: "permessage-deflate", parameters: [.init(name: "a"), .init(name: "b", value: "1"), .init(name: "c", value: "2")]),
            WebSocketExtension(name: "x-ext", parameters: [.init(name: "y", value: "a,b\"c")]),
            WebSocketExtension(name: "last"),
        ])
    }

    func testParseKeepsNameCase() {
        XCTAssertEqual(WebSocketExtension.parse("PerMessage-Deflate; Client_Max_Window_Bits"),
                       [WebSocketExtension(name: "PerMessage-Deflate", parameters: [.init(name: "Client_Max_Window_Bits")])])
    }

    func testParseEmptyHeader() {
        XCTAssertEqual(WebSocketExtension.parse(""), [])
        XCTAssertEqual(WebSocketExtension.parse(" , ,"), [])
    }

    func testParseMalformedHeaders() {
        for header in ["permessage-deflate;", "permessage-deflate; =1", "permessage-deflate; a=", #"permessage-deflate; a="1"#,
                       "permessage-deflate a", "permessage-deflate; a=1 2", "; a", "permessage-deflate; a=(1)", "perm\u{e9}ssage"] {
            XCTAssertNil(WebSocketExtension.parse(header), header)
        }
    }
}

// MARK: - Server negotiation

extension PerMessageDeflateTests {
    func testServerPlainOfferWithDefaultPolicy() {
        let result = negotiate("permessage-deflate")
        XCTAssertEqual(result?.responseHeader, "permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        XCTAssertEqual(result?.settings, DeflateSettings(serverNoContextTakeover: true, clientNoContextTakeover: true,
                                                         serverMaxWindowBits: 15, clientMaxWindowBits: 15))
    }

    func testServerChromiumOffer() {
        let result = negotiate("permessage-deflate; client_max_window_bits")
        XCTAssertEqual(result?.responseHeader,
                       "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=15")
        XCTAssertEqual(result?.settings.clientMaxWindowBits, 15)
    }

    func testServerPermissivePolicyEchoesOnlyWhatWasAsked() {
        XCTAssertEqual(negotiate("permessage-deflate", permissive)?.responseHeader, "permessage-deflate")
        XCTAssertEqual(negotiate("permessage-deflate", permissive)?.settings, DeflateSettings())
        let both = negotiate("permessage-deflate; client_no_context_takeover; server_no_context_takeover", permissive)
        XCTAssertEqual(both?.responseHeader, "permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        XCTAssertEqual(both?.settings, DeflateSettings(serverNoContextTakeover: true, clientNoContextTakeover: true))
        XCTAssertEqual(negotiate("permessage-deflate; client_max_window_bits", permissive)?.responseHeader,
                       "permessage-deflate; client_max_window_bits=15")
    }

    /// Autobahn 13.x style offers against a permissive server: (offer, response, settings).
    func testServerAutobahnStyleOffers() {
        let table: [(String, String, DeflateSettings)] = [
            ("permessage-deflate; server_max_window_bits=10", "permessage-deflate; server_max_window_bits=10",
             DeflateSettings(serverMaxWindowBits: 10)),
            ("permessage-deflate; server_max_window_bits=9", "permessage-deflate; server_max_window_bits=9",
             DeflateSettings(serverMaxWindowBits: 9)),
            ("permessage-deflate; client_max_window_bits=8", "permessage-deflate; client_max_window_bits=8",
             DeflateSettings(clientMaxWindowBits: 8)),
            ("permessage-deflate; client_max_window_bits=12; server_max_window_bits=15",
             "permessage-deflate; server_max_window_bits=15; client_max_window_bits=12",
             DeflateSettings(clientMaxWindowBits: 12)),
            ("permessage-deflate; client_no_context_takeover", "permessage-deflate; client_no_context_takeover",
             DeflateSettings(clientNoContextTakeover: true)),
            ("permessage-deflate; server_no_context_takeover; server_max_window_bits=11; client_max_window_bits=9",
             "permessage-deflate; server_no_context_takeover; server_max_window_bits=11; client_max_window_bits=9",
             DeflateSettings(serverNoContextTakeover: true, serverMaxWindowBits: 11, clientMaxWindowBits: 9)),
            (#"permessage-deflate; server_max_window_bits="12""#, "permessage-deflate; server_max_window_bits=12",
             DeflateSettings(serverMaxWindowBits: 12)),
            ("  permessage-deflate ;client_max_window_bits = 13 ", "permessage-deflate; client_max_window_bits=13",
             DeflateSettings(clientMaxWindowBits: 13)),
        ]
        for (offer, response, settings) in table {
            let result = negotiate(offer, permissive)
            XCTAssertEqual(result?.responseHeader, response, offer)
            XCTAssertEqual(result?.settings, settings, offer)
        }
    }

    func testServerPolicyLimitsWindows() {
        let policy = DeflatePolicy(serverMaxWindowBits: 10, clientMaxWindowBits: 11)
        let plain = negotiate("permessage-deflate", policy)
        XCTAssertEqual(plain?.responseHeader, "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10")
        // The client did not offer client_max_window_bits, so its window cannot be capped.
        XCTAssertEqual(plain?.settings.clientMaxWindowBits, 15)
        XCTAssertEqual(plain?.settings.serverMaxWindowBits, 10)

        let capped = negotiate("permessage-deflate; client_max_window_bits; server_max_window_bits=12", policy)
        XCTAssertEqual(capped?.responseHeader, "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=11")
        XCTAssertEqual(capped?.settings, DeflateSettings(serverNoContextTakeover: true, clientNoContextTakeover: true,
                                                         serverMaxWindowBits: 10, clientMaxWindowBits: 11))

        let smaller = negotiate("permessage-deflate; client_max_window_bits=9; server_max_window_bits=9", policy)
        XCTAssertEqual(smaller?.settings.clientMaxWindowBits, 9)
        XCTAssertEqual(smaller?.settings.serverMaxWindowBits, 9)

        // A policy window below what zlib can deflate is clamped to 9.
        XCTAssertEqual(negotiate("permessage-deflate", DeflatePolicy(serverMaxWindowBits: 8))?.settings.serverMaxWindowBits, 9)
    }

    func testServerWindowOfEightIsDeclined() {
        XCTAssertNil(negotiate("permessage-deflate; server_max_window_bits=8"))
        let next = negotiate("permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=9", permissive)
        XCTAssertEqual(next?.responseHeader, "permessage-deflate; server_max_window_bits=9")
    }

    func testServerFirstAcceptableOfferWins() {
        let offers = "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=16, permessage-deflate; foo=1, "
            + "permessage-deflate; client_max_window_bits=10, permessage-deflate"
        let result = negotiate(offers, permissive)
        XCTAssertEqual(result?.responseHeader, "permessage-deflate; client_max_window_bits=10")
        // Headers joined from several lines.
        XCTAssertEqual(negotiate("foo, bar; baz=2" + ", " + "permessage-deflate", permissive)?.responseHeader, "permessage-deflate")
    }

    func testServerOtherExtensionsOnly() {
        XCTAssertNil(negotiate("x-webkit-deflate-frame"))
        XCTAssertNil(negotiate("deflate-frame; no_context_takeover"))
        XCTAssertNil(negotiate(""))
    }

    func testServerSkipsInvalidOffers() {
        let invalid = [
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=+10",
            "permessage-deflate; server_max_window_bits=ten",
            #"permessage-deflate; server_max_window_bits="""#,
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=0",
            "permessage-deflate; client_max_window_bits=08",
            "permessage-deflate; server_no_context_takeover=1",
            #"permessage-deflate; client_no_context_takeover="""#,
            "permessage-deflate; unknown",
            "permessage-deflate; Server_No_Context_Takeover",
            "Permessage-Deflate",
            "permessage-deflate; client_max_window_bits=\"10", // unterminated quote: the whole header is broken
            "permessage-deflate, garbage here",
        ]
        for offer in invalid {
            XCTAssertNil(negotiate(offer, permissive), offer)
        }
    }
}

// MARK: - Client negotiation

extension PerMessageDeflateTests {
    func testClientOffers() {
        XCTAssertEqual(PerMessageDeflate.clientOffer(policy: DeflatePolicy()),
                       "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits")
        XCTAssertEqual(PerMessageDeflate.clientOffer(policy: DeflatePolicy(serverNoContextTakeover: false, clientNoContextTakeover: false,
                                                                           serverMaxWindowBits: 10, clientMaxWindowBits: 12)),
                       "permessage-deflate; server_max_window_bits=10; client_max_window_bits=12")
        XCTAssertEqual(PerMessageDeflate.clientOffer(policy: permissive), "permessage-deflate; client_max_window_bits")
    }

    func testClientAcceptsValidResponses() {
        let policy = DeflatePolicy()
        XCTAssertEqual(PerMessageDeflate.acceptResponse("permessage-deflate; server_no_context_takeover; client_no_context_takeover", offered: policy),
                       DeflateSettings(serverNoContextTakeover: true, clientNoContextTakeover: true))
        // We promised client_no_context_takeover in the offer; we keep to it even if the server says nothing.
        XCTAssertEqual(PerMessageDeflate.acceptResponse("permessage-deflate; server_no_context_takeover", offered: policy),
                       DeflateSettings(serverNoContextTakeover: true, clientNoContextTakeover: true))
        XCTAssertEqual(PerMessageDeflate.acceptResponse("permessage-deflate; server_no_context_takeover; client_max_window_bits=10; server_max_window_bits=12", offered: policy),
                       DeflateSettings(serverNoContextTakeover: true, clientNoContextTakeover: true, serverMaxWindowBits: 12, clientMaxWindowBits: 10))
        XCTAssertEqual(PerMessageDeflate.acceptResponse("permessage-deflate", offered: permissive), DeflateSettings())
        XCTAssertEqual(PerMessageDeflate.acceptResponse("permessage-deflate; client_max_window_bits=8", offered: permissive),
                       DeflateSettings(clientMaxWindowBits: 8))
        let limited = DeflatePolicy(serverNoContextTakeover: false, clientNoContextTakeover: false, serverMaxWindowBits: 10, clientMaxWindowBits: 12)
        XCTAssertEqual(PerMessageDeflate.acceptResponse("permessage-deflate; server_max_window_bits=9", offered: limited),
                       DeflateSettings(serverMaxWindowBits: 9, clientMaxWindowBits: 12))
    }

    func testClientRefusesInvalidResponses() {
        let policy = DeflatePolicy()
        let invalid = [
            "", "x-webkit-deflate-frame", "permessage-deflate; server_no_context_takeover, x-other",
            "permessage-deflate; server_no_context_takeover, permessage-deflate; server_no_context_takeover",
            "permessage-deflate", // server_no_context_takeover was asked for
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; client_max_window_bits", // needs a value in a response
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits",
            "permessage-deflate; server_no_context_takeover=yes",
            "permessage-deflate; server_no_context_takeover; mystery",
            "permessage-deflate; server_no_context_takeover;",
        ]
        for response in invalid {
            XCTAssertNil(PerMessageDeflate.acceptResponse(response, offered: policy), response)
        }
        let limited = DeflatePolicy(serverNoContextTakeover: false, clientNoContextTakeover: false, serverMaxWindowBits: 10, clientMaxWindowBits: 12)
        XCTAssertNil(PerMessageDeflate.acceptResponse("permessage-deflate", offered: limited)) // server_max_window_bits ignored
        XCTAssertNil(PerMessageDeflate.acceptResponse("permessage-deflate; server_max_window_bits=11", offered: limited))
        XCTAssertNil(PerMessageDeflate.acceptResponse("permessage-deflate; server_max_window_bits=10; client_max_window_bits=13", offered: limited))
    }

    /// Whatever our server answers to our client's offer, our client accepts with the same settings.
    func testClientAndServerAgree() {
        let policies = [
            DeflatePolicy(), permissive,
            DeflatePolicy(serverNoContextTakeover: false, clientNoContextTakeover: true, serverMaxWindowBits: 10, clientMaxWindowBits: 15),
            DeflatePolicy(serverNoContextTakeover: true, clientNoContextTakeover: false, serverMaxWindowBits: 15, clientMaxWindowBits: 9),
            DeflatePolicy(serverNoContextTakeover: false, clientNoContextTakeover: false, serverMaxWindowBits: 12, clientMaxWindowBits: 11),
        ]
        for clientPolicy in policies {
            for serverPolicy in policies {
                let offer = PerMessageDeflate.clientOffer(policy: clientPolicy)
                guard let (serverSettings, response) = PerMessageDeflate.negotiate(offers: offer, policy: serverPolicy) else {
                    XCTFail("server declined \(offer)")
                    continue
                }
                XCTAssertEqual(PerMessageDeflate.acceptResponse(response, offered: clientPolicy), serverSettings, "\(offer) -> \(response)")
            }
        }
    }

    func testSettingsPerRole() {
        let settings = DeflateSettings(serverNoContextTakeover: true, clientNoContextTakeover: false, serverMaxWindowBits: 10, clientMaxWindowBits: 12)
        XCTAssertTrue(settings.sending(as: .server) == (10, true))
        XCTAssertTrue(settings.receiving(as: .server) == (12, false))
        XCTAssertTrue(settings.sending(as: .client) == (12, false))
        XCTAssertTrue(settings.receiving(as: .client) == (10, true))
    }
}

// MARK: - Compression

final class PerMessageDeflateTests: XCTestCase {
    func testRFC7692HelloExample() {
        let deflater = MessageDeflater()
        XCTAssertEqual(deflater.compress(Array("Hello".utf8), resetAfter: true), [0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])
        let inflater = MessageInflater()
        let (plain, result) = inflater.inflate([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00], resetAfter: true)
        XCTAssertEqual(result, .ok)
        XCTAssertEqual(String(decoding: plain, as: UTF8.self), "Hello")
    }

    func testEmptyMessageIsOneZeroByte() {
        let deflater = MessageDeflater()
        XCTAssertEqual(deflater.compress([], resetAfter: true), [0x00])
        // With context takeover, right after another message (zlib has nothing to flush then).
        _ = deflater.compress(Array("abc".utf8), resetAfter: false)
        XCTAssertEqual(deflater.compress([], resetAfter: false), [0x00])
        XCTAssertEqual(deflater.compress([], resetAfter: false), [0x00])
        let inflater = MessageInflater()
        let (plain, result) = inflater.inflate([0x00], resetAfter: false)
        XCTAssertEqual(result, .ok)
        XCTAssertEqual(plain, [])
    }

    func testRoundTripsWithAndWithoutContextTakeover() {
        var random = SplitMix64(seed: 7)
        for takeover in [false, true] {
            let deflater = MessageDeflater()
            let inflater = MessageInflater()
            for size in [0, 1, 100, 65536, 1 << 20] {
                for message in [sampleText(size, seed: UInt64(size)), random.bytesEightPerDraw(size)] {
                    // Several messages in sequence through the same pair.
                    for _ in 0..<3 { _ = roundTrip(deflater, inflater, message, takeover: takeover) }
                }
            }
        }
    }

    func testSmallMemLevelAndWindowsRoundTrip() {
        for bits in [8, 9, 10, 12, 15] {
            for memLevel in [1, 4, 9] {
                let deflater = MessageDeflater(windowBits: bits, memLevel: memLevel, level: 9)
                let inflater = MessageInflater(windowBits: bits)
                for takeover in [true, false] {
                    for size in [0, 300, 5000, 70_000] {
                        _ = roundTrip(deflater, inflater, sampleText(size, seed: UInt64(bits * 100 + size)), takeover: takeover)
                    }
                }
            }
        }
    }

    func testContextTakeoverShrinksARepeatedMessage() {
        var random = SplitMix64(seed: 3)
        for message in [sampleText(8192), random.bytesEightPerDraw(4096)] {
            let shared = MessageDeflater()
            let inflater = MessageInflater()
            let first = roundTrip(shared, inflater, message, takeover: true)
            let second = roundTrip(shared, inflater, message, takeover: true)
            XCTAssertLessThan(second * 8, first, "context takeover: \(first) then \(second) bytes")

            let resetting = MessageDeflater()
            let fresh = MessageInflater()
            let a = roundTrip(resetting, fresh, message, takeover: false)
            let b = roundTrip(resetting, fresh, message, takeover: false)
            XCTAssertEqual(a, b, "no context takeover compresses every message alike")
            XCTAssertEqual(a, first)
        }
    }

    func testExplicitResetMatchesAFreshDeflater() {
        let message = sampleText(3000)
        let deflater = MessageDeflater()
        let first = deflater.compress(message, resetAfter: false)
        deflater.reset()
        XCTAssertEqual(deflater.compress(message, resetAfter: true), first)
        XCTAssertEqual(MessageDeflater().compress(message, resetAfter: true), first)
    }

    func testPythonZlibPayloads() {
        let inflater = MessageInflater()
        func check(_ payload: [UInt8], _ expected: [UInt8], resetAfter: Bool, file: StaticString = #filePath, line: UInt = #line) {
            let (plain, result) = inflater.inflate(payload, resetAfter: resetAfter)
            XCTAssertEqual(result, .ok, file: file, line: line)
            XCTAssertTrue(plain == expected, "got \(plain.count) bytes, expected \(expected.count)", file: file, line: line)
        }
        check(Python.hello, Array("Hello".utf8), resetAfter: true)
        check(Python.fox, Array(String(repeating: "The quick brown fox jumps over the lazy dog. ", count: 20).utf8), resetAfter: true)
        check(Python.empty, [], resetAfter: true)
        // Context takeover: the second payload refers back into the first message.
        check(Python.takeover1, pythonItems, resetAfter: false)
        check(Python.takeover2, pythonItems, resetAfter: true)
        // BFINAL blocks, and context takeover across them.
        check(Python.final1, pythonItems, resetAfter: false)
        check(Python.final2, pythonItems, resetAfter: true)
        XCTAssertTrue(isCorrupt(MessageInflater().inflate(Python.final2, resetAfter: true).1), "final2 needs final1's window")

        let small = MessageInflater(windowBits: 9)
        let (plain, result) = small.inflate(Python.window9, resetAfter: true)
        XCTAssertEqual(result, .ok)
        XCTAssertTrue(plain == pythonItems)
        // And our own output for the same text matches what CPython's zlib produced, byte for byte.
        XCTAssertEqual(MessageDeflater(windowBits: 9, memLevel: 9, level: 9).compress(pythonItems, resetAfter: true), Python.window9)
        XCTAssertEqual(MessageDeflater().compress(pythonItems, resetAfter: false), Python.takeover1)
    }

    func testFragmentByFragmentEqualsWholeMessage() {
        var random = SplitMix64(seed: 11)
        for message in [sampleText(1 << 20), random.bytesEightPerDraw(200_000), sampleText(100), []] {
            for takeover in [false, true] {
                let deflater = MessageDeflater()
                let whole = MessageInflater()
                let pieces = MessageInflater()
                for round in 0..<3 {
                    let payload = deflater.compress(message, resetAfter: !takeover)
                    let (expected, wholeResult) = whole.inflate(payload, resetAfter: !takeover)
                    XCTAssertEqual(wholeResult, .ok)
                    XCTAssertTrue(expected == message)
                    let maxFragment = round == 0 ? 1 : (round == 1 ? 7 : 5000)
                    let (plain, result) = inflateFragmented(pieces, payload, sizes: &random, maxFragment: maxFragment, resetAfter: !takeover)
                    XCTAssertEqual(result, .ok)
                    XCTAssertTrue(plain == expected, "fragments of up to \(maxFragment) bytes")
                }
            }
        }
    }

    func testLimitIsPerMessageAndExact() {
        let message = sampleText(50_000)
        let payload = MessageDeflater().compress(message, resetAfter: true)
        let inflater = MessageInflater()
        XCTAssertEqual(inflater.inflate(payload, limit: 50_000, resetAfter: true).1, .ok)
        XCTAssertEqual(inflater.inflate(payload, limit: 49_999, resetAfter: true).1, .tooBig)
        XCTAssertEqual(inflater.inflate(payload, limit: 50_000, resetAfter: true).1, .ok)
        var random = SplitMix64(seed: 5)
        XCTAssertEqual(inflateFragmented(inflater, payload, sizes: &random, maxFragment: 300, limit: 49_999).1, .tooBig)
        XCTAssertEqual(inflateFragmented(inflater, payload, sizes: &random, maxFragment: 300, limit: 50_000).1, .ok)
        XCTAssertEqual(MessageInflater().inflate([0x00], limit: 0, resetAfter: true).1, .ok)
        XCTAssertEqual(MessageInflater().inflate(Python.hello, limit: 4, resetAfter: true).1, .tooBig)
    }

    func testZipBombStopsAtTheLimit() {
        let bomb = MessageDeflater(level: 9).compress([UInt8](repeating: 0, count: 10 << 20), resetAfter: true)
        XCTAssertLessThan(bomb.count, 12_000)
        let limit = 1 << 20
        let inflater = MessageInflater()
        var out: [UInt8] = []
        let result = bomb.withUnsafeBytes { inflater.inflate($0, into: &out, limit: limit, final: true, resetAfter: true) }
        XCTAssertEqual(result, .tooBig)
        XCTAssertEqual(out.count, 0, "out is back to its length on entry")
        XCTAssertLessThanOrEqual(out.capacity, limit + 1 + 8192, "never allocates past the limit")
        XCTAssertLessThan(inflater.allocatedBytes, 64 << 10)
        print("zip bomb: 10 MiB of zeros in \(bomb.count) bytes; limit \(limit): out capacity \(out.capacity), zlib \(inflater.allocatedBytes) bytes")

        // Fed in fragments, into a buffer that already holds something.
        var random = SplitMix64(seed: 9)
        var prefixed: [UInt8] = [1, 2, 3]
        var offset = 0
        var fragmented = InflateResult.ok
        while offset < bomb.count && fragmented == .ok {
            let size = min(1 + random.below(1024), bomb.count - offset)
            fragmented = bomb[offset..<(offset + size)].withUnsafeBytes {
                inflater.inflate($0, into: &prefixed, limit: limit, final: offset + size == bomb.count, resetAfter: true)
            }
            offset += size
        }
        XCTAssertEqual(fragmented, .tooBig)
        XCTAssertLessThanOrEqual(prefixed.capacity, limit + 1 + 8192 + 3)

        // The inflater is usable again right away.
        let (plain, again) = inflater.inflate(Python.hello, resetAfter: true)
        XCTAssertEqual(again, .ok)
        XCTAssertEqual(plain, Array("Hello".utf8))
    }

    func testCorruptInput() {
        let inflater = MessageInflater()
        var random = SplitMix64(seed: 13)
        let cases: [[UInt8]] = [
            [0xFF, 0xFF, 0xFF],                   // block type 3
            [0x00, 0x05, 0x00, 0x00, 0x00],       // stored block whose LEN and NLEN disagree
            Array(Python.fox.prefix(20)),         // cut in the middle of a block
            Python.final1 + [0x00],               // data after the final block
            random.bytesEightPerDraw(64) + [0xFF],
        ]
        for payload in cases {
            let (plain, result) = inflater.inflate(payload, resetAfter: false)
            XCTAssertTrue(isCorrupt(result), "\(payload.prefix(8)): \(result)")
            XCTAssertEqual(plain, [])
            // Reset after the failure: the next message decodes.
            XCTAssertEqual(inflater.inflate(Python.hello, resetAfter: false).0, Array("Hello".utf8))
        }
        // Corruption in a later fragment of a streamed message.
        var out: [UInt8] = []
        XCTAssertEqual(Python.fox.prefix(10).withUnsafeBytes { inflater.inflate($0, into: &out, limit: .max, final: false, resetAfter: true) }, .ok)
        let bad: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF]
        XCTAssertTrue(isCorrupt(bad.withUnsafeBytes { inflater.inflate($0, into: &out, limit: .max, final: true, resetAfter: true) }))
    }

    /// Bytes of zlib allocations per stream. Printed for the documentation; the bounds are loose.
    func testMemoryPerStream() {
        var report = "zlib bytes per stream\n"
        var deflaterBytes: [String: Int] = [:]
        for bits in [15, 10, 9] {
            for memLevel in [8, 4] {
                let deflater = MessageDeflater(windowBits: bits, memLevel: memLevel)
                let initial = deflater.allocatedBytes
                _ = deflater.compress(sampleText(100_000), resetAfter: true)
                XCTAssertEqual(deflater.allocatedBytes, initial, "deflate allocates everything up front")
                deflaterBytes["\(bits)/\(memLevel)"] = initial
                report += "  deflater windowBits \(bits) memLevel \(memLevel): \(initial)\n"
                XCTAssertGreaterThan(initial, 4 << bits)
                XCTAssertLessThan(initial, (4 << bits) + (1 << (memLevel + 9)) + 8192)
            }
        }
        for bits in [15, 10, 9] {
            let inflater = MessageInflater(windowBits: bits)
            let initial = inflater.allocatedBytes
            _ = inflater.inflate(Python.hello, resetAfter: true)
            let after = inflater.allocatedBytes
            _ = inflater.inflate(Python.fox, resetAfter: true)
            XCTAssertEqual(inflater.allocatedBytes, after)
            XCTAssertEqual(after - initial, 1 << bits, "the window, allocated at the first output")
            report += "  inflater windowBits \(bits): \(initial) before the first message, \(after) after\n"
        }
        XCTAssertLessThan(deflaterBytes["15/4"]!, deflaterBytes["15/8"]!)
        print(report)
    }
}
