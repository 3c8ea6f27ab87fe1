import Testing
@testable import ProxyProcess

@Suite struct CommandLineParsing {
    func parse(_ s: String) throws -> CommandLineOptions {
        try CommandLineOptions.parse(s.split(separator: " ").map(String.init))
    }

    @Test func filesAndFlags() throws {
        let o = try parse("-f a.cfg -f dir -c -q -D -p /run/p.pid -x /run/s.sock")
        #expect(o.configPaths == ["a.cfg", "dir"] && o.checkOnly && o.quiet && o.daemon)
        #expect(o.pidFile == "/run/p.pid" && o.socketTransfer == "/run/s.sock")
        #expect(try parse("-f a -- b c -d").configPaths == ["a", "b", "c", "-d"])
        #expect(try parse("-q -V").quiet == false)
    }

    @Test func pidListsRunToTheNextOption() throws {
        let o = try parse("-f x -sf 10 20 30 -D")
        #expect(o.softStopPIDs == [10, 20, 30] && o.daemon)
        #expect(try parse("-st 5 -sf 6").terminatePIDs == [5])
        #expect(try parse("-f x -sf").softStopPIDs.isEmpty)
        #expect(try parse("-sf -f x").configPaths == ["x"])
        #expect(try CommandLineOptions.parse(["-sf", "42 "]).softStopPIDs == [42])
    }

    @Test func badPidLists() {
        #expect(throws: CommandLineOptions.UsageError(message: "-sf option: some bytes unconsumed in PID list {456}")) {
            try CommandLineOptions.parse(["-sf", "123 456"])
        }
        #expect(throws: CommandLineOptions.UsageError(message: "-st option: pid 0 is invalid; pids are positive")) {
            try CommandLineOptions.parse(["-st", "0"])
        }
        #expect(throws: CommandLineOptions.UsageError(message: "-sf option: 'abc' is not a pid")) {
            try CommandLineOptions.parse(["-sf", "abc"])
        }
        #expect(throws: CommandLineOptions.UsageError.self) { try CommandLineOptions.parse(["-f"]) }
        #expect(throws: CommandLineOptions.UsageError(message: "unknown option '-Z'")) { try CommandLineOptions.parse(["-Z"]) }
    }
}
