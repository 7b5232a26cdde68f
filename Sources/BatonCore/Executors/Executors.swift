import BatonBase
import Glibc

/// The executors a recipe may name: the one place that lists them, one line each. Each
/// executor's own folder declares its kind (name, options, how one is made); nothing else
/// in the core names one.
public enum Executors {
    static let builtIn: [ExecutorKind] = [
        .local,
        .sbatch,
    ]

    /// Kinds added by tests (an in-process fake): `register` before any run starts.
    nonisolated(unsafe) private static var registered: [ExecutorKind] = []

    /// Adds an executor kind to the registry (tests only: the fake executor).
    public static func register(_ kind: ExecutorKind) {
        registered.removeAll { $0.name == kind.name }
        registered.append(kind)
    }

    public static var kinds: [ExecutorKind] { builtIn + registered }
    public static var names: [String] { kinds.map(\.name) }
    public static func kind(_ name: String) -> ExecutorKind? { kinds.first { $0.name == name } }

    /// The environment marks of jobs the end-of-run sweep spares (see ExecutorKind.jobMark).
    public static var jobMarks: [String] { kinds.compactMap(\.jobMark) }

    /// A new executor called `name` (nil if there is none), with the environment its tools
    /// run in and where its warnings go.
    public static func make(_ name: String,
                            environment: [String: String],
                            warn: @escaping (String) -> Void = { _ in }) -> Executor? {
        guard let k = kind(name) else { return nil }
        return k.make(ExecutorSetup(environment: environment, warn: { warn("\(name): " + $0) }))
    }

    /// Cancels the jobs of `records` that outlived their runner, executor by executor.
    public static func cancelLeftovers(_ records: [StageRecord], environment: [String: String]) -> [String] {
        var byExecutor: [String: [String]] = [:]
        for r in records { if let e = r.executor, let id = r.nativeID { byExecutor[e, default: []].append(id) } }
        var cancelled: [String] = []
        for (name, ids) in byExecutor.sorted(by: { $0.key < $1.key }) {
            guard let ex = make(name, environment: environment), ex.jobsOutliveRunner else { continue }
            ex.cancel(nativeIDs: ids)
            cancelled += ids
        }
        return cancelled
    }
}
