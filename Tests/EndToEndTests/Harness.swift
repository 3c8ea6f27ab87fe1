import Foundation
import Testing

/// Runs the real `proxy` binary (and HAProxy, where installed) as child processes.
enum Harness {
    /// The package root, from this file's path.
    static let root: String = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)
        return parts.joined(separator: "/")
    }()

    /// The binary under test: $PROXY_BIN, or the debug build next to the tests.
    static let proxyBinary: String = {
        if let p = ProcessInfo.processInfo.environment["PROXY_BIN"], !p.isEmpty { return p }
        let bundle = Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("proxy").path
        if FileManager.default.isExecutableFile(atPath: bundle) { return bundle }
        return root + "/.build/debug/proxy"
    }()

    static func which(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        let dirs = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        for dir in dirs where access("\(dir)/\(name)", X_OK) == 0 {
            return "\(dir)/\(name)"
        }
        return nil
    }

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs `executable` with `arguments` in the package root, with extra environment.
    static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                    removing: [String] = [], directory: String? = nil) throws -> Output {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory ?? root)
        var env = ProcessInfo.processInfo.environment
        for k in removing { env[k] = nil }
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Output(status: process.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                      stderr: String(decoding: e, as: UTF8.self))
    }

    static func proxy(_ arguments: [String], environment: [String: String] = [:], removing: [String] = []) throws -> Output {
        try run(proxyBinary, arguments, environment: environment, removing: removing)
    }

    /// A fresh temporary directory.
    static func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "proxy-e2e-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func files(in directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: root + "/" + directory)) ?? [])
            .filter { $0.hasSuffix(".cfg") }.sorted().map { directory + "/" + $0 }
    }
}
