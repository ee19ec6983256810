import CBase64
import Foundation
import XCTest
import WebSocketCodec

// MARK: - Helpers

private func parse(_ bytes: [UInt8], role: Role, allowedRSV: UInt8 = 0, maxPayload: Int = Int.max) -> FrameParseResult {
    bytes.withUnsafeBytes { FrameDecoder.parseHeader($0, role: role, allowedRSV: allowedRSV, maxPayload: maxPayload) }
}

private func failureCode(_ result: FrameParseResult) -> CloseCode? {
    if case .failure(let code, _) = result { return code }
    return nil
}

private func header(_ result: FrameParseResult, file: StaticString = #filePath, line: UInt = #line) -> FrameHeader? {
    if case .header(let h) = result { return h }
    XCTFail("expected a header, got \(result)", file: file, line: line)
    return nil
}

/// The four mask bytes exactly as they appear on the wire.
private func wireBytes(of key: UInt32) -> [UInt8] {
    withUnsafeBytes(of: key) { Array($0) }
}

private func keyFromWire(_ bytes: [UInt8]) -> UInt32 {
    precondition(bytes.count == 4)
    return bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
}

private func referenceMask(_ input: [UInt8], key: UInt32) -> [UInt8] {
    let k = wireBytes(of: key)
    return input.enumerated().map { $0.element ^ k[$0.offset % 4] }
}

private func masked(_ input: [UInt8], key: UInt32) -> [UInt8] {
    var copy = input
    copy.withUnsafeMutableBytes { Masking.apply(key, to: $0) }
    return copy
}

private func utf8Valid(_ bytes: [UInt8]) -> Bool {
    bytes.withUnsafeBytes { UTF8Validator.isValid($0) }
}

private extension UTF8Validator {
    mutating func feed(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { feed($0) }
    }
}

private func validateClose(_ bytes: [UInt8]) -> Result<CloseCode?, CloseFailure> {
    bytes.withUnsafeBytes { ClosePayload.validate($0) }
}

private func closeBytes(_ code: UInt16, _ reason: [UInt8] = []) -> [UInt8] {
    [UInt8(code >> 8), UInt8(code & 0xFF)] + reason
}

private func headEnd(_ text: String) -> Int? {
    Array(text.utf8).withUnsafeBytes { HTTPRequestParser.headEnd($0) }
}

private func headEnd(_ bytes: [UInt8]) -> Int? {
    bytes.withUnsafeBytes { HTTPRequestParser.headEnd($0) }
}

private func parseHead(_ text: String) -> Result<HTTPRequestHead, HTTPParseError> {
    Array(text.utf8).withUnsafeBytes { HTTPRequestParser.parse($0) }
}

private func parseHead(_ bytes: [UInt8]) -> Result<HTTPRequestHead, HTTPParseError> {
    bytes.withUnsafeBytes { HTTPRequestParser.parse($0) }
}

