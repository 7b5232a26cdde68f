/// Questions asked of a journal by `log`, `status` and the shell.
extension JournalContents {
    /// Every attempt of stage `id`, oldest first, with its log files.
    public func stageAttempts(_ id: String) -> [(attempt: Int, out: String, err: String)] {
        events.compactMap { e in
            guard e["type"]?.stringValue == "stage_started", e["id"]?.stringValue == id,
                  let out = e["logs"]?["stdout"]?.stringValue, let err = e["logs"]?["stderr"]?.stringValue else { return nil }
            return (Int(e["attempt"]?.intValue ?? 1), out, err)
        }
    }

    /// Stage ids in the order they first started.
    public var stageIDs: [String] {
        var seen: [String] = []
        for e in events where e["type"]?.stringValue == "stage_started" {
            if let id = e["id"]?.stringValue, !seen.contains(id) { seen.append(id) }
        }
        return seen
    }
}

/// Reads a journal as it grows: each call returns the whole lines written since the last
/// one (a line still being written waits for the next call).
public struct JournalFollower {
    public let path: String
    public private(set) var offset = 0
    /// Whether a `final` event has been read.
    public private(set) var sawFinal = false

    public init(path: String) { self.path = path }

    public mutating func next() -> JournalContents {
        let bytes = (try? FileIO.readFile(path)) ?? []
        var end = bytes.count
        while end > offset, bytes[end - 1] != 10 { end -= 1 }
        guard end > offset else { return JournalContents() }
        let contents = JournalReader.parse(Array(bytes[offset..<end]))
        offset = end
        if contents.events.contains(where: { $0["type"]?.stringValue == "final" }) { sawFinal = true }
        return contents
    }

    /// Whether the file holds bytes not returned yet.
    public var hasMore: Bool { (FileIO.size(path) ?? 0) > offset }
}
