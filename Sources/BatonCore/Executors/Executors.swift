import BatonBase
import Glibc

/// The executors a recipe may name, made by name: the one place that knows them all.
public enum Executors {
    public static let names = ["local", "slurm"]

    /// A new executor called `name` (nil if there is none), with the environment its tools
    /// run in and where its warnings go.
    public static func make(_ name: String, environment: [String: String], warn: @escaping (String) -> Void = { _ in }) -> Executor? {
        switch name {
        case "local": return LocalExecutor()
        case "slurm":
            let s = SlurmExecutor(environment: environment)
            s.warn = { warn("slurm: " + $0) }
            return s
        default: return nil
        }
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
