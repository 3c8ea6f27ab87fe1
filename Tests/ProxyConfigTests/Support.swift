import ProxyRules
@testable import ProxyConfig

/// Loads config text with a given environment.
func load(_ text: String, env: [(String, String)] = [], name: String = "t.cfg") -> LoadResult {
    ConfigLoader(environment: Environment(env)).load(text: text, name: name)
}

/// Loads text that must be valid, returning the model.
func model(_ text: String, env: [(String, String)] = []) throws -> Configuration {
    let r = load(text, env: env)
    guard let c = r.configuration else {
        throw LoadFailure(description: r.errors.map(\.description).joined(separator: "\n"))
    }
    return c
}

struct LoadFailure: Error, CustomStringConvertible { let description: String }

/// Error lines of a load, as printed.
func errors(_ text: String, env: [(String, String)] = []) -> [String] {
    load(text, env: env).errors.map(\.description)
}

/// The package root, found from this file's path.
let packageRoot: String = {
    var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)
    return parts.joined(separator: "/")
}()

/// Lexes one line into word texts.
func words(_ line: String, env: [(String, String)] = [], addresses: Bool = false) throws -> [String] {
    try LineLexer(environment: Environment(env), expandUnquoted: addresses, pseudo: [:]).split(Array(line.utf8)[...]).map(\.text)
}
