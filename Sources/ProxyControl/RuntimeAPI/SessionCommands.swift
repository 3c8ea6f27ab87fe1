import ProxyConfig
import ProxyEngine
import ProxySystem

/// `show sess [ID|all]` and `shutdown session ID`: answered by the data loops, each about
/// its own sessions, so the answer arrives later, on the control thread.
extension RuntimeCommands {
    /// Starts `words` if it is a command the loops answer, and returns true; `done` gets the
    /// answer on the control thread. False: run it with `run`.
    public func runOnLoops(_ words: [String], level: AccessLevel, done: @escaping (String) -> Void) -> Bool {
        switch Array(words.prefix(2)) {
        case ["show", "sess"]:
            guard level >= .operator else { done("Permission denied\n\n"); return true }
            let arg = words.count > 2 ? words[2] : nil
            if let arg, arg != "all", !arg.hasPrefix("0x") {
                done("Session pointer expected (use 'show sess').\n\n")
                return true
            }
            engine.describeSessions(detailed: arg != nil, id: arg == "all" ? nil : arg) { lines in
                if let arg, arg != "all", lines.isEmpty {
                    done("No such session (use 'show sess').\n\n")
                } else {
                    done(lines.map { $0 + "\n" }.joined() + "\n")
                }
            }
            return true
        case ["shutdown", "session"]:
            guard level >= .admin else { done("Permission denied\n\n"); return true }
            guard words.count > 2 else { done("Session pointer expected (use 'show sess').\n\n"); return true }
            engine.shutdownSession(id: words[2]) { found in
                done(found ? "\n" : "No such session (use 'show sess').\n\n")
            }
            return true
        default:
            return false
        }
    }
}
