import Glibc

/// Wall-clock and monotonic time, and the RFC 3339 (UTC, milliseconds) stamps the journal uses.
public enum Clock {
    /// Seconds since the epoch.
    public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Monotonic seconds, for durations and deadlines.
    public static func monotonic() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Whole milliseconds since the epoch, as `rfc3339` writes them.
    public static func millis(_ t: Double) -> Int64 { Int64((t * 1000 + 0.001).rounded(.down)) }

    /// Whole seconds and the milliseconds after them, as a stamp writes them.
    private static func secondsAndMillis(_ t: Double) -> (Int64, Int) {
        let secs = Int64(t.rounded(.down))
        let ms = Int(((t - Double(secs)) * 1000
                      + 0.001).rounded(.down))  // + 1µs: a double near 1.8e9 s has ~0.25µs of error
        return (secs, min(ms, 999))
    }

    /// `t` as its stamp keeps it (whole milliseconds): what parseRFC3339 reads back from rfc3339(t).
    public static func stamped(_ t: Double) -> Double {
        let (secs, ms) = secondsAndMillis(t)
        return Double(secs) + Double(ms) / 1000
    }

    /// `2026-11-22T18:18:12.345Z`
    public static func rfc3339(_ t: Double) -> String {
        var (secs, ms) = secondsAndMillis(t)
        // The civil date of a day count (H. Hinnant's days_from_civil, inverted): no gmtime_r
        // (which takes glibc's time-zone lock), one String built from 24 bytes. Every journal
        // line has a stamp; a resume of 10,000 replays writes 10,000.
        var days = secs / 86_400
        secs -= days * 86_400
        if secs < 0 { secs += 86_400; days -= 1 }
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = Int(doy - (153 * mp + 2) / 5 + 1)
        let month = Int(mp < 10 ? mp + 3 : mp - 9)
        let year = Int(yoe + era * 400 + (month <= 2 ? 1 : 0))
        let hour = Int(secs / 3600), minute = Int(secs % 3600 / 60), second = Int(secs % 60)
        return String(unsafeUninitializedCapacity: 24) { b in
            func put(_ v: Int, _ at: Int, _ n: Int) {
                var v = v
                for k in stride(from: at + n - 1, through: at, by: -1) { b[k] = UInt8(48 + v % 10); v /= 10 }
            }
            put(year, 0, 4); b[4] = 45; put(month, 5, 2); b[7] = 45; put(day, 8, 2); b[10] = 84
            put(hour, 11, 2); b[13] = 58; put(minute, 14, 2); b[16] = 58; put(second, 17, 2); b[19] = 46
            put(ms, 20, 3); b[23] = 90
            return 24
        }
    }

    /// Parses what `rfc3339` writes (and the same without milliseconds).
    public static func parseRFC3339(_ s: String) -> Double? {
        var s = s
        return s.withUTF8 { parseRFC3339(bytes: $0) }
    }

    static func parseRFC3339(bytes u: UnsafeBufferPointer<UInt8>) -> Double? {
        guard u.count >= 20 else { return nil }
        func num(_ a: Int, _ n: Int) -> Int? {
            var v = 0
            for k in a..<(a + n) {
                guard k < u.count, (48...57).contains(u[k]) else { return nil }
                v = v * 10 + Int(u[k] - 48)
            }
            return v
        }
        guard let y = num(0, 4), let mo = num(5, 2), let d = num(8, 2), let h = num(11, 2),
              let mi = num(14, 2), let se = num(17, 2) else { return nil }
        var ms = 0
        if u.count > 20, u[19] == UInt8(ascii: "."), let m = num(20, 3) { ms = m }
        guard (1...12).contains(mo), (1...31).contains(d) else { return nil }
        let secs = daysFromCivil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se
        return Double(secs) + Double(ms) / 1000
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm; no libc
    /// call, so reading a long journal's timestamps stays cheap).
    static func daysFromCivil(_ y0: Int, _ m: Int, _ d: Int) -> Int {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146097 + doe - 719468
    }

    static func pad(_ v: Int, _ n: Int) -> String {
        let s = String(v)
        return s.count >= n ? s : String(repeating: "0", count: n - s.count) + s
    }

    /// "90", "90s", "30m", "2h", "1h30m", "7d", "0.5s" → seconds; nil when it is not one.
    public static func parseDuration(_ text: String) -> Double? {
        let t = text.trimmingWhitespace()
        if let v = Double(t), v >= 0 { return v }
        var total = 0.0
        var number = ""
        var sawUnit = false
        for c in t {
            if c.isNumber || c == "." { number.append(c); continue }
            guard let v = Double(number) else { return nil }
            switch c {
            case "s": total += v
            case "m": total += v * 60
            case "h": total += v * 3600
            case "d": total += v * 86400
            default: return nil
            }
            number = ""
            sawUnit = true
        }
        return sawUnit && number.isEmpty ? total : nil
    }

    /// A duration for people: 850ms, 12.3s, 4m05s, 2h03m.
    public static func human(_ seconds: Double) -> String {
        if seconds < 1 { return "\(Int((seconds * 1000).rounded()))ms" }
        if seconds < 60 { return String(Int(seconds * 10) / 10) + "." + String(Int(seconds * 10) % 10) + "s" }
        let s = Int(seconds)
        if s < 3600 { return "\(s / 60)m\(pad(s % 60, 2))s" }
        return "\(s / 3600)h\(pad((s % 3600) / 60, 2))m"
    }
}

public enum RunID {
    /// `20261122-181812-3f9a`: UTC start time, then 4 hex digits: the millisecond times 64
    /// plus 6 random bits. Ids sort by start time (to the millisecond) and rarely collide.
    public static func make(at t: Double = Clock.now()) -> String {
        var secs = time_t(t)
        var tm = tm()
        gmtime_r(&secs, &tm)
        let p = Clock.pad
        let date = "\(p(Int(tm.tm_year) + 1900, 4))\(p(Int(tm.tm_mon) + 1, 2))\(p(Int(tm.tm_mday), 2))"
        let time = "\(p(Int(tm.tm_hour), 2))\(p(Int(tm.tm_min), 2))\(p(Int(tm.tm_sec), 2))"
        let ms = min(999, Int((t - t.rounded(.down)) * 1000))
        let r = String(ms * 64 + Int.random(in: 0..<64), radix: 16)
        return "\(date)-\(time)-\(String(repeating: "0", count: 4 - r.count))\(r)"
    }

    /// Ids become directory names: letters, digits, `-`, `_`, `.`; not starting with `.`.
    public static func isValid(_ id: String) -> Bool {
        guard !id.isEmpty, id.utf8.count <= 128, id.first != "." else { return false }
        return id.utf8.allSatisfy { c in
            (48...57).contains(c) || (65...90).contains(c) || (97...122).contains(c) || c == 45 || c == 95 || c == 46
        }
    }
}
