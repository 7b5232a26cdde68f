import Glibc

/// Colour for people at a terminal: on when stderr (where progress goes) is a terminal,
/// NO_COLOR is unset and TERM is not "dumb" (https://no-color.org).
public enum Palette {
    public static let enabled: Bool = {
        guard isatty(2) == 1, getenv("NO_COLOR") == nil else { return false }
        if let t = getenv("TERM"), String(cString: t) == "dumb" { return false }
        return true
    }()

    static func paint(_ s: String, _ sgr: String) -> String { enabled ? "\u{1B}[\(sgr)m\(s)\u{1B}[0m" : s }

    public static func ok(_ s: String) -> String { paint(s, "32") }
    public static func fail(_ s: String) -> String { paint(s, "1;31") }
    public static func warn(_ s: String) -> String { paint(s, "33") }
    public static func replayed(_ s: String) -> String { paint(s, "36") }
    public static func dim(_ s: String) -> String { paint(s, "2") }
}

/// The terminal's width in columns (80 when it cannot be asked).
public func terminalColumns(_ fd: Int32 = 2) -> Int {
    var ws = winsize()
    if ioctl(fd, UInt(TIOCGWINSZ), &ws) == 0, ws.ws_col > 0 { return Int(ws.ws_col) }
    return 80
}
