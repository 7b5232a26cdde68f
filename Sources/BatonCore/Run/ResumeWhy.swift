import BatonBase
/// The inputs a stage's fingerprint hashes, each hashed on its own, so resume can say which
/// one changed. Journaled as `fingerprint_parts` on stage_started and stage_finished.
public struct FingerprintParts: Sendable, Equatable {
    public var command, cwd, env, stdin: String
    /// The declared inputs' digest and the declared outputs' hash ("" when none are declared).
    public var inputs = "", outputs = ""

    /// In the order people read them; the names are the journal's keys.
    public static let names = ["command", "cwd", "env", "stdin", "inputs", "outputs"]

    public init(command: String, cwd: String, env: String, stdin: String) {
        self.command = command; self.cwd = cwd; self.env = env; self.stdin = stdin
    }

    public init(_ spec: StageSpec) {
        self.init(command: FailureSignature.fnv1a(spec.command.json.encoded()),
                  cwd: FailureSignature.fnv1a(spec.cwd ?? ""),
                  env: FailureSignature.fnv1a(spec.envText), stdin: FailureSignature.fnv1a(spec.stdin ?? ""))
        inputs = spec.inputSet?.digest ?? ""
        outputs = spec.outputs.isEmpty ? "" : FailureSignature.fnv1a(spec.outputs.joined(separator: "\u{2}"))
    }

    var values: [String] { [command, cwd, env, stdin, inputs, outputs] }

    /// The inputs that differ, by name (`command`, `cwd`, `env`, `stdin`).
    public func changed(from old: FingerprintParts) -> [String] {
        zip(FingerprintParts.names, zip(values, old.values)).compactMap { $1.0 == $1.1 ? nil : $0 }
    }

    var json: JSON {
        .object(zip(FingerprintParts.names, values).compactMap { (name: String, v: String) -> (String, JSON)? in
            v.isEmpty && (name == "inputs" || name == "outputs") ? nil : (name, .string(v))
        })
    }

    init?(_ j: JSON?) {
        guard let j, case .object = j else { return nil }
        let v = FingerprintParts.names.map { j[$0]?.stringValue ?? "" }
        self.init(command: v[0], cwd: v[1], env: v[2], stdin: v[3])
        inputs = v[4]; outputs = v[5]
    }
}

/// Why a resumed run replayed a stage call or ran it for real. A replay is journaled as a
/// stage_finished with `replayed: true` (reason `unchanged`); a call that runs carries `why`
/// on its first stage_started.
public struct ResumeWhy: Sendable, Equatable {
    public enum Reason: String, Sendable {
        /// Passed before with the same fingerprint: replayed.
        case unchanged
        /// Passed before, but an input differs (`changed` names which, when the journal knows).
        case changed
        /// Was called before but did not pass (failed, timed out, cancelled, unfinished, dry).
        case not_passed
        /// Not in the earlier run at all.
        case new
        /// An earlier call of this resume ran for real, so everything after it runs.
        case after_ran
    }

    public var reason: Reason
    public var changed: [String] = []
    /// For `after_ran`: the call that ran first.
    public var after: String?
    /// For `changed` with `inputs` among them: which input files changed, were added or removed.
    public var files: FileChanges?

    public init(reason: Reason, changed: [String] = [], after: String? = nil) {
        self.reason = reason; self.changed = changed; self.after = after
    }

    public var replayed: Bool { reason == .unchanged }

    /// One sentence for people: "replayed: unchanged", "runs: command and env changed".
    public var sentence: String {
        switch reason {
        case .unchanged: return "replayed: passed before, unchanged"
        case .changed: return "runs: " + ResumeWhy.changes(changed, files)
        case .not_passed: return "runs: did not pass before"
        case .new: return "runs: new, not in the earlier run"
        case .after_ran: return "runs because an earlier stage ran" + (after.map { " (\($0))" } ?? "")
        }
    }

    /// "command and inputs changed: src/a.py changed" (the parts by `FingerprintParts.names`).
    static func changes(_ changed: [String], _ files: FileChanges?) -> String {
        let names = changed.map { $0 == "cwd" ? "working directory" : $0 == "env" ? "environment" : $0 }
        if names.isEmpty { return "fingerprint changed" }
        return (names.count == 1 ? names[0] : names.dropLast().joined(separator: ", ") + " and " + names.last!)
            + " changed" + (files.map { ": " + $0.sentence } ?? "")
    }

    var json: JSON {
        var o: [(String, JSON)] = [("replayed", .bool(replayed)), ("reason", .string(reason.rawValue))]
        if reason == .changed { o.append(("changed", .array(changed.map(JSON.string)))) }
        if let a = after { o.append(("after", .string(a))) }
        if let f = files { o.append(("files", f.json)) }
        return .object(o)
    }

    init?(_ j: JSON?) {
        guard let j, let r = j["reason"]?.stringValue.flatMap(Reason.init(rawValue:)) else { return nil }
        self.init(reason: r,
                  changed: j["changed"]?.arrayValue?.compactMap(\.stringValue) ?? [],
                  after: j["after"]?.stringValue)
        files = FileChanges(j["files"])
    }

    /// The decision for call `key` with these inputs, given what the earlier lives left.
    /// `ranFirst` is the call of this resume that already ran for real, if any.
    static func decide(_ key: StageKey, fingerprint: String, parts: () -> FingerprintParts, history: RunHistory,
                       replay: [StageKey: StageFinished], ranFirst: StageKey?) -> ResumeWhy {
        if let first = ranFirst { return ResumeWhy(reason: .after_ran, after: first.description) }
        guard let f = replay[key] else {
            guard let before = history.status(of: key) else { return ResumeWhy(reason: .new) }
            return ResumeWhy(reason: before == .ended(.passed) ? .changed : .not_passed)
        }
        if f.fingerprint == fingerprint { return ResumeWhy(reason: .unchanged) }
        return ResumeWhy(reason: .changed, changed: f.fingerprintParts.map { parts().changed(from: $0) } ?? [])
    }
}
