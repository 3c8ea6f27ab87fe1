import Foundation

/// A program on a terminal, in a tmux server of its own: keys typed, the screen read back.
/// For the interactive clients (hatop, `proxy cli`).
final class Terminal {
    static let tmux = Harness.which("tmux")
    let name: String

    /// Starts `command` on a `width`×`height` terminal.
    init(_ command: String, name: String, width: Int = 200, height: Int = 50) {
        self.name = name
        _ = run(["new-session", "-d", "-s", name, "-x", String(width), "-y", String(height), command])
    }

    deinit { _ = run(["kill-server"]) }

    @discardableResult
    func run(_ arguments: [String]) -> String {
        (try? Harness.run(Self.tmux ?? "/usr/bin/tmux", ["-L", name] + arguments))?.stdout ?? ""
    }

    /// What the terminal shows now (tmux drops trailing spaces).
    var screen: String { run(["capture-pane", "-p", "-t", name]) }

    /// Types keys, in tmux's names (`Enter`, `Up`, `C-a`, `Escape`...) or as text.
    func keys(_ keys: String...) { run(["send-keys", "-t", name] + keys) }
}