private func head(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> HTTPRequestHead? {
    switch parseHead(text) {
    case .success(let h): return h
    case .failure(let e):
        XCTFail("unexpected parse failure \(e) for \(text.debugDescription)", file: file, line: line)
        return nil
    }
}

private func isMalformed(_ result: Result<HTTPRequestHead, HTTPParseError>) -> Bool {
    if case .failure(.malformed) = result { return true }
    return false
}

private func decode64(_ s: String) -> [UInt8]? {
    Base64.decode(s)
}

// MARK: - Frame header parsing

final class FrameDecoderTests: XCTestCase {
    func testSevenBitLengths() {
        for length in [0, 1, 5, 124, 125] {
            let h = header(parse([0x82, UInt8(length)], role: .client))
            XCTAssertEqual(h, FrameHeader(fin: true, rsv: 0, opcode: .binary, maskKey: nil, payloadLength: length, headerLength: 2))
            XCTAssertEqual(h?.frameLength, 2 + length)
        }
    }

    func testSixteenBitLengthBoundaries() {
        let h126 = header(parse([0x81, 126, 0x00, 0x7E], role: .client))
        XCTAssertEqual(h126, FrameHeader(fin: true, rsv: 0, opcode: .text, maskKey: nil, payloadLength: 126, headerLength: 4))
        let h127 = header(parse([0x81, 126, 0x00, 0x7F], role: .client))
        XCTAssertEqual(h127?.payloadLength, 127)
        let h1000 = header(parse([0x82, 126, 0x03, 0xE8], role: .client))
        XCTAssertEqual(h1000?.payloadLength, 1000)
        let hMax = header(parse([0x82, 126, 0xFF, 0xFF], role: .client))
        XCTAssertEqual(hMax, FrameHeader(fin: true, rsv: 0, opcode: .binary, maskKey: nil, payloadLength: 65535, headerLength: 4))
        XCTAssertEqual(hMax?.frameLength, 65539)
    }

    func testSixtyFourBitLengthBoundaries() {
        let h = header(parse([0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00], role: .client))
        XCTAssertEqual(h, FrameHeader(fin: true, rsv: 0, opcode: .binary, maskKey: nil, payloadLength: 65536, headerLength: 10))
        let big = header(parse([0x82, 127, 0, 0, 0, 0x01, 0, 0, 0, 0], role: .client))
        XCTAssertEqual(big?.payloadLength, 1 << 32)
        let largest = header(parse([0x82, 127, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], role: .client))
        XCTAssertEqual(largest?.payloadLength, Int(Int64.max))
    }

    func testFinAndOpcodes() {
        let cont = header(parse([0x00, 3], role: .client))
        XCTAssertEqual(cont?.fin, false)
        XCTAssertEqual(cont?.opcode, .continuation)
        let text = header(parse([0x01, 3], role: .client))
        XCTAssertEqual(text?.fin, false)
        XCTAssertEqual(text?.opcode, .text)
        for (byte, opcode) in [(0x88, Opcode.close), (0x89, .ping), (0x8A, .pong)] as [(UInt8, Opcode)] {
            let h = header(parse([byte, 0], role: .client))
            XCTAssertEqual(h?.opcode, opcode)
            XCTAssertEqual(h?.fin, true)
        }
        XCTAssertFalse(Opcode.text.isControl)
        XCTAssertFalse(Opcode.binary.isControl)
        XCTAssertFalse(Opcode.continuation.isControl)
        XCTAssertTrue(Opcode.close.isControl)
        XCTAssertTrue(Opcode.ping.isControl)
        XCTAssertTrue(Opcode.pong.isControl)
    }

    func testServerRequiresMaskedFrames() {
        let key: [UInt8] = [0x37, 0xFA, 0x21, 0x3D]
        let h = header(parse([0x81, 0x85] + key, role: .server))
        XCTAssertEqual(h, FrameHeader(fin: true, rsv: 0, opcode: .text, maskKey: keyFromWire(key), payloadLength: 5, headerLength: 6))
        XCTAssertEqual(failureCode(parse([0x81, 0x05], role: .server)), .protocolError)
        XCTAssertEqual(failureCode(parse([0x81, 0x05, 0, 0, 0, 0], role: .server)), .protocolError)

        let h16 = header(parse([0x82, 0x80 | 126, 0x01, 0x00] + key, role: .server))
        XCTAssertEqual(h16, FrameHeader(fin: true, rsv: 0, opcode: .binary, maskKey: keyFromWire(key), payloadLength: 256, headerLength: 8))
        let h64 = header(parse([0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00] + key, role: .server))
        XCTAssertEqual(h64, FrameHeader(fin: true, rsv: 0, opcode: .binary, maskKey: keyFromWire(key), payloadLength: 65536, headerLength: 14))
    }

    func testClientForbidsMaskedFrames() {
        XCTAssertEqual(failureCode(parse([0x81, 0x85, 1, 2, 3, 4], role: .client)), .protocolError)
        XCTAssertEqual(failureCode(parse([0x81, 0x80], role: .client)), .protocolError)
        XCTAssertNotNil(header(parse([0x81, 0x05], role: .client)))
    }

    func testRFC6455MaskedHelloExample() {
        // RFC 6455 section 5.7: a single-frame masked text message containing "Hello".
        let frame: [UInt8] = [0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58]
        guard let h = header(parse(frame, role: .server)), let key = h.maskKey else { return }
        XCTAssertEqual(h.frameLength, frame.count)
        var payload = Array(frame[h.headerLength...])
        payload.withUnsafeMutableBytes { Masking.apply(key, to: $0) }
        XCTAssertEqual(String(decoding: payload, as: UTF8.self), "Hello")
        // And the unmasked form from the same section.
        let plain: [UInt8] = [0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F]
        XCTAssertEqual(FrameEncoder.frame(.text, payload: Array("Hello".utf8)), plain)
    }

    func testReservedOpcodesAreProtocolErrors() {
        for opcode: UInt8 in [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            XCTAssertNil(Opcode(rawValue: opcode))
            XCTAssertEqual(failureCode(parse([0x80 | opcode, 0x00], role: .client)), .protocolError, "opcode \(opcode)")
            XCTAssertEqual(failureCode(parse([0x80 | opcode, 0x80, 1, 2, 3, 4], role: .server)), .protocolError, "opcode \(opcode)")
        }
    }

    func testReservedBits() {
        // RSV1, RSV2, RSV3 and all three, without any extension negotiated.
        for bits: UInt8 in [0x40, 0x20, 0x10, 0x70] {
            XCTAssertEqual(failureCode(parse([0x80 | bits | 0x1, 0x00], role: .client)), .protocolError, "bits \(bits)")
        }
        // RSV1 allowed (permessage-deflate style): accepted and reported.
        let h = header(parse([0xC1, 0x03], role: .client, allowedRSV: 0x4))
        XCTAssertEqual(h?.rsv, 0x4)
        XCTAssertEqual(h?.opcode, .text)
        // Only the allowed bit is accepted.
        XCTAssertEqual(failureCode(parse([0xA1, 0x03], role: .client, allowedRSV: 0x4)), .protocolError)
        XCTAssertEqual(failureCode(parse([0xD1, 0x03], role: .client, allowedRSV: 0x4)), .protocolError)
        XCTAssertEqual(header(parse([0xF1, 0x03], role: .client, allowedRSV: 0x7))?.rsv, 0x7)
        XCTAssertEqual(header(parse([0x81, 0x03], role: .client, allowedRSV: 0x7))?.rsv, 0)
    }

    func testControlFrameRules() {
        for opcode: UInt8 in [0x8, 0x9, 0xA] {
            // Fragmented control frame.
            XCTAssertEqual(failureCode(parse([opcode, 0x00], role: .client)), .protocolError, "opcode \(opcode)")
            XCTAssertEqual(failureCode(parse([opcode, 0x80, 1, 2, 3, 4], role: .server)), .protocolError, "opcode \(opcode)")
            // 125 is the largest allowed payload.
            XCTAssertEqual(header(parse([0x80 | opcode, 125], role: .client))?.payloadLength, 125)
            // Extended lengths are never allowed, even when they are small or the header is incomplete.
            XCTAssertEqual(failureCode(parse([0x80 | opcode, 126], role: .client)), .protocolError)
            XCTAssertEqual(failureCode(parse([0x80 | opcode, 126, 0x00, 0x7E], role: .client)), .protocolError)
            XCTAssertEqual(failureCode(parse([0x80 | opcode, 127, 0, 0, 0, 0, 0, 1, 0, 0], role: .client)), .protocolError)
            XCTAssertEqual(failureCode(parse([0x80 | opcode, 0x80 | 126, 0x01, 0x00, 1, 2, 3, 4], role: .server)), .protocolError)
        }
    }

    func testNonMinimalLengthEncodings() {
        XCTAssertEqual(failureCode(parse([0x82, 126, 0x00, 0x00], role: .client)), .protocolError)
        XCTAssertEqual(failureCode(parse([0x82, 126, 0x00, 0x05], role: .client)), .protocolError)
        XCTAssertEqual(failureCode(parse([0x82, 126, 0x00, 0x7D], role: .client)), .protocolError) // 125
        XCTAssertEqual(failureCode(parse([0x82, 127, 0, 0, 0, 0, 0, 0, 0x00, 0x00], role: .client)), .protocolError)
        XCTAssertEqual(failureCode(parse([0x82, 127, 0, 0, 0, 0, 0, 0, 0x00, 0x7D], role: .client)), .protocolError)
        XCTAssertEqual(failureCode(parse([0x82, 127, 0, 0, 0, 0, 0, 0, 0x00, 0x7E], role: .client)), .protocolError) // 126
        XCTAssertEqual(failureCode(parse([0x82, 127, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF], role: .client)), .protocolError) // 65535
        XCTAssertEqual(failureCode(parse([0x82, 0x80 | 126, 0x00, 0x7D, 1, 2, 3, 4], role: .server)), .protocolError)
        XCTAssertEqual(failureCode(parse([0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 1, 2, 3, 4], role: .server)), .protocolError)
    }

    func testSixtyFourBitLengthWithHighBit() {
        XCTAssertEqual(failureCode(parse([0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0], role: .client)), .protocolError)
        XCTAssertEqual(failureCode(parse([0x82, 127, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], role: .client)), .protocolError)
        // Even with a tiny maxPayload, the high bit is a protocol error, not "too big".
        XCTAssertEqual(failureCode(parse([0x82, 127, 0x80, 0, 0, 0, 0, 1, 0, 0], role: .client, maxPayload: 10)), .protocolError)
    }

    func testOverMaxPayload() {
        XCTAssertEqual(header(parse([0x82, 100], role: .client, maxPayload: 100))?.payloadLength, 100)
        XCTAssertEqual(failureCode(parse([0x82, 101], role: .client, maxPayload: 100)), .messageTooBig)
        XCTAssertEqual(header(parse([0x82, 126, 0x03, 0xE8], role: .client, maxPayload: 1000))?.payloadLength, 1000)
        XCTAssertEqual(failureCode(parse([0x82, 126, 0x03, 0xE9], role: .client, maxPayload: 1000)), .messageTooBig)
        XCTAssertEqual(header(parse([0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0], role: .client, maxPayload: 65536))?.payloadLength, 65536)
        XCTAssertEqual(failureCode(parse([0x82, 127, 0, 0, 0, 0, 0, 1, 0, 1], role: .client, maxPayload: 65536)), .messageTooBig)
        XCTAssertEqual(failureCode(parse([0x82, 127, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], role: .client, maxPayload: 1 << 20)), .messageTooBig)
        // Too big is reported before the mask key has arrived: the payload is never buffered.
        XCTAssertEqual(failureCode(parse([0x82, 0x80 | 127, 0, 0, 0, 0, 0x10, 0, 0, 0], role: .server, maxPayload: 1 << 20)), .messageTooBig)
        XCTAssertEqual(failureCode(parse([0x82, 0x80 | 101], role: .server, maxPayload: 100)), .messageTooBig)
        // A zero limit still allows empty frames.
        XCTAssertEqual(header(parse([0x81, 0], role: .client, maxPayload: 0))?.payloadLength, 0)
        XCTAssertEqual(failureCode(parse([0x81, 1], role: .client, maxPayload: 0)), .messageTooBig)
    }

    func testNeedMoreForEveryTruncatedPrefix() {
        let key: [UInt8] = [0xA1, 0xB2, 0xC3, 0xD4]
        let cases: [([UInt8], Role)] = [
            ([0x81, 0x05], .client),
            ([0x82, 126, 0x00, 0x7E], .client),
            ([0x82, 126, 0xFF, 0xFF], .client),
            ([0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00], .client),
            ([0x89, 0x80 | 0x7D] + key, .server),
            ([0x81, 0x85] + key, .server),
            ([0x82, 0x80 | 126, 0x01, 0x00] + key, .server),
            ([0x02, 0x80 | 127, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00] + key, .server),
        ]
        for (bytes, role) in cases {
            for n in 0..<bytes.count {
                XCTAssertEqual(parse(Array(bytes[..<n]), role: role), .needMore, "prefix \(n) of \(bytes)")
            }
            XCTAssertEqual(header(parse(bytes, role: role))?.headerLength, bytes.count, "\(bytes)")
            // Trailing payload bytes do not change the header.
            XCTAssertEqual(parse(bytes + [9, 9, 9], role: role), parse(bytes, role: role))
        }
    }
}

// MARK: - Frame encoding

final class FrameEncoderTests: XCTestCase {
    private let lengths = [0, 1, 2, 3, 7, 8, 100, 125, 126, 127, 200, 1000, 65534, 65535, 65536, 65537, 100_000, 1 << 24]

    private func encodeThenParse(opcode: Opcode, fin: Bool, rsv1: Bool, length: Int, maskKey: UInt32?) {
        let size = FrameEncoder.headerLength(payloadLength: length, masked: maskKey != nil)
        var buffer = [UInt8](repeating: 0xEE, count: size)
        let written = buffer.withUnsafeMutableBytes {
            FrameEncoder.writeHeader(to: $0.baseAddress!, opcode: opcode, fin: fin, rsv1: rsv1, payloadLength: length, maskKey: maskKey)
        }
        XCTAssertEqual(written, size, "length \(length)")
        let expectedBase = length < 126 ? 2 : (length <= 65535 ? 4 : 10)
        XCTAssertEqual(size, expectedBase + (maskKey == nil ? 0 : 4))
        let role: Role = maskKey == nil ? .client : .server
        let result = parse(buffer, role: role, allowedRSV: rsv1 ? 0x4 : 0)
        let expected = FrameHeader(fin: fin, rsv: rsv1 ? 0x4 : 0, opcode: opcode, maskKey: maskKey, payloadLength: length, headerLength: size)
        XCTAssertEqual(result, .header(expected), "opcode \(opcode) fin \(fin) rsv1 \(rsv1) length \(length) key \(String(describing: maskKey))")
        for n in 0..<size {
            XCTAssertEqual(parse(Array(buffer[..<n]), role: role, allowedRSV: rsv1 ? 0x4 : 0), .needMore)
        }
    }

    func testRoundTripUnmasked() {
        for opcode in [Opcode.text, .binary, .continuation] {
            for length in lengths {
                for fin in [true, false] {
                    encodeThenParse(opcode: opcode, fin: fin, rsv1: false, length: length, maskKey: nil)
                }
                encodeThenParse(opcode: opcode, fin: true, rsv1: true, length: length, maskKey: nil)
            }
        }
        for opcode in [Opcode.close, .ping, .pong] {
            for length in [0, 1, 2, 64, 125] {
                encodeThenParse(opcode: opcode, fin: true, rsv1: false, length: length, maskKey: nil)
            }
        }
    }

    func testRoundTripMasked() {
        let keys: [UInt32] = [0, 1, 0xDEAD_BEEF, 0x0102_0304, 0xFFFF_FFFF]
        for key in keys {
            for opcode in [Opcode.text, .binary, .continuation] {
                for length in lengths {
                    encodeThenParse(opcode: opcode, fin: true, rsv1: false, length: length, maskKey: key)
                    encodeThenParse(opcode: opcode, fin: false, rsv1: true, length: length, maskKey: key)
                }
            }
            for opcode in [Opcode.close, .ping, .pong] {
                encodeThenParse(opcode: opcode, fin: true, rsv1: false, length: 125, maskKey: key)
            }
        }
    }

    func testMaskKeyBytesOnTheWire() {
        var buffer = [UInt8](repeating: 0, count: 6)
        let key = keyFromWire([0x11, 0x22, 0x33, 0x44])
        buffer.withUnsafeMutableBytes { _ = FrameEncoder.writeHeader(to: $0.baseAddress!, opcode: .text, payloadLength: 3, maskKey: key) }
        XCTAssertEqual(buffer, [0x81, 0x83, 0x11, 0x22, 0x33, 0x44])
    }

    func testHeaderBytesAreNetworkOrder() {
        var b16 = [UInt8](repeating: 0, count: 4)
        b16.withUnsafeMutableBytes { _ = FrameEncoder.writeHeader(to: $0.baseAddress!, opcode: .binary, payloadLength: 0x1234) }
        XCTAssertEqual(b16, [0x82, 126, 0x12, 0x34])
        var b64 = [UInt8](repeating: 0, count: 10)
        b64.withUnsafeMutableBytes { _ = FrameEncoder.writeHeader(to: $0.baseAddress!, opcode: .text, fin: false, payloadLength: 0x0102_0304_0506) }
        XCTAssertEqual(b64, [0x01, 127, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06])
        var rsv = [UInt8](repeating: 0, count: 2)
        rsv.withUnsafeMutableBytes { _ = FrameEncoder.writeHeader(to: $0.baseAddress!, opcode: .text, rsv1: true, payloadLength: 0) }
        XCTAssertEqual(rsv, [0xC1, 0x00])
    }

    func testCompleteFramesAndClosePayload() {
        XCTAssertEqual(FrameEncoder.frame(.ping, payload: []), [0x89, 0x00])
        XCTAssertEqual(FrameEncoder.frame(.binary, payload: [1, 2, 3], fin: false), [0x02, 0x03, 1, 2, 3])
        let big = [UInt8](repeating: 7, count: 300)
        let frame = FrameEncoder.frame(.binary, payload: big)
        XCTAssertEqual(Array(frame[..<4]), [0x82, 126, 0x01, 0x2C])
        XCTAssertEqual(Array(frame[4...]), big)

        XCTAssertEqual(FrameEncoder.closePayload(.normal), [0x03, 0xE8])
        XCTAssertEqual(FrameEncoder.closePayload(.messageTooBig, reason: "big"), [0x03, 0xF1, 0x62, 0x69, 0x67])
        let long = String(repeating: "x", count: 200)
        let payload = FrameEncoder.closePayload(.goingAway, reason: long)
        XCTAssertEqual(payload.count, 125, "a close payload must fit a control frame")
    }
}

// MARK: - Masking

final class MaskingTests: XCTestCase {
    private let keys: [UInt32] = [0, 0xFFFF_FFFF, 0x1234_5678, 0xDEAD_BEEF, 0x0000_00FF, 0xFF00_0000]

    func testMatchesReferenceForSmallLengths() {
        var rng = SplitMix64(seed: 42)
        for key in keys + [UInt32(truncatingIfNeeded: rng.next())] {
            for length in 0...40 {
                let input = rng.bytesOnePerDraw(length)
                XCTAssertEqual(masked(input, key: key), referenceMask(input, key: key), "key \(key) length \(length)")
            }
        }
    }

    func testMatchesReferenceAtUnalignedAddresses() {
        var rng = SplitMix64(seed: 7)
        for key in keys {
            for offset in 1...7 {
                for length in [0, 1, 3, 4, 5, 8, 9, 15, 16, 17, 33] {
                    let input = rng.bytesOnePerDraw(offset + length)
                    var copy = input
                    copy.withUnsafeMutableBytes { raw in
                        Masking.apply(key, to: UnsafeMutableRawBufferPointer(rebasing: raw[offset...]))
                    }
                    XCTAssertEqual(Array(copy[..<offset]), Array(input[..<offset]), "bytes before the buffer are untouched")
                    XCTAssertEqual(Array(copy[offset...]), referenceMask(Array(input[offset...]), key: key))
                }
            }
        }
    }

    func testBigBuffer() {
        var rng = SplitMix64(seed: 99)
        let input = rng.bytesOnePerDraw((1 << 20) + 3)
        let key: UInt32 = 0xA5C3_0F71
        let once = masked(input, key: key)
        XCTAssertEqual(once, referenceMask(input, key: key))
        XCTAssertEqual(masked(once, key: key), input)
    }

    func testApplyingTwiceRestores() {
        var rng = SplitMix64(seed: 3)
        for key in keys {
            for length in 0...40 {
                let input = rng.bytesOnePerDraw(length)
                XCTAssertEqual(masked(masked(input, key: key), key: key), input)
            }
        }
    }

    func testEmptyBufferWithoutAddress() {
        Masking.apply(0x1234_5678, to: UnsafeMutableRawBufferPointer(start: nil, count: 0))
    }
}

// MARK: - UTF-8 validation

final class UTF8ValidatorTests: XCTestCase {
    func testValidText() {
        let samples = [
            "",
            "hello",
            "a much longer ASCII string that spans several eight-byte words!",
            "héllo wörld",
            "€uro and 中文字符 and 日本語",
            "emoji 😀🎉👍🏽 and music 𝄞",
            "mixed: abcdefgh€abcdefgh😀abcdefghé",
            "\u{0}\u{7F}\u{80}\u{7FF}\u{800}\u{D7FF}\u{E000}\u{FFFD}\u{FFFF}\u{10000}\u{10FFFF}",
        ]
        for s in samples {
            XCTAssertTrue(utf8Valid(Array(s.utf8)), s)
        }
    }

    func testBoundaryEncodings() {
        let valid: [[UInt8]] = [
            [0x7F],
            [0xC2, 0x80], [0xDF, 0xBF],
            [0xE0, 0xA0, 0x80], [0xE1, 0x80, 0x80], [0xEC, 0xBF, 0xBF],
            [0xED, 0x80, 0x80], [0xED, 0x9F, 0xBF],
            [0xEE, 0x80, 0x80], [0xEF, 0xBF, 0xBF],
            [0xF0, 0x90, 0x80, 0x80], [0xF1, 0x80, 0x80, 0x80], [0xF3, 0xBF, 0xBF, 0xBF],
            [0xF4, 0x80, 0x80, 0x80], [0xF4, 0x8F, 0xBF, 0xBF],
            [0xF0, 0x9F, 0x98, 0x80], // U+1F600
        ]
        for bytes in valid {
            XCTAssertTrue(utf8Valid(bytes), "\(bytes)")
        }
    }

    func testInvalidSequences() {
        let invalid: [[UInt8]] = [
            // Overlongs.
            [0xC0, 0x80], [0xC1, 0xBF], [0xE0, 0x80, 0x80], [0xE0, 0x9F, 0xBF], [0xF0, 0x80, 0x80, 0x80], [0xF0, 0x8F, 0xBF, 0xBF],
            // Surrogates.
            [0xED, 0xA0, 0x80], [0xED, 0xAF, 0xBF], [0xED, 0xB0, 0x80], [0xED, 0xBF, 0xBF],
            // Above U+10FFFF.
            [0xF4, 0x90, 0x80, 0x80], [0xF4, 0xBF, 0xBF, 0xBF], [0xF5, 0x80, 0x80, 0x80], [0xF7, 0xBF, 0xBF, 0xBF],
            // Never-valid bytes.
            [0xF8, 0x88, 0x80, 0x80, 0x80], [0xFC, 0x84, 0x80, 0x80, 0x80, 0x80], [0xFE], [0xFF],
            // Stray continuation bytes.
            [0x80], [0xBF], [0x61, 0x80, 0x62], [0xC3, 0xA9, 0xA9], [0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x80],
            // A lead byte followed by a non-continuation.
            [0xC3, 0x41], [0xE2, 0x82, 0x41], [0xF0, 0x9F, 0x98, 0x41], [0xE2, 0xC3, 0xA9],
        ]
        for bytes in invalid {
            XCTAssertFalse(utf8Valid(bytes), "\(bytes)")
            var v = UTF8Validator()
            XCTAssertFalse(v.feed(bytes), "\(bytes)")
        }
    }

    func testTruncatedSequence() {
        for bytes: [UInt8] in [[0xC3], [0xE2, 0x82], [0xF0, 0x9F, 0x98], [0x61, 0x62, 0xF0], [0x68, 0x69, 0xE2]] {
            var v = UTF8Validator()
            XCTAssertTrue(v.feed(bytes), "\(bytes)")
            XCTAssertFalse(v.isComplete, "\(bytes)")
            XCTAssertFalse(utf8Valid(bytes), "\(bytes)")
        }
        var v = UTF8Validator()
        XCTAssertTrue(v.isComplete)
        XCTAssertTrue(v.feed([UInt8]()))
        XCTAssertTrue(v.isComplete)
    }

    func testIncrementalAtEverySplitPoint() {
        let string = "aé€😀z日本😀"
        let text = Array(string.utf8)
        var boundaries: Set<Int> = [0]
        var offset = 0
        for scalar in string.unicodeScalars {
            offset += String(scalar).utf8.count
            boundaries.insert(offset)
        }
        XCTAssertEqual(offset, text.count)
        for split in 0...text.count {
            var v = UTF8Validator()
            XCTAssertTrue(v.feed(Array(text[..<split])), "split \(split)")
            XCTAssertEqual(v.isComplete, boundaries.contains(split), "split \(split)")
            XCTAssertTrue(v.feed(Array(text[split...])), "split \(split)")
            XCTAssertTrue(v.isComplete, "split \(split)")
        }
        // Byte at a time.
        var v = UTF8Validator()
        for byte in text { XCTAssertTrue(v.feed([byte])) }
        XCTAssertTrue(v.isComplete)
    }

    func testIncrementalThreeWaySplitsOfEmoji() {
        let text = Array("x😀y".utf8)
        for i in 0...text.count {
            for j in i...text.count {
                var v = UTF8Validator()
                XCTAssertTrue(v.feed(Array(text[..<i])))
                XCTAssertTrue(v.feed(Array(text[i..<j])))
                XCTAssertTrue(v.feed(Array(text[j...])))
                XCTAssertTrue(v.isComplete, "\(i) \(j)")
            }
        }
    }

    func testInvalidDetectedAtEverySplitPoint() {
        let inputs: [[UInt8]] = [
            [0x61, 0xED, 0xA0, 0x80, 0x62],
            [0x61, 0xF4, 0x90, 0x80, 0x80],
            [0x61, 0xE0, 0x80, 0x80],
            [0xE2, 0x82, 0xAC, 0x80],
        ]
        for bytes in inputs {
            for split in 0...bytes.count {
                var v = UTF8Validator()
                let ok = v.feed(Array(bytes[..<split])) && v.feed(Array(bytes[split...]))
                XCTAssertFalse(ok, "\(bytes) split at \(split)")
            }
        }
    }

    func testFailsFastOnFirstBadChunk() {
        // Each first chunk is only a prefix, but it can never be completed into valid UTF-8.
        let badPrefixes: [[UInt8]] = [
            [0x61, 0xC0],
            [0xE0, 0x80],
            [0xED, 0xA0],
            [0xF4, 0x90],
            [0xF0, 0x8F],
            [0x68, 0x69, 0x80],
            [0xC3, 0x28],
        ]
        for prefix in badPrefixes {
            var v = UTF8Validator()
            XCTAssertFalse(v.feed(prefix), "\(prefix) should fail before more data arrives")
        }
        var v = UTF8Validator()
        XCTAssertTrue(v.feed(Array("ok so far ".utf8)))
        XCTAssertFalse(v.feed([0x61, 0xFF]))
    }
}

// MARK: - Close payloads

final class ClosePayloadTests: XCTestCase {
    private func assertFailure(_ bytes: [UInt8], _ code: CloseCode, file: StaticString = #filePath, line: UInt = #line) {
        switch validateClose(bytes) {
        case .success(let c): XCTFail("expected failure \(code.rawValue), got success \(String(describing: c?.rawValue))", file: file, line: line)
        case .failure(let f): XCTAssertEqual(f.code, code, "\(bytes)", file: file, line: line)
        }
    }

    private func assertSuccess(_ bytes: [UInt8], _ code: CloseCode?, file: StaticString = #filePath, line: UInt = #line) {
        switch validateClose(bytes) {
        case .success(let c): XCTAssertEqual(c, code, file: file, line: line)
        case .failure(let f): XCTFail("unexpected failure \(f) for \(bytes)", file: file, line: line)
        }
    }

    func testEmptyPayloadHasNoCode() {
        assertSuccess([], nil)
    }

    func testOneBytePayload() {
        assertFailure([0x03], .protocolError)
    }

    func testInvalidCodes() {
        for code: UInt16 in [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535] {
            assertFailure(closeBytes(code), .protocolError)
            assertFailure(closeBytes(code, Array("why".utf8)), .protocolError)
        }
    }

    func testValidCodes() {
        for code: UInt16 in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999] {
            assertSuccess(closeBytes(code), CloseCode(rawValue: code))
            assertSuccess(closeBytes(code, Array("bye ✓ 😀".utf8)), CloseCode(rawValue: code))
            XCTAssertTrue(CloseCode(rawValue: code).isValidOnWire)
        }
        assertSuccess(closeBytes(1000), .normal)
        assertSuccess(closeBytes(1001), .goingAway)
    }

    func testBadUTF8Reason() {
        assertFailure(closeBytes(1000, [0xFF]), .invalidPayload)
        assertFailure(closeBytes(1000, [0x62, 0x79, 0x65, 0xC0, 0x80]), .invalidPayload)
        assertFailure(closeBytes(3000, [0xED, 0xA0, 0x80]), .invalidPayload)
        // A reason truncated in the middle of a sequence is not valid either.
        assertFailure(closeBytes(1000, [0x61, 0xE2, 0x82]), .invalidPayload)
        // The code is checked first.
        assertFailure(closeBytes(1005, [0xFF]), .protocolError)
    }
}

