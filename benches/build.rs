//! Records, at build time, the compiler version and the commit (and whether `src/` had
//! uncommitted changes) the crate under test was built from: `BENCHMARKS.md` names both.

use std::process::Command;

fn out(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = out(&rustc, &["-V"]);
    println!(
        "cargo:rustc-env=BENCH_RUSTC_VERSION={}",
        if version.is_empty() {
            "unknown"
        } else {
            &version
        }
    );
    let head = out("git", &["-C", "..", "log", "-1", "--format=%h %s"]);
    let dirty = out("git", &["-C", "..", "status", "--porcelain", "--", "src"]);
    let n = dirty.lines().filter(|l| !l.trim().is_empty()).count();
    let source = match (head.is_empty(), n) {
        (true, _) => "unknown (no git)".to_string(),
        (false, 0) => format!("commit {head}"),
        (false, n) => format!("commit {head}, plus uncommitted changes to {n} file(s) under src/"),
    };
    println!("cargo:rustc-env=BENCH_SOURCE={}", source.replace('\n', " "));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../src");
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/refs/heads");
}
