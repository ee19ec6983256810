// libFuzzer target for the RFC 6455 frame decoder and the helpers on the frame path:
// masking, incremental UTF-8 validation, close payload validation, and base64.
//
// Built by Fuzz/run.sh together with Sources/WebSocketCodec/*.swift into a single module
// (-parse-as-library, libFuzzer supplies main), so the codec is used without an import; CBase64 is
// imported for its scalar decoder, which the vector one must agree with.
// Every invariant is a precondition: a violation is a crash that libFuzzer records.

import CBase64

private let maxPayload = 1 << 20

// MARK: - Reference implementations (slow and obvious)

private func referenceUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
    String(validating: bytes, as: UTF8.self) != nil
}

private func referenceUTF8(_ bytes: [UInt8]) -> Bool {
    bytes.withUnsafeBytes { referenceUTF8($0) }
}

/// XOR with the four key bytes as they appear on the wire, one byte at a time.
private func referenceMask(_ payload: UnsafeRawBufferPointer, keyBytes: [UInt8]) -> [UInt8] {
    payload.enumerated().map { $0.element ^ keyBytes[$0.offset & 3] }
}

private enum ReferenceClose: Equatable {
    case success(UInt16?)
    case failure(UInt16)
}

private func referenceClose(_ payload: UnsafeRawBufferPointer) -> ReferenceClose {
    if payload.isEmpty { return .success(nil) }
    if payload.count == 1 { return .failure(1002) }
    let code = UInt16(payload[0]) << 8 | UInt16(payload[1])
    switch code {
    case 1000...1003, 1007...1011, 3000...4999: break
    default: return .failure(1002)
    }
    return referenceUTF8(UnsafeRawBufferPointer(rebasing: payload[2...])) ? .success(code) : .failure(1007)
}

// MARK: - Header checks

private func checkHeader(_ h: FrameHeader, _ bytes: UnsafeRawBufferPointer, role: Role, allowedRSV: UInt8, limit: Int) {
    precondition(h.payloadLength >= 0, "negative payload length")
    precondition(h.payloadLength <= limit, "payload length over maxPayload")
    precondition(h.headerLength >= 2 && h.headerLength <= h.frameLength, "headerLength out of range")
    precondition(h.headerLength <= bytes.count, "header extends past the input")
    precondition(h.rsv & ~allowedRSV == 0, "disallowed RSV bits accepted")
    if h.opcode.isControl {
        precondition(h.fin, "fragmented control frame accepted")
        precondition(h.payloadLength <= 125, "control frame over 125 bytes accepted")
    }
    switch role {
    case .server: precondition(h.maskKey != nil, "server accepted an unmasked frame")
    case .client: precondition(h.maskKey == nil, "client accepted a masked frame")
    }
    // Only minimal length encodings are accepted, so re-encoding the header must give the same bytes.
    let masked = h.maskKey != nil
    precondition(h.headerLength == FrameEncoder.headerLength(payloadLength: h.payloadLength, masked: masked),
                 "header length does not match the minimal encoding")
    var encoded = [UInt8](repeating: 0, count: 14)
    let written = encoded.withUnsafeMutableBytes {
        FrameEncoder.writeHeader(to: $0.baseAddress!, opcode: h.opcode, fin: h.fin, rsv1: h.rsv & 0x4 != 0,
                                 payloadLength: h.payloadLength, maskKey: h.maskKey)
    }
    precondition(written == h.headerLength, "writeHeader size differs from the parsed header size")
    for i in 0..<written {
        precondition(encoded[i] == bytes[i], "re-encoded header differs from the input at byte \(i)")
    }
}

// MARK: - Server read loop

/// Mirrors what a server connection does with its read buffer: parse, unmask, validate, advance.
private func serverLoop(_ input: UnsafeRawBufferPointer, splitHint: Int) {
    var offset = 0
    var validator = UTF8Validator()
    var inMessage = false
    var messageIsText = false
    var message: [UInt8] = []
    var payload: [UInt8] = []

    while offset < input.count {
        let rest = UnsafeRawBufferPointer(rebasing: input[offset...])
        switch FrameDecoder.parseHeader(rest, role: .server, maxPayload: maxPayload) {
        case .needMore:
            return
        case .failure(let code, let reason):
            precondition(code == .protocolError || code == .messageTooBig, "unexpected failure code \(code.rawValue)")
            precondition(!reason.isEmpty, "failure without a reason")
            return
        case .header(let h):
            checkHeader(h, rest, role: .server, allowedRSV: 0, limit: maxPayload)
            guard rest.count >= h.frameLength else { return } // payload not complete yet

            let keyBytes = Array(rest[(h.headerLength - 4)..<h.headerLength])
            precondition(keyBytes.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } == h.maskKey,
                         "mask key is not the raw wire value")
            let wirePayload = UnsafeRawBufferPointer(rebasing: rest[h.headerLength..<h.frameLength])
            payload.removeAll(keepingCapacity: true)
            payload.append(contentsOf: wirePayload)
            payload.withUnsafeMutableBytes { Masking.apply(h.maskKey!, to: $0) }
            precondition(payload == referenceMask(wirePayload, keyBytes: keyBytes), "Masking.apply differs from bytewise XOR")

            // Masking is an involution.
            var again = payload
            again.withUnsafeMutableBytes { Masking.apply(h.maskKey!, to: $0) }
            precondition(again.elementsEqual(wirePayload), "masking twice does not restore the payload")

            offset += h.frameLength

            switch h.opcode {
            case .text, .binary:
                if inMessage { return } // a new data frame inside a fragmented message: protocol error
                inMessage = !h.fin
                messageIsText = h.opcode == .text
                validator = UTF8Validator()
                message.removeAll(keepingCapacity: true)
                if messageIsText && !feed(&validator, &message, payload, fin: h.fin, splitHint: splitHint) { return }
            case .continuation:
                if !inMessage { return } // continuation without a start: protocol error
                inMessage = !h.fin
                if messageIsText && !feed(&validator, &message, payload, fin: h.fin, splitHint: splitHint) { return }
            case .close:
                let result = payload.withUnsafeBytes { ClosePayload.validate($0) }
                let reference = payload.withUnsafeBytes { referenceClose($0) }
                switch result {
                case .success(let code):
                    precondition(reference == .success(code?.rawValue), "close payload accepted, reference: \(reference)")
                    if let code { precondition(code.isValidOnWire, "invalid close code accepted") }
                case .failure(let failure):
                    precondition(reference == .failure(failure.code.rawValue), "close payload rejected, reference: \(reference)")
                    precondition(!failure.reason.isEmpty, "close failure without a reason")
                }
                return // nothing is read after a close frame
            case .ping, .pong:
                break
            }
        }
    }
}

