//! acsim's command line as an operator meets it. Also the reason cargo builds the `acsim`
//! binary in `cargo test`: a package's binaries are built for its integration tests, and
//! wtpd's integration tests find acsim next to their own executables (`wtpd_harness::bins`).

use std::process::Command;

fn acsim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_acsim"))
}

#[test]
fn help_names_every_command_the_readme_documents() {
    let out = acsim().arg("--help").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "acsim run --config",
        "acsim status --config",
        "acsim predownload --config",
        "acsim activate --config",
        "acsim demo",
        "acsim image folder",
    ] {
        assert!(text.contains(cmd), "--help lacks {cmd:?}:\n{text}");
    }
}

#[test]
fn an_unknown_command_is_refused_with_a_usage_error() {
    let out = acsim().arg("frobnicate").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("frobnicate"), "{err}");
}