// MARK: - HTTP request parsing

final class HTTPRequestParserTests: XCTestCase {
    private let upgradeRequest =
        "GET /chat?room=lobby&x=1 HTTP/1.1\r\n" +
        "Host:   server.example.com  \r\n" +
        "Upgrade: websocket\r\n" +
        "Connection: keep-alive, Upgrade\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
        "Origin:\thttp://example.com\t\r\n" +
        "Sec-WebSocket-Protocol: chat, superchat\r\n" +
        "Sec-WebSocket-Version: 13\r\n" +
        "X-Empty:\r\n" +
        "\r\n"

    func testHeadEndPartialAndComplete() {
        XCTAssertNil(headEnd(""))
        XCTAssertNil(headEnd("GET"))
        XCTAssertNil(headEnd("GET / HTTP/1.1\r\n"))
        XCTAssertNil(headEnd("GET / HTTP/1.1\r\nHost: x\r\n"))
        XCTAssertNil(headEnd("GET / HTTP/1.1\r\nHost: x\r\n\r"))
        XCTAssertNil(headEnd("GET / HTTP/1.1\n\nHost: x\n\n"))
        XCTAssertNil(headEnd("GET / HTTP/1.1\r\n\n\r\r\n"))
        XCTAssertEqual(headEnd("\r\n\r\n"), 4)
        let request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        XCTAssertEqual(headEnd(request), request.utf8.count)
        XCTAssertEqual(headEnd(request + "body bytes\r\n\r\n"), request.utf8.count)
        XCTAssertEqual(headEnd(upgradeRequest), upgradeRequest.utf8.count)
        XCTAssertEqual(headEnd("abc\r\r\n\r\n"), 8)
        XCTAssertEqual(headEnd("\r\n\r\r\n\r\n"), 7)
    }

