import ProxySystem
import Glibc

/// The interactive `proxy cli` prompt's line editing, our own (no libedit): left and right,
/// Home and End (Ctrl-A, Ctrl-E), backspace and Delete, Ctrl-U and Ctrl-K, Ctrl-C to drop
/// the line, Ctrl-D on an empty line to leave, and a history walked with up and down, kept
/// in `~/.proxy_cli_history` (500 lines). The terminal is in raw mode only while a line is read.
struct LineEditor {
    var history: [String] = []
    let historyFile: String?
    static let historyLimit = 500

    init() {
        historyFile = getenv("HOME").map { String(cString: $0) + "/.proxy_cli_history" }
        if let path = historyFile, let bytes = try? FileSystem.readFile(path) {
            history = String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init).suffix(Self.historyLimit)
        }
    }

    /// Reads one line behind `prompt`; nil at Ctrl-D on an empty line or end of input.
    mutating func readLine(prompt: String) -> String? {
        var saved = termios()
        guard tcgetattr(0, &saved) == 0 else { return Swift.readLine() }
        var raw = saved
        raw.c_lflag &= ~tcflag_t(ICANON | ECHO | ISIG | IEXTEN)
        raw.c_iflag &= ~tcflag_t(IXON | ICRNL)
        withUnsafeMutableBytes(of: &raw.c_cc) { cc in
            cc[Int(VMIN)] = 1
            cc[Int(VTIME)] = 0
        }
        tcsetattr(0, TCSADRAIN, &raw)
        defer { tcsetattr(0, TCSADRAIN, &saved) }

        var line: [Character] = []
        var cursor = 0
        var position = history.count  // where up/down stand in the history
        var draft: [Character] = []
        func redraw() {
            var text = "\r" + prompt + String(line) + "\u{1b}[K"
            let back = line.count - cursor
            if back > 0 { text += "\u{1b}[\(back)D" }
            CLIClient.write(text)
        }
        CLIClient.write(prompt)
        while true {
            guard let b = Self.readByte() else { return line.isEmpty ? nil : String(line) }
            switch b {
            case 13, 10:  // Enter
                CLIClient.write("\r\n")
                let text = String(line)
                remember(text)
                return text
            case 4:  // Ctrl-D
                if line.isEmpty { CLIClient.write("\r\n"); return nil }
                if cursor < line.count { line.remove(at: cursor) }
            case 3:  // Ctrl-C: drop the line
                CLIClient.write("^C\r\n")
                line = []
                cursor = 0
                position = history.count
                CLIClient.write(prompt)
                continue
            case 1: cursor = 0  // Ctrl-A
            case 5: cursor = line.count  // Ctrl-E
            case 21:  // Ctrl-U
                line.removeFirst(cursor)
                cursor = 0
            case 11: line.removeLast(line.count - cursor)  // Ctrl-K
            case 127, 8:  // Backspace
                if cursor > 0 { line.remove(at: cursor - 1); cursor -= 1 }
            case 27:  // an escape sequence: arrows, Home, End, Delete
                guard let b1 = Self.readByte() else { continue }
                guard b1 == UInt8(ascii: "[") || b1 == UInt8(ascii: "O"), let b2 = Self.readByte() else { continue }
                switch b2 {
                case UInt8(ascii: "A"), UInt8(ascii: "B"):
                    let up = b2 == UInt8(ascii: "A")
                    if position == history.count { draft = line }
                    position = up ? max(0, position - 1) : min(history.count, position + 1)
                    line = position == history.count ? draft : Array(history[position])
                    cursor = line.count
                case UInt8(ascii: "C"): cursor = min(line.count, cursor + 1)
                case UInt8(ascii: "D"): cursor = max(0, cursor - 1)
                case UInt8(ascii: "H"): cursor = 0
                case UInt8(ascii: "F"): cursor = line.count
                case UInt8(ascii: "1")...UInt8(ascii: "9"):
                    // ESC [ n ~ : 1 or 7 Home, 4 or 8 End, 3 Delete.
                    guard Self.readByte() == UInt8(ascii: "~") else { continue }
                    switch b2 {
                    case UInt8(ascii: "1"), UInt8(ascii: "7"): cursor = 0
                    case UInt8(ascii: "4"), UInt8(ascii: "8"): cursor = line.count
                    case UInt8(ascii: "3"): if cursor < line.count { line.remove(at: cursor) }
                    default: break
                    }
                default: break
                }
            default:
                guard b >= 0x20 else { continue }
                // A UTF-8 sequence is read whole before it is inserted.
                var bytes = [b]
                let extra = b >= 0xf0 ? 3 : b >= 0xe0 ? 2 : b >= 0xc0 ? 1 : 0
                for _ in 0..<extra { if let n = Self.readByte() { bytes.append(n) } }
                for c in String(decoding: bytes, as: UTF8.self) {
                    line.insert(c, at: cursor)
                    cursor += 1
                }
            }
            redraw()
        }
    }

    /// Adds a line to the history (not a repeat of the last one, not an empty one) and keeps
    /// the file in step; a file that cannot be written is no reason to fail.
    mutating func remember(_ text: String) {
        let trimmed = text.trimmingBlanks()
        guard !trimmed.isEmpty, history.last != trimmed else { return }
        history.append(trimmed)
        if history.count > Self.historyLimit { history.removeFirst(history.count - Self.historyLimit) }
        guard let path = historyFile else { return }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        let data = Array((history.joined(separator: "\n") + "\n").utf8)
        _ = data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        Glibc.close(fd)
    }

    static func readByte() -> UInt8? {
        var b: UInt8 = 0
        while true {
            let n = Glibc.read(0, &b, 1)
            if n == 1 { return b }
            if n < 0 && errno == EINTR { continue }
            return nil
        }
    }
}
