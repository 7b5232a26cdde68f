import BatonBase
import BatonCore
import BatonLua

/// The shell's own run (recipe `<shell>`), opened the first time a primitive is used.
enum ShellRun {
    static func opener(root: String, env: RecipeEnvironment) -> () throws -> RunContext {
        return { [unowned env] in
            let ctx = try RunContext.start(store: RunStore(root: root), id: nil, recipe: RunBegan.shellRecipe,
                                           recipeText: [], args: [], dryRun: false)
            env.context = ctx
            env.publishRun()
            return ctx
        }
    }
}
