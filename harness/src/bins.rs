//! Where the tests and the bench find the workspace's binaries.
//!
//! Cargo tells an integration test where its own package's binaries are
//! (`CARGO_BIN_EXE_<name>`), but `acsim` is in this package and wtpd's tests are in the
//! other one. Both binaries land in the same profile folder (`target/debug`,
//! `target/release`), next to the `deps/` folder holding the test executable, where cargo's
//! own test support finds them too. `cargo test --all-targets` (like any `cargo build` or
//! `cargo test` at the top: both packages are default members) builds them before the tests
//! run; a single test (`cargo test --test loopback`) builds only its own package's binaries,
//! so [`path`] refuses a binary that is missing or older than one of its sources (from the
//! dep-info file cargo writes next to it) instead of testing a stale one.

use std::path::PathBuf;

/// The profile folder of the running executable: `target/debug` for
/// `target/debug/deps/loopback-0123abcd`, `target/release` for a bench.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current executable");
    let dir = exe.parent().expect("executable's folder");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("profile folder").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The workspace binary `name` (`acsim`, `wtpd`) of the running test's profile. Panics,
/// naming the command that builds it, when it is missing or older than one of its sources.
pub fn path(name: &str) -> PathBuf {
    const BUILD: &str = "build the workspace's binaries first: `cargo build --bins` (add \
                         `--release` for a bench), or run `cargo test --all-targets`";
    let p = profile_dir().join(name);
    let built = match std::fs::metadata(&p).and_then(|m| m.modified()) {
        Ok(t) => t,
        Err(e) => panic!("{}: {e}: {BUILD}", p.display()),
    };
    // `acsim.d`: `/…/target/debug/acsim: /…/src/ac/mod.rs /…/harness/src/demo.rs …`
    let deps = std::fs::read_to_string(p.with_file_name(format!("{name}.d"))).unwrap_or_default();
    let sources = deps.split_once(": ").map_or("", |(_, s)| s);
    for src in sources.split_whitespace() {
        let newer = std::fs::metadata(src)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t > built);
        if newer {
            panic!("{} is older than {src}: {BUILD}", p.display());
        }
    }
    p
}

/// [`path`] of `acsim`, checked once per process: what `env!("CARGO_BIN_EXE_acsim")` was
/// while acsim was a binary of the wtpd package.
pub fn acsim() -> &'static str {
    static ACSIM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ACSIM.get_or_init(|| {
        let p = path("acsim");
        p.to_str().expect("UTF-8 target path").to_string()
    })
}
