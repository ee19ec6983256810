import XCTest
import WebSocketCodec

/// Minimized inputs found by the libFuzzer targets in Fuzz/ (run with Fuzz/run.sh), one test per bug.
/// The raw inputs are kept in Fuzz/corpus/regressions/, and Fuzz/run.sh replays them before fuzzing.
final class FuzzRegressionTests: XCTestCase {
    /// Fuzz/corpus/regressions/frames-base64-noncanonical-padding is the 4 bytes "44==", found by
    /// FrameDecoderFuzzer's property encode(decode(x)) == x.
    ///
    /// Base64.decode ignores the unused low bits of the last character before the padding (4 bits
    /// with "==", 2 bits with "="), so it accepts non-canonical encodings and several strings decode
    /// to the same bytes: "44==" decodes to [0xE3], which encodes as "4w==". A strict decoder
    /// (RFC 4648 section 3.5) rejects those inputs, which makes the round trip hold.
    func testBase64DecodeAcceptsOnlyCanonicalEncodings() {
        let nonCanonical = [
            "44==", // the fuzzer's input: [0xE3] is "4w=="
            "AB==", // [0x00] is "AA=="
            "AAB=", // [0x00, 0x00] is "AAA="
            "Zm9=", // "fo" is "Zm8="
            "dGhlIHNhbXBsZSBub25jZR==", // the RFC 6455 sample nonce is "...ZQ=="
        ]
        for input in nonCanonical {
            if let decoded = Base64.decode(input) {
                XCTAssertEqual(Base64.encode(decoded), input, "\(input) decodes to \(decoded)")
            }
        }
    }
}
