/// The product's version and release date, as the runtime API, the stats page and the
/// metrics print them.
public enum ProductVersion {
    public static let version = "0.1.0"
    /// What `show info` says in `Release_date` and the stats page after "released".
    public static let releaseDate = "2026/11/30"
    /// The version HAProxy's tools read: the HAProxy release whose formats we speak, then ours.
    public static let compatible = "2.6.12-proxy-\(version)"
}
