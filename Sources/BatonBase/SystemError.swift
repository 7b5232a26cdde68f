import Glibc

/// An error from the operating system, with the operation and path it concerns.
public struct SystemError: Error, CustomStringConvertible {
    public let op: String
    public let path: String
    public let code: Int32

    public init(_ op: String, _ path: String, _ code: Int32 = errno) {
        self.op = op; self.path = path; self.code = code
    }

    public var isNoSpace: Bool { code == ENOSPC || code == EFBIG || code == EDQUOT }

    public var description: String {
        let why: String
        switch code {
        case ENOSPC: why = "no space left on device"
        case EFBIG: why = "file size limit exceeded (no space for the file to grow)"
        case EDQUOT: why = "disk quota exceeded"
        default: why = String(cString: strerror(code))
        }
        return "\(op) \(path): \(why)"
    }
}