    func testHeadEndAtEverySplitPoint() {
        let bytes = Array(upgradeRequest.utf8) + Array("trailing".utf8)
        let end = upgradeRequest.utf8.count
        for n in 0...bytes.count {
            let expected: Int? = n < end ? nil : end
            XCTAssertEqual(headEnd(Array(bytes[..<n])), expected, "prefix \(n)")
        }
    }

    func testHeadEndAgainstNaiveSearch() {
        // Random texts over a small alphabet put CR/LF runs at every alignment.
        var rng = SplitMix64(seed: 2024)
        let alphabet: [UInt8] = [0x0D, 0x0A, 0x61, 0x3A, 0x0D, 0x0A]
        for _ in 0..<5000 {
            let bytes = (0..<rng.below(24)).map { _ in alphabet[rng.below(alphabet.count)] }
            var naive: Int?
            if bytes.count >= 4 {
                for i in 0...(bytes.count - 4) where bytes[i] == 0x0D && bytes[i + 1] == 0x0A && bytes[i + 2] == 0x0D && bytes[i + 3] == 0x0A {
                    naive = i + 4
                    break
                }
            }
            XCTAssertEqual(headEnd(bytes), naive, "\(bytes)")
        }
        // Lines of every length so the terminator lands at every offset.
        for pad in 0..<12 {
            let text = "GET / HTTP/1.1\r\nX: " + String(repeating: "v", count: pad) + "\r\n\r\n"
            XCTAssertEqual(headEnd(text), text.utf8.count, "pad \(pad)")
        }
    }

