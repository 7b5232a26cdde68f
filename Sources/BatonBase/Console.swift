import Glibc

/// Human output: one line to stdout or stderr, written whole (no buffering, so lines from
/// Baton and from its stages interleave in order).
public enum Console {
    public static func out(_ s: String) { write(1, s) }
    public static func err(_ s: String) { write(2, s) }

    /// A command's error: "baton: message" on stderr, or with `--json` the object
    /// `{"error": message, "exit_code": n}` on stdout (docs/cli.md). Returns the exit code.
    public static func error(_ message: String, json: Bool, code: ExitStatus = .usage) -> Int32 {
        if json {
            out(JSON.object([("error", .string(message)),
                             ("exit_code", .int(Int64(code.rawValue)))]).encoded(pretty: true))
        } else {
            err("baton: \(message)")
        }
        return code.rawValue
    }

    /// `text` as it is, plus a newline unless `newline` is false.
    public static func write(_ fd: Int32, _ text: String, newline: Bool = true) {
        var bytes = Array(text.utf8)
        if newline { bytes.append(10) }
        write(fd, bytes: bytes)
    }

    /// Raw bytes (a stage's log, NULs and all), retrying short writes.
    public static func write(_ fd: Int32, bytes: [UInt8]) {
        _ = try? bytes.withUnsafeBytes { try FileIO.writeAll(fd, $0, path: fd == 1 ? "stdout" : "stderr") }
    }
}

/// A line for people on stderr (diagnostics; stdout stays the command's answer).
public func diag(_ s: String) { Console.err(s) }
