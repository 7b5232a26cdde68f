// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "baton",
    products: [
        .executable(name: "baton", targets: ["baton"]),
        .executable(name: "baton-yaml", targets: ["baton-yaml"]),
    ],
    dependencies: [
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        // The command line. Needs only FoundationEssentials, not Foundation (cold start).
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // SHA-256 (recipe hash, declared inputs and outputs, the cache): BoringSSL's assembly,
        // linked statically. scripts/hashbench: as fast as the system's libcrypto, without the
        // ~1-2 ms that loading libcrypto.so adds to every start (docs/performance.md).
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
    ],
    targets: [
        // System libraries (Debian: liblua5.4-dev, libedit-dev).
        .systemLibrary(name: "CLua", pkgConfig: "lua5.4",
                       providers: [.apt(["liblua5.4-dev"])]),
        .systemLibrary(name: "CEditLine", pkgConfig: "libedit",
                       providers: [.apt(["libedit-dev"])]),
        // POSIX mechanics Swift cannot express safely: fork/exec of a stage into
        // its own process group, async-signal-safe signal flags.
        .target(name: "CBatonSys"),
        // Lua's macros, the error trampoline, the interrupt hook, the bounded allocator.
        .target(name: "LuaShim", dependencies: ["CLua", "CBatonSys"]),
        // The leaf everything uses: JSON, clocks, file I/O, exit statuses, spawning, the console.
        .target(name: "BatonBase", dependencies: ["CBatonSys", .product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "LuaKit", dependencies: ["LuaShim", "CLua", "BatonBase"]),
        .target(name: "BatonCore", dependencies: ["BatonBase", "CBatonSys"]),
        // scripts-lua/ built into the binary at build time (Plugins/EmbedLua runs embed-lua).
        .executableTarget(name: "embed-lua"),
        .plugin(name: "EmbedLua", capability: .buildTool(), dependencies: ["embed-lua"]),
        .target(name: "BatonLua", dependencies: ["LuaKit", "BatonCore", "BatonBase"], plugins: ["EmbedLua"]),
        // YAML -> JSON in a helper process: Yams needs Foundation, which would cost the
        // runner ~8 ms of start-up on every run; baton.yaml.decode spawns this instead.
        .executableTarget(name: "baton-yaml", dependencies: ["Yams", "BatonBase"]),
        // libedit setters and the completion glue Swift 6 cannot express (C globals).
        .target(name: "CBatonLine", dependencies: ["CEditLine"]),
        // The command line: one file per command (Commands/), the REPL (Shell/), the report (Report/).
        .target(name: "BatonCLI",
                dependencies: ["BatonLua", "LuaKit", "BatonCore", "BatonBase", "CEditLine", "CBatonLine", "CBatonSys",
                               .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(name: "baton", dependencies: ["BatonCLI"]),
        .testTarget(name: "BatonCoreTests", dependencies: ["BatonCore", "BatonBase"]),
        .testTarget(name: "LuaKitTests", dependencies: ["LuaKit", "BatonBase", "BatonCore"]),
        .testTarget(name: "BatonLuaTests", dependencies: ["BatonLua", "LuaKit", "BatonCore", "baton-yaml"]),
        .testTarget(name: "EndToEndTests", dependencies: ["baton", "baton-yaml", "BatonCore", "BatonBase"]),
        .testTarget(name: "ShellTests", dependencies: ["BatonCLI", "BatonLua", "LuaKit", "BatonCore", "BatonBase"]),
    ],
    swiftLanguageModes: [.v6]
)
