// swift-tools-version:6.0
// The bench behind Baton's choice of hash library (docs/performance.md, issue 25):
// swift-crypto's SHA-256 versus the system's OpenSSL libcrypto, same buffer, same files.
//   apt-get install libssl-dev   (the system's libcrypto; not needed to build or test Baton)
//   swift run -c release --package-path scripts/hashbench hashbench [MiB]
import PackageDescription

let package = Package(
    name: "hashbench",
    dependencies: [.package(url: "https://github.com/apple/swift-crypto", from: "4.5.2")],
    targets: [
        .systemLibrary(name: "COpenSSLBench", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .executableTarget(name: "hashbench", dependencies: [
            "COpenSSLBench", .product(name: "Crypto", package: "swift-crypto")]),
    ]
)
