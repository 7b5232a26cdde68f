import BatonBase
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
        var contents = JournalReader.parse(Array(bytes[offset..<end]))
        contents.resolveLogs(in: FileIO.dirname(path))
        offset = end
        if contents.events.contains(where: { if case .final = $0.body { return true }; return false }) {
            sawFinal = true
        }
        return contents
    }

    /// Whether the file holds bytes not returned yet.
    public var hasMore: Bool { (FileIO.size(path) ?? 0) > offset }
}
