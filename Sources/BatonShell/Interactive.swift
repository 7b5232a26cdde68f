import BatonCore
import BatonLua
import CEditLine
import Glibc
import LuaShim

/// The interactive shell (filled in by the shell issue).
final class Interactive {
    let root: String
    init(root: String) { self.root = root }
    func run() -> Int32 { 0 }
}