    func testParseUpgradeRequest() {
        guard let h = head(upgradeRequest) else { return }
        XCTAssertEqual(h.method, "GET")
        XCTAssertEqual(h.target, "/chat?room=lobby&x=1")
        XCTAssertEqual(h.version, "HTTP/1.1")
        XCTAssertEqual(h.headers.map { $0.name }, [
            "host", "upgrade", "connection", "sec-websocket-key", "origin", "sec-websocket-protocol", "sec-websocket-version", "x-empty",
        ])
        XCTAssertEqual(h.header("host"), "server.example.com")
        XCTAssertEqual(h.header("upgrade"), "websocket")
        XCTAssertEqual(h.header("connection"), "keep-alive, Upgrade")
        XCTAssertEqual(h.header("sec-websocket-key"), "dGhlIHNhbXBsZSBub25jZQ==")
        XCTAssertEqual(h.header("origin"), "http://example.com")
        XCTAssertEqual(h.header("sec-websocket-protocol"), "chat, superchat")
        XCTAssertEqual(h.header("sec-websocket-version"), "13")
        XCTAssertEqual(h.header("x-empty"), "")
        XCTAssertNil(h.header("cookie"))
        XCTAssertNil(h.header("Host"), "lookups use lower-case names")
        XCTAssertEqual(h.path, "/chat")
        XCTAssertEqual(h.query, "room=lobby&x=1")
    }

    func testParseKeepsValueColonsAndRepeatedHeaders() {
        guard let h = head("GET / HTTP/1.1\r\nHost: example.com:8080\r\nX-A: 1\r\nx-a: 2\r\n\r\n") else { return }
        XCTAssertEqual(h.header("host"), "example.com:8080")
        XCTAssertEqual(h.header("x-a"), "1")
        XCTAssertEqual(h.headers.filter { $0.name == "x-a" }.map { $0.value }, ["1", "2"])
    }

    func testMalformedRequestLines() {
        let lines = [
            "",
            "GET\r\n\r\n",
            "GET /\r\n\r\n",
            "GET / HTTP/1.1 extra\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            " / HTTP/1.1\r\n\r\n",
            "GET  HTTP/1.1\r\n\r\n",
            "GET / FTP/1.1\r\n\r\n",
            "GET / http/1.1\r\n\r\n",
            "GET\t/\tHTTP/1.1\r\n\r\n",
        ]
        for text in lines {
            XCTAssertTrue(isMalformed(parseHead(text)), text.debugDescription)
        }
    }

