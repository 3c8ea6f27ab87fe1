import ProxyRules
import ProxySystem
import Glibc

/// Addresses as the runtime API prints them: dotted IPv4, or IPv6 text.
public enum AddressText {
    public static func ip(_ a: SocketAddress) -> String {
        if let v4 = a.ipv4 { return IPAddress(v4: v4).description }
        let b = a.addressBytes
        return b.count == 16 ? IPAddress(bytes16: b).description : a.description
    }
}
