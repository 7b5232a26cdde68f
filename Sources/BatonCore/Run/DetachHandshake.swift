import BatonBase
import CBatonSys
import Glibc

/// `run --detach`'s handshake. The command makes the run directory and starts the runner
/// with the write end of a pipe as its stdin; the runner says one word on it: `ready` at its
/// first wait (a stage, a watch, a sleep) or at its end, or, when nothing ran, that the recipe
/// only printed its usage (`help`) or refused its words (kit.args). The command prints the
/// run's id only after `ready`; otherwise it prints what the runner printed and the error,
/// removes the run directory and exits as `baton run` would: a refused word leaves no run.
public final class DetachHandshake {
    public enum Word: Equatable {
        case ready
        case usage
        case refused(ExitStatus, String)
    }

    private var fd: Int32
    /// No word said yet: the command still waits, and will remove the run directory.
    public var pending: Bool { fd >= 0 }

    public init(fd: Int32) { self.fd = fd }

    /// The runner's side: its stdin is the pipe; keep it close-on-exec (nothing the run starts
    /// may hold it open) and give stdin /dev/null, as a detached run always had.
    public static func takeStdin() -> Int32 {
        let fd = fcntl(0, F_DUPFD_CLOEXEC, 3)
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        if null >= 0 { dup2(null, 0); close(null) }
        return fd
    }

    /// Says `word` once and lets the pipe go; false when the command is no longer listening
    /// (it was interrupted and printed the run's id: the run must then be kept).
    @discardableResult
    public func say(_ word: Word) -> Bool {
        guard fd >= 0 else { return false }
        defer { close(fd); fd = -1 }
        let bytes = Array(DetachHandshake.encode(word).utf8)
        do {
            try bytes.withUnsafeBytes { try FileIO.writeAll(fd, $0, path: "run --detach's handshake pipe") }
            return true
        } catch {
            return false
        }
    }

    static func encode(_ word: Word) -> String {
        switch word {
        case .ready: return "ready\n"
        case .usage: return "usage\n"
        case let .refused(code, message): return "refused \(code.rawValue)\n" + message
        }
    }

    static func decode(_ text: String) -> Word? {
        let head = text.prefix { $0 != "\n" }
        let rest = String(text.dropFirst(min(text.count, head.count + 1)))
        if head == "ready" { return .ready }
        if head == "usage" { return .usage }
        if head.hasPrefix("refused "), let code = Int32(head.dropFirst(8)) {
            return .refused(ExitStatus(rawValue: code), rest)
        }
        return nil
    }

    /// The command's side: everything the runner says until it closes the pipe (its word, or
    /// nothing when it ended without one). Nil when a signal came first: the run goes on.
    public static func await(_ fd: Int32) -> Word? {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: baton_signal_fd(), events: Int16(POLLIN), revents: 0)]
        while baton_signal_pending() == 0 {
            if poll(&fds, nfds_t(fds.count), -1) < 0 && errno != EINTR { break }
            guard fds[0].revents != 0 else { continue }
            let n = read(fd, &buffer, buffer.count)
            if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            if n <= 0 { return decode(String(decoding: bytes, as: UTF8.self)) }
            bytes += buffer[0..<n]
        }
        return nil
    }
}