    func testMalformedHeaderLines() {
        let headers = [
            "Host example.com",
            ": no-name",
            "Bad Name: x",
            "Name\t: x",
            " folded: continuation",
            "\tfolded",
        ]
        for line in headers {
            let text = "GET / HTTP/1.1\r\nHost: x\r\n" + line + "\r\n\r\n"
            XCTAssertTrue(isMalformed(parseHead(text)), line.debugDescription)
        }
    }

    func testNonUTF8HeadIsMalformed() {
        let bytes = Array("GET / HTTP/1.1\r\nX: ".utf8) + [0xFF, 0xFE] + Array("\r\n\r\n".utf8)
        XCTAssertTrue(isMalformed(parseHead(bytes)))
    }

    func testPathAndQuery() {
        func make(_ target: String) -> HTTPRequestHead {
            head("GET \(target) HTTP/1.1\r\n\r\n")!
        }
        XCTAssertEqual(make("/").path, "/")
        XCTAssertEqual(make("/").query, "")
        XCTAssertEqual(make("/chat/room1").path, "/chat/room1")
        XCTAssertEqual(make("/chat/room1").query, "")
        XCTAssertEqual(make("/chat?a=1&b=2").path, "/chat")
        XCTAssertEqual(make("/chat?a=1&b=2").query, "a=1&b=2")
        XCTAssertEqual(make("/chat?").path, "/chat")
        XCTAssertEqual(make("/chat?").query, "")
        XCTAssertEqual(make("/a?b?c").path, "/a")
        XCTAssertEqual(make("/a?b?c").query, "b?c")
        XCTAssertEqual(make("?x=1").path, "")
        XCTAssertEqual(make("?x=1").query, "x=1")
    }

    func testHeaderContainsToken() {
        guard let h = head("GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n"
            + "X-List:  a ,\tb\t,c,, \r\nX-Repeated: one\r\nx-repeated: two, THREE\r\nX-Tricky: upgrade-insecure-requests\r\n\r\n") else { return }
        XCTAssertTrue(h.headerContainsToken("connection", "upgrade"))
        XCTAssertTrue(h.headerContainsToken("connection", "keep-alive"))
        XCTAssertFalse(h.headerContainsToken("connection", "close"))
        XCTAssertFalse(h.headerContainsToken("connection", "keep"))
        XCTAssertTrue(h.headerContainsToken("upgrade", "websocket"))
        XCTAssertTrue(h.headerContainsToken("x-list", "a"))
        XCTAssertTrue(h.headerContainsToken("x-list", "b"))
        XCTAssertTrue(h.headerContainsToken("x-list", "c"))
        XCTAssertTrue(h.headerContainsToken("x-repeated", "one"))
        XCTAssertTrue(h.headerContainsToken("x-repeated", "three"))
        XCTAssertFalse(h.headerContainsToken("x-tricky", "upgrade"))
        XCTAssertFalse(h.headerContainsToken("x-missing", "upgrade"))
        XCTAssertFalse(h.headerContainsToken("upgrade", "upgrade"), "only the named header counts")
    }

    func testQueryItems() {
        func items(_ q: String) -> [String] {
            URLComponentsDecoding.queryItems(q).map { "\($0.name)=\($0.value)" }
        }
        XCTAssertEqual(items(""), [])
        XCTAssertEqual(items("a=1&b=x%20y"), ["a=1", "b=x y"])
        XCTAssertEqual(items("q=hello+world&plus=%2B&eq=a%3Db"), ["q=hello world", "plus=+", "eq=a=b"])
        XCTAssertEqual(items("flag&empty=&x=1=2"), ["flag=", "empty=", "x=1=2"])
        XCTAssertEqual(items("na%6De=v%61lue"), ["name=value"])
        XCTAssertEqual(items("euro=%E2%82%AC&lower=%e2%82%ac"), ["euro=€", "lower=€"])
        XCTAssertEqual(items("&&a=1&&=skipped&"), ["a=1"])
        // Malformed escapes are kept literally.
        XCTAssertEqual(items("bad=%zz&short=%4"), ["bad=%zz", "short=%4"])
        XCTAssertEqual(URLComponentsDecoding.percentDecode("a+b%20c", plusAsSpace: false), "a+b c")
        XCTAssertEqual(URLComponentsDecoding.percentDecode("a+b%20c", plusAsSpace: true), "a b c")
        XCTAssertEqual(URLComponentsDecoding.percentDecode("plain", plusAsSpace: true), "plain")
    }
}

// MARK: - Handshake

final class HandshakeTests: XCTestCase {
    private func request(method: String = "GET", version: String = "HTTP/1.1", headers: [String]) -> HTTPRequestHead {
        let text = "\(method) /chat \(version)\r\n" + headers.map { $0 + "\r\n" }.joined() + "\r\n"
        guard case .success(let h) = parseHead(text) else { fatalError("could not parse \(text.debugDescription)") }
        return h
    }

    private let validHeaders = [
        "Host: server.example.com",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]

    private func headers(without name: String, adding extra: [String] = []) -> [String] {
        validHeaders.filter { !$0.lowercased().hasPrefix(name.lowercased() + ":") } + extra
    }

    private func isBadRequest(_ v: Handshake.Verdict) -> Bool {
        if case .badRequest = v { return true }
        return false
    }

