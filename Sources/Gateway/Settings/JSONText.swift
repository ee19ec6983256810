/// JSON string literals for what the gateway writes itself: log lines, the management API's
/// answers, the socket fields one node sends another.
enum JSONText {
    private static let hex: [Character] = Array("0123456789abcdef")

    static func append(_ text: String, to out: inout String) {
        out += "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                out += "\\u00" + String(hex[Int(scalar.value >> 4)]) + String(hex[Int(scalar.value & 0xF)])
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }

    static func quoted(_ text: String) -> String {
        var out = ""
        append(text, to: &out)
        return out
    }
}
