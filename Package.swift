// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "baton",
    products: [
        .executable(name: "baton", targets: ["baton"]),
    ],
    dependencies: [
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
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
        .target(name: "LuaKit", dependencies: ["LuaShim", "CLua", "BatonCore"]),
        .target(name: "BatonCore", dependencies: ["CBatonSys"]),
        .target(name: "BatonLua",
                dependencies: ["LuaKit", "BatonCore", "Yams"],
                resources: []),
        // libedit setters and the completion glue Swift 6 cannot express (C globals).
        .target(name: "CBatonLine", dependencies: ["CEditLine"]),
        .target(name: "BatonShell",
                dependencies: ["BatonLua", "LuaKit", "BatonCore", "CEditLine", "CBatonLine"]),
        .executableTarget(name: "baton",
                          dependencies: ["BatonShell", "BatonLua", "BatonCore"]),
        .testTarget(name: "BatonCoreTests", dependencies: ["BatonCore"]),
        .testTarget(name: "LuaKitTests", dependencies: ["LuaKit", "BatonCore"]),
        .testTarget(name: "BatonLuaTests", dependencies: ["BatonLua", "LuaKit", "BatonCore"]),
        .testTarget(name: "EndToEndTests", dependencies: ["baton", "BatonCore"]),
        .testTarget(name: "ShellTests", dependencies: ["BatonShell", "BatonLua", "LuaKit", "BatonCore"]),
    ],
    swiftLanguageModes: [.v6]
)