    func testAcceptValueRFCExample() {
        XCTAssertEqual(Handshake.acceptValue(forKey: "dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    func testSwitchingProtocolsResponse() {
        let text = String(decoding: Handshake.switchingProtocols(key: "dGhlIHNhbXBsZSBub25jZQ==", extraHeaders: ["Sec-WebSocket-Protocol: chat"]), as: UTF8.self)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 101 Switching Protocols\r\n"))
        XCTAssertTrue(text.contains("\r\nUpgrade: websocket\r\n"))
        XCTAssertTrue(text.contains("\r\nConnection: Upgrade\r\n"))
        XCTAssertTrue(text.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"))
        XCTAssertTrue(text.contains("\r\nSec-WebSocket-Protocol: chat\r\n"))
        XCTAssertTrue(text.hasSuffix("\r\n\r\n"))
        XCTAssertEqual(headEnd(text), text.utf8.count)
    }

    func testHTTPResponse() {
        let text = String(decoding: HTTPResponse.make(status: 404, reason: "Not Found"), as: UTF8.self)
        XCTAssertTrue(text.hasPrefix("HTTP/1.1 404 Not Found\r\n"))
        XCTAssertTrue(text.contains("\r\nContent-Length: 10\r\n"))
        XCTAssertTrue(text.contains("\r\nConnection: close\r\n"))
        XCTAssertTrue(text.hasSuffix("\r\n\r\nNot Found\n"))
        let withBody = String(decoding: HTTPResponse.make(status: 426, reason: "Upgrade Required", body: "héllo", headers: ["Sec-WebSocket-Version: 13"]), as: UTF8.self)
        XCTAssertTrue(withBody.contains("\r\nContent-Length: 6\r\n"), "length counts UTF-8 bytes")
        XCTAssertTrue(withBody.contains("\r\nSec-WebSocket-Version: 13\r\n"))
        XCTAssertTrue(withBody.hasSuffix("\r\n\r\nhéllo"))
    }

    func testValidUpgrade() {
        XCTAssertEqual(Handshake.evaluate(request(headers: validHeaders)), .upgrade(key: "dGhlIHNhbXBsZSBub25jZQ=="))
        let variant = headers(without: "connection", adding: ["Connection: keep-alive, Upgrade"])
            .map { $0 == "Upgrade: websocket" ? "Upgrade: WebSocket" : $0 }
        XCTAssertEqual(Handshake.evaluate(request(headers: variant)), .upgrade(key: "dGhlIHNhbXBsZSBub25jZQ=="))
    }

    func testNotUpgrade() {
        XCTAssertEqual(Handshake.evaluate(request(headers: ["Host: example.com"])), .notUpgrade)
        XCTAssertEqual(Handshake.evaluate(request(headers: ["Host: example.com", "Connection: keep-alive"])), .notUpgrade)
        XCTAssertEqual(Handshake.evaluate(request(method: "POST", headers: ["Host: example.com"])), .notUpgrade)
        XCTAssertEqual(Handshake.evaluate(request(headers: ["Upgrade: h2c", "Connection: Upgrade"])), .notUpgrade)
    }

    func testWrongMethod() {
        XCTAssertTrue(isBadRequest(Handshake.evaluate(request(method: "POST", headers: validHeaders))))
        XCTAssertTrue(isBadRequest(Handshake.evaluate(request(method: "get", headers: validHeaders))))
    }

    func testWrongVersion() {
        XCTAssertTrue(isBadRequest(Handshake.evaluate(request(version: "HTTP/1.0", headers: validHeaders))))
        XCTAssertTrue(isBadRequest(Handshake.evaluate(request(version: "HTTP/2.0", headers: validHeaders))))
    }

    func testMissingConnectionUpgrade() {
        XCTAssertTrue(isBadRequest(Handshake.evaluate(request(headers: headers(without: "connection")))))
        XCTAssertTrue(isBadRequest(Handshake.evaluate(request(headers: headers(without: "connection", adding: ["Connection: keep-alive"])))))
    }

    func testKeyWithoutUpgradeHeader() {
        XCTAssertTrue(isBadRequest(Handshake.evaluate(request(headers: headers(without: "upgrade")))))
    }

    func testWebSocketVersion() {
        XCTAssertEqual(Handshake.evaluate(request(headers: headers(without: "sec-websocket-version", adding: ["Sec-WebSocket-Version: 8"]))), .upgradeRequired)
        XCTAssertEqual(Handshake.evaluate(request(headers: headers(without: "sec-websocket-version"))), .upgradeRequired)
    }

    func testKeyMustDecodeToSixteenBytes() {
        for key in ["dGhlIHNhbXBsZQ==", "AAAAAAAAAAAAAAAAAAAAAAA=", "not base64 at all!", "dGhlIHNhbXBsZSBub25jZQ", ""] {
            let h = headers(without: "sec-websocket-key", adding: ["Sec-WebSocket-Key: \(key)"])
            XCTAssertTrue(isBadRequest(Handshake.evaluate(request(headers: h))), key)
        }
        XCTAssertTrue(isBadRequest(Handshake.evaluate(request(headers: headers(without: "sec-websocket-key")))))
        let ok = headers(without: "sec-websocket-key", adding: ["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="])
        XCTAssertEqual(Handshake.evaluate(request(headers: ok)), .upgrade(key: "AAAAAAAAAAAAAAAAAAAAAA=="))
    }
}

// MARK: - Base64

final class Base64Tests: XCTestCase {
    func testRFC4648Vectors() {
        let vectors = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]
        for (plain, encoded) in vectors {
            XCTAssertEqual(Base64.encode(Array(plain.utf8)), encoded)
            XCTAssertEqual(decode64(encoded), Array(plain.utf8), encoded)
            XCTAssertEqual(Base64.encodedLength(plain.utf8.count), encoded.utf8.count)
        }
    }

    func testRoundTripAndFoundationAgreement() {
        var rng = SplitMix64(seed: 64)
        for length in 0...20 {
            for input in [rng.bytesOnePerDraw(length), [UInt8](repeating: 0xFF, count: length), [UInt8](repeating: 0, count: length)] {
                let encoded = Base64.encode(input)
                XCTAssertEqual(encoded, Data(input).base64EncodedString(), "length \(length)")
                XCTAssertEqual(encoded.utf8.count, Base64.encodedLength(length))
                XCTAssertEqual(decode64(encoded), input, "length \(length)")
            }
        }
    }

    func testDecodeIntoABufferWritesOnlyTheDecodedBytes() {
        var rng = SplitMix64(seed: 65)
        for length in 0...40 {
            let input = rng.bytesOnePerDraw(length)
            let encoded = Array(Base64.encode(input).utf8)
            let capacity = Base64.decodedCapacity(encoded.count)
            XCTAssertGreaterThanOrEqual(capacity, length)
            var out = [UInt8](repeating: 0xAB, count: capacity + 8)
            let written = encoded.withUnsafeBytes { src in out.withUnsafeMutableBytes { Base64.decode(src, into: $0.baseAddress!) } }
            XCTAssertEqual(written, length, "length \(length)")
            XCTAssertEqual(Array(out[0..<length]), input, "length \(length)")
            XCTAssertEqual(Array(out[capacity...]), [UInt8](repeating: 0xAB, count: 8), "nothing past the capacity, length \(length)")
        }
    }

    func testStrictDecodeRejectsBadLength() {
        for s in ["Z", "Zg", "Zg=", "Zm9vY", "Zm9vYg", "Zm9vYg=", "Zm9vYmFy=", "Zm9vYmF"] {
            XCTAssertNil(decode64(s), s)
        }
    }

    func testStrictDecodeRejectsBadCharacters() {
        for s in ["Zm9v!A==", "Zm 9", "Zm9\n", "Zm-_", "Zm\u{e9}", "Zm9vYmF*", "\0\0\0\0"] {
            XCTAssertNil(decode64(s), s.debugDescription)
        }
    }

    func testStrictDecodeRejectsMisplacedPadding() {
        for s in ["Zg==Zm9v", "Zm8=Zm9v", "=Zm9", "Zm=v", "Z===", "====", "Zm9v====", "Zm9vY===", "Z=g="] {
            XCTAssertNil(decode64(s), s)
        }
    }

    // The vector code handles 16 characters (12 bytes) per step and leaves the last group and the
    // ends of buffers to the scalar code, so the tests below use inputs long enough for both and
    // lengths that move every boundary.

    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// Six bits at a time, as RFC 4648 describes it: nothing in common with the code under test.
    private func referenceEncode(_ input: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var bits = 0
        var pending = 0
        for byte in input {
            bits = bits << 8 | Int(byte)
            pending += 8
            while pending >= 6 {
                pending -= 6
                out.append(Self.alphabet[bits >> pending & 63])
            }
        }
        if pending > 0 { out.append(Self.alphabet[bits << (6 - pending) & 63]) }
        while out.count % 4 != 0 { out.append(UInt8(ascii: "=")) }
        return out
    }

    /// What the dispatching decoder and the scalar one each make of `input`, written into buffers
    /// with guard bytes past the capacity, which must come back untouched.
    private func decodeBoth(_ input: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> (simd: [UInt8]?, scalar: [UInt8]?) {
        let capacity = Base64.decodedCapacity(input.count)
        func run(_ decode: (UnsafePointer<CChar>?, Int, UnsafeMutablePointer<UInt8>) -> Int) -> [UInt8]? {
            var out = [UInt8](repeating: 0xAB, count: capacity + 16)
            let written = input.withUnsafeBufferPointer { src in
                out.withUnsafeMutableBufferPointer { dst in
                    src.withMemoryRebound(to: CChar.self) { decode($0.baseAddress, src.count, dst.baseAddress!) }
                }
            }
            XCTAssertEqual(Array(out[capacity...]), [UInt8](repeating: 0xAB, count: 16), "written past the capacity", file: file, line: line)
            return written < 0 ? nil : Array(out[0..<written])
        }
        return (run(cb64_decode), run(cb64_decode_scalar))
    }

    private func encodeScalar(_ input: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Base64.encodedLength(input.count))
        let written = input.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                dst.withMemoryRebound(to: CChar.self) { cb64_encode_scalar(src.baseAddress, src.count, $0.baseAddress!) }
            }
        }
        XCTAssertEqual(written, out.count)
        return out
    }

