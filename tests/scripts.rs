//! The commands README gives a new user: what it names, and how `scripts/demo`,
//! `scripts/test-all` and `.ci/run` behave on a machine that lacks something. The scripts run
//! for real against stub programs (cargo, apt-get, dpkg-query, rustup, id...) put first on
//! PATH, which record how they were called: the behaviour is checked in seconds, without a
//! build or an installation.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A folder of stub programs; each appends `name args` to `calls.log` and then does what its
/// body says.
struct Stubs {
    dir: PathBuf,
}

impl Stubs {
    fn new(name: &str) -> Stubs {
        let dir = std::env::temp_dir().join(format!("wtpd-stubs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Stubs { dir }
    }

    fn add(&self, name: &str, body: &str) -> &Self {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.join(name);
        std::fs::write(
            &p,
            format!(
                "#!/bin/bash\necho \"{name} $*\" >> \"{}\"\n{body}\n",
                self.dir.join("calls.log").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    /// Runs a script of the repository with the stubs first on PATH and `env` set.
    fn run(&self, script: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let path = format!(
            "{}:{}",
            self.dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new(repo().join(script))
            .args(args)
            .env("PATH", path)
            // Their temporary files (.ci/run keeps its install log) go with the stubs.
            .env("TMPDIR", &self.dir)
            .envs(env.iter().copied())
            .output()
            .unwrap_or_else(|e| panic!("run {script}: {e}"))
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Stubs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A cargo that fails the subcommand named in $STUB_FAIL and reports 3 passing tests for
/// every `cargo test`. Its cargo-fuzz lists two targets and fails the run of the one named in
/// $STUB_FUZZ_FAIL; with $STUB_NO_FUZZ set, cargo-fuzz is missing until `cargo install`.
const CARGO: &str = r#"[ "$1" = "${STUB_FAIL:-}" ] && exit 1
[ "$1" = test ] && echo "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s"
[ "$1 $2" = "install cargo-fuzz" ] && touch "$(dirname "$0")/fuzz-installed"
if [ "$1 $2" = "+nightly fuzz" ]; then
    case "$3" in
        --version) [ -z "${STUB_NO_FUZZ:-}" ] || [ -e "$(dirname "$0")/fuzz-installed" ] || exit 101 ;;
        list) printf 'bundle\npacket\n' ;;
        run) [ "$4" = "${STUB_FUZZ_FAIL:-}" ] && exit 1 ;;
    esac
fi
exit 0"#;

/// A dpkg-query that says every package is installed except those in $STUB_MISSING.
const DPKG_QUERY: &str = r#"for p in ${STUB_MISSING:-}; do [ "${@: -1}" = "$p" ] && exit 1; done
echo "install ok installed""#;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn last_line(o: &Output) -> String {
    text(&o.stdout).lines().last().unwrap_or("").to_string()
}

#[test]
fn readme_says_what_the_project_is_then_gives_two_commands() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let top = readme.split("\n## ").next().unwrap();
    let commands: Vec<&str> = top
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .map(str::trim)
        .collect();
    assert_eq!(commands, ["scripts/demo", ".ci/run"], "{top}");
    let first = top.lines().skip(1).find(|l| !l.trim().is_empty()).unwrap();
    assert!(first.contains("CAPWAP"), "README opens with: {first}");
}

#[test]
fn test_all_checks_fmt_and_clippy_first_and_always_ends_with_its_summary() {
    let stubs = Stubs::new("test-all");
    stubs.add("cargo", CARGO);

    let ok = stubs.run("scripts/test-all", &["--host", "--no-fuzz"], &[]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert_eq!(
        stubs.calls(),
        [
            "cargo fmt --all --check",
            "cargo clippy --workspace --all-targets -- -D warnings",
            "cargo test --all-targets",
        ]
    );
    // fmt and clippy count as a check each.
    assert_eq!(last_line(&ok), "summary: 5 passed, 0 failed");

    // Then a short run of each fuzz target, one check each, with its committed seeds.
    let _ = std::fs::remove_file(stubs.dir.join("calls.log"));
    let ok = stubs.run("scripts/test-all", &["--host"], &[]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let calls = stubs.calls();
    let runs: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("cargo +nightly fuzz run "))
        .collect();
    assert_eq!(runs.len(), 2, "{calls:?}");
    for (run, t) in runs.iter().zip(["bundle", "packet"]) {
        assert!(
            run.starts_with(&format!("cargo +nightly fuzz run {t} ")),
            "{run}"
        );
        assert!(
            run.contains(&format!(" fuzz/corpus-seeds/{t} -- ")),
            "{run}"
        );
        assert!(run.ends_with(" -max_total_time=3"), "{run}");
    }
    assert_eq!(last_line(&ok), "summary: 7 passed, 0 failed");

    // A target that crashes (or does not build) fails the suite.
    let out = stubs.run(
        "scripts/test-all",
        &["--host"],
        &[("STUB_FUZZ_FAIL", "packet")],
    );
    assert!(
        !out.status.success(),
        "a fuzz target failed but test-all passed"
    );
    assert_eq!(last_line(&out), "summary: 6 passed, 1 failed");
    assert!(text(&out.stderr).contains("fuzz target packet failed"));

    for (fail, summary, calls) in [
        ("fmt", "summary: 0 passed, 1 failed", 1),
        ("clippy", "summary: 1 passed, 1 failed", 2),
    ] {
        let _ = std::fs::remove_file(stubs.dir.join("calls.log"));
        let out = stubs.run("scripts/test-all", &["--host"], &[("STUB_FAIL", fail)]);
        assert!(!out.status.success(), "{fail} failed but test-all passed");
        assert_eq!(last_line(&out), summary, "{}", text(&out.stdout));
        assert_eq!(stubs.calls().len(), calls, "{:?}", stubs.calls());
    }
}

#[test]
fn demo_names_the_missing_packages_or_installs_them_as_root() {
    // Not root: the exact apt-get command, and no build.
    let stubs = Stubs::new("demo-user");
    stubs
        .add("dpkg-query", DPKG_QUERY)
        .add("id", "echo 1000")
        .add("apt-get", "exit 0")
        .add("cargo", "exit 0");
    let out = stubs.run(
        "scripts/demo",
        &[],
        &[("STUB_MISSING", "pkg-config libssl-dev")],
    );
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("apt-get install -y pkg-config libssl-dev\n"),
        "{err}"
    );
    assert!(
        !stubs
            .calls()
            .iter()
            .any(|c| c.starts_with("apt-get") || c.starts_with("cargo")),
        "{:?}",
        stubs.calls()
    );

    // Root: installs them, then builds (the stub cargo stops it there).
    let stubs = Stubs::new("demo-root");
    stubs
        .add("dpkg-query", DPKG_QUERY)
        .add("id", "echo 0")
        .add("apt-get", "exit 0")
        .add("cargo", "exit 3");
    let out = stubs.run("scripts/demo", &[], &[("STUB_MISSING", "gcc libssl-dev")]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let calls = stubs.calls();
    let install = calls
        .iter()
        .find(|c| c.starts_with("apt-get") && c.contains(" install "))
        .unwrap_or_else(|| panic!("no apt-get install: {calls:?}"));
    assert!(install.ends_with(" gcc libssl-dev"), "{install}");
    assert_eq!(
        calls.last().unwrap(),
        "cargo build --release --bins --quiet"
    );
}

#[test]
fn ci_run_adds_clippy_and_rustfmt_and_the_host_compiler_then_runs_test_all() {
    let stubs = Stubs::new("ci");
    stubs
        .add("dpkg-query", DPKG_QUERY)
        .add("dpkg", "echo amd64")
        .add(
            "rustup",
            r#"case "$1 $2" in
"target list") echo armv7-unknown-linux-gnueabihf ;;
"component list") echo cargo-x86_64-unknown-linux-gnu ;;
"toolchain list") [ -n "${STUB_NO_NIGHTLY:-}" ] || echo nightly-x86_64-unknown-linux-gnu ;;
esac
exit 0"#,
        )
        .add("rustc", "echo rustc 1.0")
        .add("qemu-arm", "echo qemu-arm 8")
        .add("tshark", "echo TShark 4")
        .add("arm-linux-gnueabihf-gcc", "exit 0")
        .add("cargo", CARGO)
        // Nothing is missing, so nothing may be installed for real.
        .add("apt-get", "exit 1")
        .add("sudo", "exit 1");
    let out = stubs.run(".ci/run", &[], &[]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let calls = stubs.calls();
    assert!(
        calls
            .iter()
            .any(|c| c == "rustup component add clippy rustfmt"),
        "{calls:?}"
    );
    for p in ["gcc", "libc6-dev", "pkg-config"] {
        assert!(
            calls
                .iter()
                .any(|c| c.starts_with("dpkg-query") && c.ends_with(&format!(" {p}"))),
            "{p} not checked: {calls:?}"
        );
    }
    // .ci/run only asks whether cargo-fuzz is there; test-all then starts with fmt.
    let cargo: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("cargo ") && *c != "cargo +nightly fuzz --version")
        .collect();
    assert_eq!(cargo[0], "cargo fmt --all --check", "{cargo:?}");
    assert!(
        last_line(&out).starts_with("summary: ") && last_line(&out).ends_with(" 0 failed"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn ci_run_installs_cargo_fuzz_and_stops_clearly_without_nightly() {
    let stubs = Stubs::new("ci-fuzz");
    stubs
        .add("dpkg-query", DPKG_QUERY)
        .add("dpkg", "echo amd64")
        .add(
            "rustup",
            r#"case "$1 $2" in
"target list") echo armv7-unknown-linux-gnueabihf ;;
"component list") printf 'clippy-x\nrustfmt-x\n' ;;
"toolchain list") [ -n "${STUB_NO_NIGHTLY:-}" ] || echo nightly-x86_64-unknown-linux-gnu ;;
esac
exit 0"#,
        )
        .add("rustc", "echo rustc 1.0")
        .add("qemu-arm", "echo qemu-arm 8")
        .add("tshark", "echo TShark 4")
        .add("arm-linux-gnueabihf-gcc", "exit 0")
        .add("cargo", CARGO)
        .add("apt-get", "exit 1")
        .add("sudo", "exit 1");

    let out = stubs.run(".ci/run", &[], &[("STUB_NO_FUZZ", "1")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let calls = stubs.calls();
    assert!(
        calls
            .iter()
            .any(|c| c == "cargo install cargo-fuzz --locked"),
        "{calls:?}"
    );
    assert!(calls
        .iter()
        .any(|c| c.starts_with("cargo +nightly fuzz run ")));

    let _ = std::fs::remove_file(stubs.dir.join("calls.log"));
    let out = stubs.run(".ci/run", &[], &[("STUB_NO_NIGHTLY", "1")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("the nightly toolchain is missing"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !stubs.calls().iter().any(|c| c.starts_with("cargo ")),
        "nothing is built or run: {:?}",
        stubs.calls()
    );
}
