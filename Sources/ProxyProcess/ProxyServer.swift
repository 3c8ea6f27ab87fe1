import ProxyConfig
import ProxySystem

/// Serving: the event loops arrive with the engine issue.
enum ProxyServer {
    static func serve(_ configuration: Configuration, options: CommandLineOptions) -> Int32 {
        ProxyMain.printError("proxy: the configuration is valid, but serving traffic is not implemented in this build yet; use -c to check a configuration\n")
        return 1
    }
}