    /// `count` bytes that end where an inaccessible page begins, so that reading or writing past
    /// them crashes instead of going unnoticed.
    private func withGuardedBytes<R>(_ count: Int, _ body: (UnsafeMutableRawPointer) -> R) -> R {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let size = (count + page - 1) / page * page + page
        guard let base = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), base != MAP_FAILED,
              mprotect(base + size - page, page, PROT_NONE) == 0 else { fatalError("mmap: \(errno)") }
        defer { munmap(base, size) }
        return body(base + size - page - count)
    }

    func testNothingIsReadOrWrittenPastEitherBuffer() {
        var rng = SplitMix64(seed: 70)
        for length in 0...300 {
            let input = rng.bytesOnePerDraw(length)
            let expected = referenceEncode(input)
            let encoded = withGuardedBytes(length) { src in
                src.copyMemory(from: input, byteCount: length)
                return withGuardedBytes(expected.count) { dst in
                    Base64.encode(UnsafeRawBufferPointer(start: src, count: length), into: dst)
                    return Array(UnsafeRawBufferPointer(start: dst, count: expected.count))
                }
            }
            XCTAssertEqual(encoded, expected, "length \(length)")
            for decode in [cb64_decode, cb64_decode_scalar] {
                let decoded = withGuardedBytes(expected.count) { src in
                    src.copyMemory(from: expected, byteCount: expected.count)
                    let capacity = Base64.decodedCapacity(expected.count)
                    return withGuardedBytes(capacity) { dst -> [UInt8]? in
                        let written = decode(src.assumingMemoryBound(to: CChar.self), expected.count, dst.assumingMemoryBound(to: UInt8.self))
                        return written < 0 ? nil : Array(UnsafeRawBufferPointer(start: dst, count: written))
                    }
                }
                XCTAssertEqual(decoded, input, "length \(length)")
            }
        }
    }

    func testRoundTripEveryLengthAgainstTheReference() {
        var rng = SplitMix64(seed: 66)
        for length in 0...300 {
            for input in [rng.bytesOnePerDraw(length), [UInt8](repeating: 0xFF, count: length)] {
                let expected = referenceEncode(input)
                XCTAssertEqual(Array(Base64.encode(input).utf8), expected, "length \(length)")
                XCTAssertEqual(encodeScalar(input), expected, "scalar, length \(length)")
                let (simd, scalar) = decodeBoth(expected)
                XCTAssertEqual(simd, input, "length \(length)")
                XCTAssertEqual(scalar, input, "scalar, length \(length)")
                XCTAssertEqual(decode64(String(decoding: expected, as: UTF8.self)), input, "length \(length)")
            }
        }
    }

    func testRoundTripLargeBuffers() {
        var rng = SplitMix64(seed: 67)
        for length in [16384, 16385, 16386, 65536 + 7, 100_003] {
            let input = rng.bytesEightPerDraw(length)
            let encoded = Base64.encode(input)
            XCTAssertEqual(Array(encoded.utf8), referenceEncode(input), "length \(length)")
            XCTAssertEqual(encoded, Data(input).base64EncodedString(), "length \(length)")
            XCTAssertEqual(encodeScalar(input), Array(encoded.utf8), "length \(length)")
            let (simd, scalar) = decodeBoth(Array(encoded.utf8))
            XCTAssertEqual(simd, input, "length \(length)")
            XCTAssertEqual(scalar, input, "length \(length)")
        }
    }

    func testDecodeRejectsAnInvalidByteAtEveryPosition() {
        // The whole alphabet in order is 64 valid characters; four copies put every position of a
        // vector step, of the scalar groups after the steps and of the last group under test. The
        // last group is "89+/": "=" in its last place leaves "89+=", not canonical since "+" (62)
        // has low bits set, so every replacement must be rejected.
        // Every byte outside the alphabet, the neighbours of each range included.
        let invalid = (0...255).map { UInt8($0) }.filter { !Self.alphabet.contains($0) }
        for copies in [1, 4] {
            let valid = Array([[UInt8]](repeating: Self.alphabet, count: copies).joined())
            let (simd, scalar) = decodeBoth(valid)
            XCTAssertEqual(simd.map { referenceEncode($0) }, valid)
            XCTAssertEqual(scalar, simd)
            for position in valid.indices {
                for byte in invalid {
                    var input = valid
                    input[position] = byte
                    let (simd, scalar) = decodeBoth(input)
                    XCTAssertNil(simd, "byte \(byte) at \(position) of \(input.count)")
                    XCTAssertNil(scalar, "scalar: byte \(byte) at \(position) of \(input.count)")
                }
            }
        }
    }

    func testDecodeAcceptsOnlyCanonicalFinalGroups() {
        // Every padded final group: with "==" the second character's low 4 bits are unused, with
        // "=" the third's low 2; canonical means they are zero. After a prefix of 0 and 60
        // characters, so the group follows both nothing and vector steps.
        let prefix = Array([[UInt8]](repeating: Self.alphabet, count: 2).joined().prefix(60))
        for lead in [[], prefix] {
            for a in Self.alphabet {
                for (value, b) in Self.alphabet.enumerated() {
                    let two = lead + [a, b, UInt8(ascii: "="), UInt8(ascii: "=")]
                    let (simd, scalar) = decodeBoth(two)
                    XCTAssertEqual(simd != nil, value & 15 == 0, String(decoding: two, as: UTF8.self))
                    XCTAssertEqual(scalar, simd)
                    if let decoded = simd { XCTAssertEqual(referenceEncode(decoded), two) }

                    let three = lead + [UInt8(ascii: "Q"), a, b, UInt8(ascii: "=")]
                    let (simd3, scalar3) = decodeBoth(three)
                    XCTAssertEqual(simd3 != nil, value & 3 == 0, String(decoding: three, as: UTF8.self))
                    XCTAssertEqual(scalar3, simd3)
                    if let decoded = simd3 { XCTAssertEqual(referenceEncode(decoded), three) }
                }
            }
        }
        for s in ["QR==", "QUJ=", "QUI=", "QQ=="] {
            XCTAssertEqual(decode64(s) != nil, s == "QUI=" || s == "QQ==", s)
        }
    }

    func testDecodeRejectsPaddingBeforeTheLastGroup() {
        let valid = Array([[UInt8]](repeating: Self.alphabet, count: 2).joined())
        for group in stride(from: 0, to: valid.count, by: 4) {
            for padded in ["QQ==", "QUI="] {
                let input = Array(valid[..<group]) + Array(padded.utf8) + Array(valid[group...])
                let (simd, scalar) = decodeBoth(input)
                XCTAssertNil(simd, "\(padded) at \(group)")
                XCTAssertNil(scalar, "scalar: \(padded) at \(group)")
            }
        }
    }

    func testDecodeRejectsLengthsNotAMultipleOfFour() {
        var rng = SplitMix64(seed: 68)
        let encoded = Array(Base64.encode(rng.bytesOnePerDraw(240)).utf8)
        for length in 1...encoded.count where length % 4 != 0 {
            let (simd, scalar) = decodeBoth(Array(encoded[..<length]))
            XCTAssertNil(simd, "length \(length)")
            XCTAssertNil(scalar, "scalar, length \(length)")
        }
    }

    func testVectorAndScalarAgreeOnRandomInput() {
        // Mostly alphabet characters with, now and then, any byte at all: most inputs of a few
        // groups decode, most long ones do not, and both answers must match.
        var rng = SplitMix64(seed: 69)
        for _ in 0..<2000 {
            let length = rng.below(80) * 4
            let chance = 1 + rng.below(400)
            let input = (0..<length).map { _ -> UInt8 in
                rng.below(chance) == 0 ? UInt8(truncatingIfNeeded: rng.next()) : Self.alphabet[rng.below(64)]
            }
            let (simd, scalar) = decodeBoth(input)
            XCTAssertEqual(simd, scalar, String(decoding: input, as: UTF8.self))
            let bytes = rng.bytesOnePerDraw(length)
            XCTAssertEqual(Array(Base64.encode(bytes).utf8), encodeScalar(bytes))
        }
    }
}
