import BatonBase
import BatonCore
import CLua
import Glibc
import LuaKit
import LuaShim

extension RecipeEnvironment {
    // MARK: watch

    static let watchFields = ["id", "handle", "pid", "pattern", "file", "requireFiles", "readyTimeoutSec", "readyPollSec",
                              "onMissing", "timeoutSec", "heartbeatSec", "callback", "cwd", "allowFail"]

    func watch(_ l: LuaState) throws -> Int32 {
        let t = try SpecTable(l, arg: 1, fn: "watch", allowed: RecipeEnvironment.watchFields)
        let id = try t.string("id", required: true, nonEmpty: true)!
        let targets = ["handle", "pid", "pattern", "file"].filter { t.has($0) }
        guard targets.count <= 1 else {
            throw LuaRaise.usage("watch: give one of handle, pid, pattern, file (found \(targets.joined(separator: ", ")))")
        }
        var exec: StageExecution? = nil
        if targets.first == "handle" {
            _ = t.get("handle")
            exec = handleExecution(l, index: -1)
            l.pop()
            if exec == nil { throw LuaRaise.usage("watch: field 'handle' must be a stage handle from runStage{background = true}") }
        }
        let pid = try t.integer("pid", min: 1)
        let pattern = try t.string("pattern", nonEmpty: true)
        if let p = pattern, ProcessTable.Regex(p).map({ var r = $0; r.free(); return true }) == nil {
            throw LuaRaise.usage("watch: field 'pattern' is not a valid regular expression: \(p)")
        }
        let cwd = try t.string("cwd").map(FileIO.absolute) ?? FileIO.currentDirectory()
        func abs(_ p: String) -> String { p.hasPrefix("/") ? p : FileIO.join(cwd, p) }
        let file = try t.string("file", nonEmpty: true).map(abs)
        let require = (try t.stringList("requireFiles") ?? []).map(abs)
        let readyTimeout = try t.number("readyTimeoutSec", min: 0) ?? 600
        let readyPoll = try t.number("readyPollSec", min: 0.01) ?? 5
        let onMissing = try t.option("onMissing", OnMissing.self) ?? .fail
        let timeout = try t.number("timeoutSec", min: 0) ?? 86400
        let heartbeat = try t.number("heartbeatSec", min: 0.05) ?? 60
        let allowFail = try t.bool("allowFail") ?? false
        if targets.isEmpty && require.isEmpty {
            throw LuaRaise.usage("watch: nothing to watch: give one of the fields handle, pid, pattern, file, or requireFiles")
        }
        let callback = try t.function("callback")
        defer { if let c = callback { l.unref(c) } }

        let ctx = try requireContext()
        var targetText = "nothing"
        if let e = exec { targetText = "stage \(e.spec.id)" }
        else if let p = pid { targetText = "pid \(p)" }
        else if let p = pattern { targetText = "pattern '\(p)'" }
        else if let f = file { targetText = "file \(f)" }
        if ctx.dryRun {
            plan.append(("watch \(id): \(targetText)" + (require.isEmpty ? "" : ", then require \(require.joined(separator: ", "))"), false))
            l.push(json: .object([("id", .string(id)), ("state", .string("completed")), ("ok", .bool(true)), ("dry", .bool(true))]))
            return 1
        }
        let life = WatchLifecycle(id: id, context: ctx)
        let began = Clock.monotonic()
        life.move(.queued, "watch registered on \(targetText)", details: .object([
            ("require_files", .array(require.map(JSON.string))), ("ready_timeout_sec", .double(readyTimeout)),
            ("ready_poll_sec", .double(readyPoll)), ("on_missing", .string(onMissing.rawValue)), ("timeout_sec", .double(timeout))]))
        var info: [(String, JSON)] = [("id", .string(id))]

        // 1. The watched thing runs until it exits.
        life.move(.running, "waiting for \(targetText) to finish")
        let hb = WaitLabel(.watch, id)
        // `:skip` through the control socket ends the watch as blocked, whatever it waits on.
        let skipped = { ctx.skipRequests.contains(id) }
        var outcome: WatchTargetOutcome
        var stageFailed: StageResult? = nil
        if let e = exec {
            let r = ctx.loop.wait(hb, deadline: Clock.monotonic() + timeout, heartbeatEvery: heartbeat) { e.isFinished || skipped() }
            switch r {
            case .satisfied where !e.isFinished: outcome = .timedOut
            case .satisfied:
                let res = e.result!
                outcome = .exited(exit: res.exit, signal: res.signal, detail: "stage \(e.spec.id) \(res.status.rawValue)" + (res.exit.map { " (exit \($0))" } ?? ""))
                info.append(("status", .string(res.status.rawValue)))
                if !res.dry && !res.replayed { progress(stageLine(res)) }
                if !res.ok { stageFailed = res }
            case .deadline: outcome = .timedOut
            case .interrupted: outcome = .interrupted
            }
        } else if let p = pid {
            outcome = ctx.waitForPid(pid_t(p), timeout: timeout, label: hb, heartbeatEvery: heartbeat, stopIf: skipped)
        } else if let p = pattern {
            outcome = ctx.waitForPattern(p, timeout: timeout, poll: min(readyPoll, 1), label: hb, heartbeatEvery: heartbeat, stopIf: skipped)
        } else if let f = file {
            switch ctx.waitForFiles([f], timeout: timeout, poll: readyPoll, nonEmpty: false, label: hb, heartbeatEvery: heartbeat,
                                    stopIf: skipped) {
            case nil: outcome = .interrupted
            case let m? where m.isEmpty: outcome = .exited(exit: nil, signal: nil, detail: "file \(f) appeared")
            default: outcome = .timedOut
            }
        } else {
            outcome = .exited(exit: nil, signal: nil, detail: "nothing to wait for")
        }
        try checkFatal()
        if ctx.skipRequests.remove(id) != nil { return try skipWatch(l, life, info, began) }
        switch outcome {
        case .interrupted:
            life.move(.failed, "interrupted")
            throw RecipeEnvironment.abort
        case .timedOut:
            let what = file != nil && exec == nil && pid == nil && pattern == nil
                ? "\(targetText) did not appear within timeoutSec = \(fmt(timeout))"
                : "\(targetText) still running after timeoutSec = \(fmt(timeout))"
            life.move(.failed, what)
            return try finishWatch(l, life, info, began, ok: false, allowFail: allowFail, message: "watch '\(id)': \(what)")
        case let .exited(exit, signal, detail):
            if let x = exit { info.append(("exit", .int(Int64(x)))) }
            if let s = signal { info.append(("signal", .int(Int64(s)))) }
            life.move(.exited, detail)
        }

        // A failed stage will not write what is still missing: no waiting. Its callback, if
        // there is one, handles the failure when nothing is missing (a wrapper that always
        // writes its metrics) or when onMissing = "callback"; otherwise the watch is failed
        // (or blocked, with onMissing = "block") at once.
        if let res = stageFailed {
            let missingNow = require.filter { (FileIO.size($0) ?? 0) == 0 }
            let handled = callback != nil && (missingNow.isEmpty || onMissing == .callback)
            if !handled {
                var what = "stage \(res.id) \(res.status.rawValue)" + (res.exit.map { " with exit code \($0)" } ?? "")
                    + (res.signal.map { " (signal \($0))" } ?? "")
                if !missingNow.isEmpty { what += "; required file\(missingNow.count == 1 ? "" : "s") missing: \(missingNow.joined(separator: ", "))" }
                let details = JSON.object([("stage", .string(res.id)), ("status", .string(res.status.rawValue)),
                                           ("exit", res.exit.map { .int(Int64($0)) } ?? .null), ("missing", .array(missingNow.map(JSON.string)))])
                info.append(("files", .array(require.map(JSON.string))))
                info.append(("missing", .array(missingNow.map(JSON.string))))
                switch onMissing {
                case .block:
                    life.move(.blocked, what, details: details)
                    return try finishWatch(l, life, info, began, ok: false, allowFail: true, message: nil)
                case .fail, .callback:
                    life.move(.failed, what, details: details)
                    return try finishWatch(l, life, info, began, ok: false, allowFail: allowFail, message: "watch '\(id)': \(what)")
                }
            }
        }

        // 2. Its artifacts: noticed as they appear (inotify), polled as a fallback.
        var missing: [String] = []
        if let res = stageFailed, !require.isEmpty {
            missing = require.filter { (FileIO.size($0) ?? 0) == 0 }
            if !missing.isEmpty {
                life.move(.awaiting_artifacts, "stage \(res.id) \(res.status.rawValue): not waiting for files it did not write",
                          details: .object([("files", .array(require.map(JSON.string)))]))
            }
        } else if !require.isEmpty {
            life.move(.awaiting_artifacts, "waiting up to \(Clock.human(readyTimeout)) for \(require.count) required file\(require.count == 1 ? "" : "s")",
                      details: .object([("files", .array(require.map(JSON.string)))]))
            guard let m = ctx.waitForFiles(require, timeout: readyTimeout, poll: readyPoll, nonEmpty: true,
                                           label: hb, heartbeatEvery: heartbeat, stopIf: skipped) else {
                life.move(.failed, "interrupted while awaiting artifacts")
                throw RecipeEnvironment.abort
            }
            missing = m
            try checkFatal()
            if ctx.skipRequests.remove(id) != nil {
                info.append(("missing", .array(m.map(JSON.string))))
                return try skipWatch(l, life, info, began)
            }
        }
        info.append(("files", .array(require.map(JSON.string))))
        info.append(("missing", .array(missing.map(JSON.string))))
        if !missing.isEmpty {
            let what = "required file\(missing.count == 1 ? "" : "s") missing after \(Clock.human(readyTimeout)): \(missing.joined(separator: ", "))"
            switch onMissing {
            case .block:
                life.move(.blocked, what, details: .object([("missing", .array(missing.map(JSON.string)))]))
                return try finishWatch(l, life, info, began, ok: false, allowFail: true, message: nil)
            case .fail:
                life.move(.failed, what, details: .object([("missing", .array(missing.map(JSON.string)))]))
                return try finishWatch(l, life, info, began, ok: false, allowFail: allowFail, message: "watch '\(id)': \(what)")
            case .callback: break // call it anyway, with the missing list
            }
        }

        // 3. The callback, only now that the files exist (or onMissing says to go on).
        if let cb = callback {
            life.move(.callback_queued, missing.isEmpty ? "artifacts ready" : "artifacts missing; onMissing = callback")
            life.move(.callback_running, "calling the callback")
            l.pushRef(cb)
            l.push(json: .object(info + [("state", .string("callback_running"))]))
            do {
                try l.pcall(nargs: 1, nresults: 1)
            } catch let e as LuaCallError {
                life.move(.failed, l.abortReason != 0 ? "interrupted in the callback" : "callback raised: \(e.message)")
                throw l.rethrow(e)
            }
            if l.type(-1) != LUA_TNIL, let v = try? l.toJSON(-1) { info.append(("callback_result", v)) }
            l.pop()
        }
        let failedNote = stageFailed.map { "stage \($0.id) \($0.status.rawValue)" }
        life.move(.completed, ["done", failedNote, missing.isEmpty ? nil : "with missing artifacts"].compactMap { $0 }.joined(separator: "; "))
        return try finishWatch(l, life, info, began, ok: missing.isEmpty && stageFailed == nil, allowFail: true, message: nil)
    }

