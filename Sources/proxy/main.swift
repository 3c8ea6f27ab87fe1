import ProxyProcess
import Glibc

exit(ProxyMain.run(Array(CommandLine.arguments.dropFirst())))
