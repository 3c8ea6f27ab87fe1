import ProxyConfig
import ProxyRules
import ProxySystem
import Glibc

/// The variables of one run of a health check: `check.` and `sess.` (a check's session lasts
/// one run too, as in HAProxy), made on their first use. `proc.` ones are the model's.
struct CheckVariables {
    private var check: VariableTable?
    private var session: VariableTable?

    func value(_ scope: VariableScope, _ name: String) -> SampleValue? {
        scope == .check ? check?[name] : scope == .sess ? session?[name] : nil
    }

    mutating func set(_ scope: VariableScope, _ name: String, _ value: SampleValue?) {
        if scope == .check {
            var t = check ?? [:]
            t[name] = value
            check = t
        } else if scope == .sess {
            var t = session ?? [:]
            t[name] = value
            session = t
        }
    }

    /// `set-var(NAME,COND...)`, `unset-var(NAME)` (nil): `proc.` ones go to the model; the
    /// run's own are set only when the conditions hold.
    mutating func assign(_ scope: VariableScope, _ name: String, _ value: SampleValue?, if conditions: VariableConditions, model: RuntimeModel) {
        if scope == .proc { model.setProcessVariable(name, value, if: conditions); return }
        if conditions.isEmpty || conditions.allow(current: self.value(scope, name), new: value) { set(scope, name, value) }
    }

    /// A new run starts with none.
    mutating func reset() {
        if check != nil { check = nil }
        if session != nil { session = nil }
    }
}

/// What a health check's rules and log-format texts read: constants, the environment,
/// process state, `proc.` variables, the run's own variables and the server's answer
/// (`res.payload`); the loader refuses every other fetch in a check: there is no client and
/// no request.
struct CheckSamples: SampleContext {
    unowned(unsafe) let check: HealthCheck

    func visitSamples(of fetch: Fetch, _ visit: (Sample) -> Bool) -> Bool {
        if case .variable(let scope, let name, let fallback) = fetch, scope == .check || scope == .sess {
            if let v = check.variables.value(scope, name) { return v.withSample(visit) }
            return fallback.map { f in Array(f.utf8).withUnsafeBytes { visit(.bytes($0)) } } ?? false
        }
        if case .responsePayload(let offset, let length) = fetch {
            // What the server sent since the last send; nothing when it is shorter than asked.
            let r = check.response
            guard offset <= r.count, length <= r.count - offset else { return false }
            let end = length == 0 ? r.count : offset + length
            return r.withUnsafeBytes { visit(.bytes(UnsafeRawBufferPointer(rebasing: $0[offset..<end]))) }
        }
        return ProcessSamples.visit(fetch, model: check.context.model, backend: check.backend, visit) ?? false
    }

    /// The `%` variables a check has (the loader warns about the others, which print nothing):
    /// the host, the process, the backend and server checked, its address, the check's start.
    func writeVariable(_ v: LogVariable, _ flags: LogFlags, _ w: inout LogLineWriter) {
        let c = check
        switch v {
        case .hostname: w.text(c.context.model.logger.hostname, flags)
        case .pid:
            if flags.contains(.hex) { w.hex(UInt64(ProcessCalls.pid), width: 4) } else { w.number(Int64(ProcessCalls.pid)) }
        case .backend: w.text(c.backend.name, flags)
        case .server: w.text(c.server.name, flags)
        case .serverIP:
            let a = c.address
            w.ip(a.family == AF_UNIX ? nil : { if case .ip(let ip) = HealthCheck.host(of: a) { return ip } else { return nil } }(), flags)
        case .serverPort:
            let a = c.address
            w.port(a.family == AF_UNIX ? nil : Int(a.port), flags)
        case .date: w.raw(Logger.acceptDate(seconds: c.startedWall.seconds, microseconds: c.startedWall.microseconds))
        case .gmtDate: w.raw(LogDates.gmt(c.startedWall.seconds))
        case .localDate: w.raw(LogDates.local(c.startedWall.seconds))
        case .timestamp:
            if flags.contains(.hex) { w.hex(UInt64(c.startedWall.seconds), width: 8) } else { w.number(Int64(c.startedWall.seconds)) }
        case .milliseconds:
            let ms = c.startedWall.microseconds / 1000
            if flags.contains(.hex) { w.hex(UInt64(ms), width: 2) } else { w.raw(ms < 10 ? "00\(ms)" : ms < 100 ? "0\(ms)" : "\(ms)") }
        default: w.text(nil as [UInt8]?, flags)
        }
    }
}

extension HealthCheck {
    /// A log-format text of the check's rules, rendered for this run.
    func render(_ text: String) -> [UInt8] {
        let format = formats[text] ?? LogFormat(text)
        if format.isConstant { return format.constant }
        let samples = CheckSamples(check: self)
        return format.render(samples) { v, flags, w in samples.writeVariable(v, flags, &w) }
    }

    /// `set-var`, `set-var-fmt`, `unset-var`: a fetch that gives nothing leaves the variable
    /// as it was, as in HAProxy.
    func run(_ action: CheckVariableAction) {
        var value: SampleValue?
        switch action.value {
        case nil:
            value = nil
        case .format(let text)?:
            value = .string(render(text))
        case .expression(let e)?:
            var got = false
            _ = CheckSamples(check: self).visitSamples(of: e.fetch) { raw in
                guard let (v, fold) = e.convert(raw) else { return false }
                value = SampleValue(v, fold: fold)
                got = true
                return true
            }
            if !got { return }
        }
        variables.assign(action.scope, action.name, value, if: action.conditions, model: context.model)
    }

    /// An integer from a sample expression (`tcp-check connect port var(check.port)`).
    func integer(_ e: SampleExpression) -> Int64? {
        var out: Int64?
        _ = CheckSamples(check: self).visitSamples(of: e.fetch) { raw in
            guard let (v, _) = e.convert(raw) else { return false }
            switch v {
            case .integer(let i): out = i
            case .boolean(let b): out = b ? 1 : 0
            case .bytes(let p): out = Int64(String(decoding: p, as: UTF8.self))
            case .ip: out = nil
            }
            return out != nil
        }
        return out
    }
}
