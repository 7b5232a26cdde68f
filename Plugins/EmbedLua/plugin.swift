import Foundation
import PackagePlugin

/// Builds scripts-lua/**/*.lua into the BatonLua module at build time (EmbeddedLua.modules),
/// so the binary carries the modules as they are on disk: nothing generated is committed
/// (it was a 2,900-line file with a staleness check of its own).
@main
struct EmbedLua: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let root = context.package.directoryURL.appending(path: "scripts-lua")
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedLua.swift")
        let files = luaFiles(under: root)
        // Inputs: the directory (its structure: a module added or removed re-runs the tool)
        // and each file (an edit re-runs it). SwiftPM calls this function only when it plans
        // the build again (Package.swift changed), so the tool lists the files itself; after
        // deleting a module, `touch Package.swift` (the build says which input is missing).
        return [.buildCommand(displayName: "Embedding scripts-lua",
                              executable: try context.tool(named: "embed-lua").url,
                              arguments: [root.path, output.path],
                              inputFiles: [root] + files, outputFiles: [output])]
    }

    /// Every `.lua` file under `root`, sorted by path.
    func luaFiles(under root: URL) -> [URL] {
        guard let walk = FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil) else { return [] }
        var found: [URL] = []
        for case let url as URL in walk where url.pathExtension == "lua" { found.append(url) }
        return found.sorted { $0.path < $1.path }
    }
}