    private func skipWatch(_ l: LuaState, _ life: WatchLifecycle, _ info: [(String, JSON)], _ began: Double) throws -> Int32 {
        life.move(.blocked, "skipped through the control socket (:skip)")
        return try finishWatch(l, life, info, began, ok: false, allowFail: true, message: nil)
    }

    private func finishWatch(_ l: LuaState, _ life: WatchLifecycle, _ info: [(String, JSON)], _ began: Double,
                             ok: Bool, allowFail: Bool, message: String?) throws -> Int32 {
        var o = info
        o.append(("state", .string(life.state?.rawValue ?? "failed")))
        o.append(("ok", .bool(ok)))
        o.append(("reason", .string(life.history.last?.1 ?? "")))
        o.append(("duration", .double(Clock.monotonic() - began)))
        o.append(("transitions", .array(life.history.map { .string($0.0.rawValue) })))
        let outcome = JSON.object(o)
        if let m = message, !allowFail {
            throw LuaRaise(m, status: .failure, kind: "watch", extra: { l in l.push(json: outcome); l.setField(-2, "outcome") })
        }
        l.push(json: outcome)
        return 1
    }

    // MARK: gate

    static let gateFields = ["name", "maxIterations", "check", "cmd", "onReject", "fallback", "cwd", "env", "timeout"]

