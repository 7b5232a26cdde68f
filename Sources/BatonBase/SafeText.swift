/// Text from stage output, stage ids, reasons and results shown to a person: control
/// characters are written as escapes (`\e`, `\n`, `\x07`), never raw, so what a stage
/// prints cannot move the cursor, retitle the terminal or forge a line of `baton log`.
public enum SafeText {
    /// One line: every control character escaped (a newline too). Tab is kept.
    public static func line(_ s: String) -> String { escape(s, keepNewlines: false) }

    /// Many lines (a stage's log on a terminal): newlines and tabs kept, the rest escaped.
    public static func lines(_ s: String) -> String { escape(s, keepNewlines: true) }

    static func escape(_ s: String, keepNewlines: Bool) -> String {
        // Fast path: nothing to escape (the common case).
        if !s.unicodeScalars.contains(where: needsEscape) { return s }
        var out = String.UnicodeScalarView()
        for u in s.unicodeScalars {
            if !needsEscape(u) || (keepNewlines && u == "\n") { out.append(u); continue }
            let text: String
            switch u {
            case "\u{1B}": text = "\\e"
            case "\n": text = "\\n"
            case "\r": text = "\\r"
            default:
                let hex = String(u.value, radix: 16)
                text = u.value < 0x100 ? "\\x" + (hex.count < 2 ? "0" : "") + hex : "\\u{\(hex)}"
            }
            out.append(contentsOf: text.unicodeScalars)
        }
        return String(out)
    }

    /// C0 controls but tab, DEL, C1 controls (U+0080..U+009F: 8-bit CSI and friends).
    static func needsEscape(_ u: Unicode.Scalar) -> Bool {
        (u.value < 0x20 && u != "\t") || (u.value >= 0x7F && u.value < 0xA0)
    }
}
