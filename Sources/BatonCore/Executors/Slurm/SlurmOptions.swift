import BatonBase

extension ExecutorKind {
    /// Stages as Slurm batch jobs (docs/slurm.md): `runStage{executor = "slurm", slurm = {...}}`,
    /// `baton.executor("slurm", {...})`, `run --executor slurm`. (Named for its submission tool:
    /// the registry's line for it says no more.)
    public static let sbatch = ExecutorKind(
        name: "slurm", summary: "Slurm batch jobs (docs/slurm.md)", options: SlurmOptions.declared,
        jobMark: "\(SlurmExecutor.jobMark.key)=\(SlurmExecutor.jobMark.value)"
    ) { setup in
        let s = SlurmExecutor(environment: setup.environment)
        s.warn = setup.warn
        return s
    }
}

/// What a Slurm stage asks of the scheduler (`runStage{slurm = {...}}`, `baton.executor("slurm", {...})`).
public struct SlurmOptions: Sendable, Equatable {
    public var partition: String?
    /// Walltime in Slurm's words ("10", "1:00:00", "2-00:00:00"); nil: from the stage's timeout.
    public var time: String?
    public var mem: String?
    public var cpus: Int?
    public var gpus: String?
    public var account: String?
    public var qos: String?
    public var extra: [String] = []

    /// The options' one declaration (field checks, `baton check`, `baton types`, docs/slurm.md).
    static let declared: [ExecutorOption] = [
        ExecutorOption("partition", .string, "the partition (queue) to submit to"),
        ExecutorOption("time", .stringOrNumber(min: 1),
                       "walltime: Slurm's words (\"1:00:00\") or seconds, rounded up to minutes"),
        ExecutorOption("mem", .stringOrInteger(min: 1), "memory: Slurm's words (\"4G\") or MiB"),
        ExecutorOption("cpus", .integer(min: 1), "CPUs per task"),
        ExecutorOption("gpus", .stringOrInteger(min: 0), "GPUs: a count, or Slurm's words (\"a100:2\")"),
        ExecutorOption("account", .string, "the account to charge"),
        ExecutorOption("qos", .string, "the quality of service"),
        ExecutorOption("extra", .stringList, "more sbatch options, as given (\"--constraint=ib\")"),
        ExecutorOption("poll", .number(min: 0.05), "seconds between status queries (default 5, BATON_SLURM_POLL_SEC)",
                       runWide: true),
    ]

    public init() {}

    /// Decoded from the values the recipe gave (already checked against `declared`): a number
    /// is seconds for `time` (Slurm counts whole minutes), MiB for `mem`, a count for `gpus`.
    public init(_ o: ExecutorOptions) {
        partition = o["partition"]?.string
        time = o["time"].map { v in v.number.map { "\(Int(($0 / 60).rounded(.up)))" } ?? v.string ?? "" }
        mem = o["mem"].map { v in v.number.map { "\(Int($0))M" } ?? v.string ?? "" }
        cpus = o["cpus"]?.number.map { Int($0) }
        gpus = o["gpus"].map { v in v.number.map { String(Int($0)) } ?? v.string ?? "" }
        account = o["account"]?.string
        qos = o["qos"]?.string
        extra = o["extra"]?.strings ?? []
    }

    /// The `#SBATCH` options these stand for. Without a `time`, a stage timeout asks for its
    /// length plus the grace, rounded up to whole minutes (Slurm's unit).
    func sbatchOptions(timeout: Double?, grace: Double) -> [String] {
        var o: [String] = []
        if let p = partition { o.append("--partition=\(p)") }
        if let t = time { o.append("--time=\(t)") } else if let t = timeout {
            o.append("--time=\(Int(((t + grace) / 60).rounded(.up)))")
        }
        if let m = mem { o.append("--mem=\(m)") }
        if let c = cpus { o.append("--cpus-per-task=\(c)") }
        if let g = gpus { o.append("--gpus=\(g)") }
        if let a = account { o.append("--account=\(a)") }
        if let q = qos { o.append("--qos=\(q)") }
        return o + extra
    }
}
