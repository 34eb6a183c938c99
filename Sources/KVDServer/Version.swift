/// The build's version, reported by `kvd --version`, Hello and every response header.
public enum KVDVersion {
    public static let string = "0.1.0"
}
