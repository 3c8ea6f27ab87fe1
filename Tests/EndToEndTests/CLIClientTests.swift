import Foundation
import Testing

/// `proxy cli` on a terminal (tmux): line editing and history of our own.
@Suite(.serialized) struct CLILineEditingTests {
    @Test(.enabled(if: Terminal.tmux != nil, "needs tmux"))
    func editingAndHistory() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let socket = bed.directory + "/s.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("http"))
        listen web
            bind 127.0.0.1:\(port)
            server a 127.0.0.1:\(app)

        """, waitFor: port)
        let terminal = Terminal("HOME=\(bed.directory) \(Harness.proxyBinary) cli -s \(socket)", name: "cli-\(getpid())-\(port)",
                                width: 120, height: 40)
        func screen() -> String { terminal.screen }
        func keys(_ k: String...) { for key in k { terminal.keys(key) } }
        // (tmux drops the prompt's trailing space.)
        #expect(TestBed.waitUntil { screen().contains("proxy>") }, "\(screen())")
        // A typo mended with backspace.
        keys("get weight web/aX", "BSpace", "Enter")
        #expect(TestBed.waitUntil { screen().contains("1 (initial 1)") }, "\(screen())")
        // The start of the line typed last, then Ctrl-A to put it in front.
        keys("set weight web/a 4", "Enter")
        keys("et weight web/a", "C-a", "g", "Enter")
        #expect(TestBed.waitUntil { screen().contains("4 (initial 1)") }, "\(screen())")
        // Up twice brings back 'set weight web/a 4'; Left and a digit make it 74; then a
        // line dropped with Ctrl-U, and Up runs the last one again.
        keys("Up", "Up", "Left", "7", "Enter")
        #expect(TestBed.waitUntil { cli(socket, "get weight web/a") == "74 (initial 1)\n\n" }, "\(screen())")
        keys("junk", "C-u", "Up", "Enter")
        #expect(TestBed.waitUntil { screen().components(separatedBy: "74 (initial 1)").count == 2 || cli(socket, "get weight web/a") == "74 (initial 1)\n\n" })
        // The history is kept for the next session.
        keys("C-d")
        #expect(TestBed.waitUntil { (try? String(contentsOfFile: bed.directory + "/.proxy_cli_history", encoding: .utf8))?.contains("set weight web/a 74") == true })
    }
}
