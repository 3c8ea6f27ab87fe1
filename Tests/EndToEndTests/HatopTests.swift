import Foundation
import Testing

/// hatop (Debian's package), HAProxy's interactive console, driven in tmux against our
/// stats socket: its screen lists the servers with their states, and a server put into
/// maintenance from its embedded CLI is in maintenance.
@Suite(.serialized) struct HatopTests {
    static let tools = Harness.which("hatop") != nil && Harness.which("tmux") != nil

    @Test(.enabled(if: tools, "needs hatop and tmux"))
    func hatopShowsAndSteersServers() throws {
        let bed = try TestBed()
        let port = TestBed.freePort()
        let app = try bed.backend(name: "app")
        let socket = bed.directory + "/s.sock"
        try bed.proxy("""
        global
            stats socket \(socket) level admin
        \(TestBed.defaults("http"))
        frontend web
            bind 127.0.0.1:\(port)
            default_backend app
        backend app
            server alpha 127.0.0.1:\(app) check inter 300ms
            server beta 127.0.0.1:\(app)

        """, waitFor: port)
        let terminal = Terminal("hatop -s \(socket)", name: "hatop-\(getpid())-\(port)")
        func screen() -> String { terminal.screen }
        func line(_ server: String) -> String {
            screen().split(separator: "\n").first { $0.hasPrefix(server + " ") }.map(String.init) ?? ""
        }
        let shown = TestBed.waitUntil { line("alpha").contains("UP") && line("alpha").contains("L4OK") && !line("beta").isEmpty }
        #expect(shown, "\(screen())")
        #expect(screen().contains("Version: 2.6.12-proxy-"))
        // The embedded CLI (mode 5), then back to the status screen (mode 1).
        terminal.keys("Escape", "5")
        #expect(TestBed.waitUntil { screen().contains("embedded interactive") }, "\(screen())")
        terminal.keys("disable server app/beta", "Enter")
        #expect(TestBed.waitUntil { (cli(socket, "show stat") ?? "").contains("app,beta,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT") })
        terminal.keys("Escape", "1")
        #expect(TestBed.waitUntil { line("beta").contains("MAINT") }, "\(screen())")
        // Traffic goes to alpha only.
        for _ in 0..<4 { #expect(try TestBed.curl(["http://127.0.0.1:\(port)/"]).0 == 200) }
        #expect((cli(socket, "show stat") ?? "").contains("app,beta,0,0,0,0,,0,"))
    }
}
