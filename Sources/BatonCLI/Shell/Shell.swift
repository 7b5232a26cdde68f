import BatonBase
import BatonCore
import BatonLua
import Glibc
import LuaShim

public enum Shell {
    public static func main(root: String) -> Int32 {
        if isatty(0) == 0 { return piped(root: root) }
        return Interactive(root: root).run()
    }

    /// stdin is not a terminal: the whole of it is one chunk, run like a recipe.
    static func piped(root: String) -> Int32 {
        let text = (try? FileIO.readFile("/dev/stdin")) ?? []
        let env = RecipeEnvironment(memoryLimit: RunOptions.defaultMemoryLimit, output: OutputOptions())
        env.setRequirePaths(recipeDir: FileIO.currentDirectory())
        env.setArguments(recipe: "<stdin>", words: [])
        env.makeContext = ShellRun.opener(root: root, env: env)
        baton_abort_on_signals(1)
        let ending = RecipeRunner.evaluate(env: env, recipe: "<stdin>", text: text, readError: nil)
        if let ctx = env.context {
            for p in ctx.finish(status: ending.status, exitCode: ending.code, reason: ending.reason) {
                diag("baton: \(p)")
            }
        }
        if ending.code != 0, let r = ending.reason { diag("baton: \(r)") }
        return ending.code
    }
}