    func gate(_ l: LuaState) throws -> Int32 {
        let t = try SpecTable(l, arg: 1, fn: "gate", allowed: RecipeEnvironment.gateFields)
        let name = try t.string("name", required: true, nonEmpty: true)!
        let maxIterations = try t.integer("maxIterations", min: 1, max: 1000) ?? 1
        let hasCheck = t.has("check"), hasCmd = t.has("cmd")
        guard hasCheck != hasCmd else {
            throw LuaRaise.usage("gate: give exactly one of 'check' (a function) or 'cmd' (a command printing JSON)")
        }
        let check = try t.function("check")
        let cmd = try t.command("cmd", required: false)
        let onReject = try t.function("onReject")
        defer { for r in [check, onReject].compactMap({ $0 }) { l.unref(r) } }
        var fallback: JSON? = nil
        if t.has("fallback") {
            _ = t.get("fallback")
            defer { l.pop() }
            guard l.type(-1) == LUA_TTABLE, let f = try? l.toJSON(-1) else { throw LuaRaise.usage("gate: field 'fallback' must be a table like {approved = false, issues = {...}}") }
            fallback = f
        }
        let cwd = try t.string("cwd")
        let extraEnv = try t.stringMap("env") ?? [:]
        let timeout = try t.number("timeout", min: 0.001)
        let ctx = try requireContext()

        var last: JSON = .object([])
        for iteration in 1...maxIterations {
            var decision: JSON
            var fallbackUsed = false
            var note: String? = nil
            if ctx.dryRun {
                plan.append(("gate \(name): approved on iteration 1 (dry run)", false))
                decision = .object([("approved", .bool(true)), ("issues", .array([]))])
            } else if let c = check {
                l.pushRef(c)
                l.push(iteration)
                do { try l.pcall(nargs: 1, nresults: 1) } catch let e as LuaCallError { throw l.rethrow(e) }
                let v = try? l.toJSON(-1)
                l.pop()
                if let v, let d = normalize(v) { decision = d } else if let f = fallback, let d = normalize(f) {
                    decision = d; fallbackUsed = true; note = "check returned no {approved = bool} table"
                } else {
                    throw LuaRaise("gate '\(name)': check must return a table like {approved = true|false, issues = {...}}",
                                   status: .failure, kind: "gate")
                }
            } else {
                var env = ctx.baseEnvironment
                for (k, v) in extraEnv { env[k] = v }
                env["BATON_GATE"] = name
                env["BATON_GATE_ITERATION"] = String(iteration)
                let o = CommandRun.run(cmd!, cwd: cwd, env: env, timeout: timeout, on: ctx.loop, label: WaitLabel(.gate, name))
                if o.interrupted { throw RecipeEnvironment.abort }
                if let d = GateOutput.lastObject(o.stdoutText).flatMap(normalize) {
                    decision = d
                } else if let f = fallback, let d = normalize(f) {
                    decision = d; fallbackUsed = true
                    note = o.ok ? "no JSON object with 'approved' in the command's output" : "the command failed: \(o.failureDescription)"
                } else {
                    throw LuaRaise("gate '\(name)': '\(cmd!.display)' printed no JSON object with 'approved' (\(o.ok ? "exit 0" : o.failureDescription)) and no fallback is set",
                                   status: .failure, kind: "gate")
                }
            }
            let approved = decision["approved"]?.boolValue ?? false
            let issues = decision["issues"] ?? .array([])
            ctx.record(.gate(GateRecord(name: name, iteration: iteration, max: maxIterations, approved: approved, issues: issues,
                                        fallbackUsed: fallbackUsed, note: note)))
            try checkFatal()
            last = decision.setting("iteration", .int(Int64(iteration))).setting("fallback_used", .bool(fallbackUsed))
            // Issues of an approved decision are notes (warnings), not the reasons of a rejection.
            let hasIssues = !(issues.arrayValue?.isEmpty ?? false)
            progress("gate \(name) iteration \(iteration)/\(maxIterations): "
                     + (approved ? "approved" + (hasIssues ? " (notes: \(issueText(issues)))" : "") : "rejected: " + issueText(issues)))
            if approved {
                l.push(json: last)
                return 1
            }
            if iteration < maxIterations, let r = onReject {
                l.pushRef(r)
                l.push(json: last)
                l.push(iteration)
                do { try l.pcall(nargs: 2, nresults: 0) } catch let e as LuaCallError { throw l.rethrow(e) }
            }
        }
        let final = last
        throw LuaRaise("gate '\(name)' rejected \(maxIterations) time\(maxIterations == 1 ? "" : "s"): \(issueText(final["issues"] ?? .array([])))",
                       status: .gateExhausted, kind: "gate", extra: { l in l.push(json: final); l.setField(-2, "decision") })
    }