/// Feeds one text fragment to the validator the way the server does, optionally split in two to
/// exercise state across calls, and checks the verdict against the standard library.
/// Returns false when the connection would be failed.
private func feed(_ validator: inout UTF8Validator, _ message: inout [UInt8], _ fragment: [UInt8], fin: Bool, splitHint: Int) -> Bool {
    message.append(contentsOf: fragment)
    let cut = fragment.isEmpty ? 0 : splitHint % (fragment.count + 1)
    let ok = fragment.withUnsafeBytes { raw -> Bool in
        validator.feed(UnsafeRawBufferPointer(rebasing: raw[..<cut]))
            && validator.feed(UnsafeRawBufferPointer(rebasing: raw[cut...]))
    }
    if !ok {
        precondition(!referenceUTF8(message), "UTF8Validator rejected valid UTF-8")
        return false
    }
    if fin {
        precondition(validator.isComplete == referenceUTF8(message), "UTF8Validator verdict at message end differs from the standard library")
        return validator.isComplete
    }
    return true
}

// MARK: - Base64

private func checkBase64(_ input: UnsafeRawBufferPointer) {
    // Any bytes survive encode then decode.
    let encoded = Base64.encode(input)
    precondition(encoded.utf8.count == Base64.encodedLength(input.count), "encoded length mismatch")
    guard let back = Base64.decode(encoded) else { preconditionFailure("decode rejected encoder output") }
    precondition(back.elementsEqual(input), "decode(encode(x)) != x")

    // Whatever the strict decoder accepts must be the canonical encoding of its result
    // (regression: Fuzz/corpus/regressions/frames-base64-noncanonical-padding), and the scalar
    // decoder must give the same answer.
    guard let decoded = Base64.decode(input) else {
        precondition(decodeScalar(input) == nil, "Base64: the scalar decoder accepts what the vector one rejects")
        return
    }
    precondition(Array(Base64.encode(decoded).utf8).elementsEqual(input), "Base64: encode(decode(x)) != x")
    precondition(decodeScalar(input) == decoded, "Base64: the vector and the scalar decoder differ")
}

private func decodeScalar(_ input: UnsafeRawBufferPointer) -> [UInt8]? {
    var out = [UInt8](repeating: 0, count: Base64.decodedCapacity(input.count))
    let written = out.withUnsafeMutableBufferPointer {
        cb64_decode_scalar(input.baseAddress, input.count, $0.baseAddress)
    }
    return written < 0 ? nil : Array(out[..<written])
}

// MARK: - Entry point

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let splitHint = size > 0 ? Int(input[size - 1]) : 0

    serverLoop(input, splitHint: splitHint)

    // The client side: unmasked frames only, RSV1 allowed as with permessage-deflate, and a small limit.
    for (allowedRSV, limit) in [(UInt8(0), maxPayload), (UInt8(0x4), 125)] {
        if case .header(let h) = FrameDecoder.parseHeader(input, role: .client, allowedRSV: allowedRSV, maxPayload: limit) {
            checkHeader(h, input, role: .client, allowedRSV: allowedRSV, limit: limit)
        }
    }

    // Whole-input UTF-8 validation, in one call and in two, against the standard library.
    let expected = referenceUTF8(input)
    precondition(UTF8Validator.isValid(input) == expected, "UTF8Validator.isValid differs from the standard library")
    var split = UTF8Validator()
    let cut = size > 0 ? splitHint % (size + 1) : 0
    let fedOK = split.feed(UnsafeRawBufferPointer(rebasing: input[..<cut]))
        && split.feed(UnsafeRawBufferPointer(rebasing: input[cut...]))
    precondition((fedOK && split.isComplete) == expected, "split UTF-8 validation differs from the standard library")

    // Close payload validation on the raw input.
    let close = ClosePayload.validate(input)
    switch (close, referenceClose(input)) {
    case (.success(let code), .success(let raw)): precondition(code?.rawValue == raw, "close code differs")
    case (.failure(let failure), .failure(let raw)): precondition(failure.code.rawValue == raw, "close failure code differs")
    default: preconditionFailure("ClosePayload.validate disagrees with the reference")
    }

    checkBase64(input)
    return 0
}
