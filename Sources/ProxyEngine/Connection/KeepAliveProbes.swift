import Glibc
import ProxyConfig
import ProxySystem

extension KeepAliveProbes {
    /// Sets the probes that are configured on a TCP socket with keep-alive on; the others
    /// stay the system's. The loader checked each against the kernel's limits.
    func apply(to fd: FileDescriptor) {
        let tcp = Int32(IPPROTO_TCP)
        if let n = count { try? Socket.setOption(fd, level: tcp, name: TCP_KEEPCNT, value: Int32(n)) }
        if let s = idle { try? Socket.setOption(fd, level: tcp, name: TCP_KEEPIDLE, value: Int32(s)) }
        if let s = interval { try? Socket.setOption(fd, level: tcp, name: TCP_KEEPINTVL, value: Int32(s)) }
    }
}