    func issueText(_ issues: JSON) -> String {
        let items = issues.arrayValue ?? [issues]
        if items.isEmpty { return "(no issues given)" }
        return items.map { $0.stringValue ?? $0.encoded() }.joined(separator: "; ")
    }

    /// {approved: bool, issues: [...]} or nil.
    func normalize(_ v: JSON) -> JSON? {
        guard case .object = v, let a = v["approved"]?.boolValue else { return nil }
        var issues = v["issues"] ?? .array([])
        if case .string = issues { issues = .array([issues]) }
        if case .null = issues { issues = .array([]) }
        if case .object(let p) = issues, p.isEmpty { issues = .array([]) }
        return v.setting("approved", .bool(a)).setting("issues", issues)
    }
}

/// `watch{onMissing = ...}`.
enum OnMissing: String, CaseIterable { case fail, block, callback }

enum GateOutput {
    /// The last JSON object printed: tries each '{' from the end up to the last '}'.
    static func lastObject(_ s: String) -> JSON? {
        let u = Array(s.utf8)
        guard let end = u.lastIndex(of: UInt8(ascii: "}")) else { return nil }
        var i = end
        while i >= 0 {
            if u[i] == UInt8(ascii: "{"), let v = try? JSON.parse(Array(u[i...end])), case .object = v { return v }
            i -= 1
        }
        return nil
    }
}
