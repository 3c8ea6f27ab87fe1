import ProxyConfig
import ProxyEngine
import ProxyRules
import ProxySystem
import Glibc

/// Process-wide variables from the runtime API, the seed thread's wish: `set var proc.NAME
/// [expr|fmt] VALUE` flips a switch that `var(proc.NAME)` reads on the next request, with no
/// reload. Unlike HAProxy 2.6 it needs no `experimental-mode` and works at operator level
/// (HAProxy's default socket level), so `set var proc.site_a_maint bool(1)` works on a plain
/// `stats socket` line. `get var` answers as HAProxy does; `unset var` is ours.
extension RuntimeCommands {
    /// The variable's name without `proc.`, or HAProxy's sentence.
    func processVariable(_ word: String?, verb: String) -> Result<String, CommandError> {
        guard let word else {
            return .failure(CommandError(verb == "get" ? "Missing process-wide variable identifier." : "Missing variable name."))
        }
        // The name checked as the config checks it, so `var(proc.NAME)` can read what is set.
        let parsed: (VariableScope, String)
        do { parsed = try VariableScope.parseName(word, what: "'\(verb) var'") } catch let e as RuleError {
            return .failure(CommandError(verb == "get" ? "Variable not found." : e.message))
        } catch {
            return .failure(CommandError("Variable not found."))
        }
        guard parsed.0 == .proc else {
            if verb == "get" { return .failure(CommandError("Variable not found.")) }
            return .failure(CommandError("'\(verb) var': cannot set variable '\(word)', only scope 'proc' is permitted here."))
        }
        return .success(parsed.1)
    }

    /// `set var proc.NAME [expr] EXPR` or `set var proc.NAME fmt TEXT`: an expression of
    /// constants (`int()`, `str()`, `bool()`), the environment, process state and other
    /// process variables, with converters.
    func setVariable(_ words: [String]) -> String {
        answer(processVariable(words.count > 2 ? words[2] : nil, verb: "set").flatMap { name -> Result<String, CommandError> in
            var rest = Array(words.dropFirst(3))
            var format = false
            if rest.first == "expr" { rest.removeFirst() } else if rest.first == "fmt" { rest.removeFirst(); format = true }
            guard !rest.isEmpty else { return .failure(CommandError("Missing either 'expr', 'fmt' or expression.")) }
            let text = rest.joined(separator: " ")
            if format {
                engine.model.processVariables.withLock { $0[name] = .string(Array(text.utf8)) }
                return .success(Self.done)
            }
            let expression: SampleExpression
            do { expression = try SampleExpression.parse(text) } catch let e as RuleError {
                return .failure(CommandError(e.message))
            } catch {
                return .failure(CommandError("invalid expression '\(text)'"))
            }
            switch expression.fetch.usage {
            case .load, .process, .variable(.proc): break
            default:
                return .failure(CommandError("fetch method '\(expression.keyword)' is not available here: only constants, the environment, process state and proc. variables are"))
            }
            guard let value = engine.evaluateProcessExpression(expression) else {
                return .failure(CommandError("the expression '\(text)' gave no value; nothing changed"))
            }
            engine.model.processVariables.withLock { $0[name] = value }
            return .success(Self.done)
        })
    }

    /// `get var proc.NAME`: `proc.NAME: type=sint|str|bool|ipv4|ipv6 value=<...>`.
    func getVariable(_ words: [String]) -> String {
        answer(processVariable(words.count > 2 ? words[2] : nil, verb: "get").flatMap { name -> Result<String, CommandError> in
            guard let value = engine.model.processVariables.withLock({ $0[name] }) else {
                return .failure(CommandError("Variable not found."))
            }
            let type: String
            switch value {
            case .boolean: type = "bool"
            case .integer: type = "sint"
            case .string: type = "str"
            case .ip(let a): type = a.isV4 ? "ipv4" : "ipv6"
            }
            return .success("proc.\(name): type=\(type) value=<\(String(decoding: value.text, as: UTF8.self))>\n\n")
        })
    }

    /// `unset var proc.NAME`: the variable is gone; `var(proc.NAME)` finds nothing again.
    func unsetVariable(_ words: [String]) -> String {
        answer(processVariable(words.count > 2 ? words[2] : nil, verb: "unset").map { name in
            _ = engine.model.processVariables.withLock { $0.removeValue(forKey: name) }
            return Self.done
        })
    }
}
