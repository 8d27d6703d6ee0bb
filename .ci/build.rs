//! Build script (Cargo.toml `build = ".ci/build.rs"`): only for the test suite. With
//! `FEDNS_SKIP_MISSING_TOOLS=1` it looks for the external tools some tests drive and sets
//! `fedns_missing_<tool>` for each one that is missing, so those tests are marked ignored (reported
//! as skipped in the summary, never as passed). Without it, it does nothing and such a test fails
//! with the Debian or PyPI package to install (`bash .ci/test` installs them all).

use std::process::Command;

/// cfg name, and a shell command that succeeds when the tool is usable.
const TOOLS: [(&str, &str); 10] = [
    ("fedns_missing_dig", "command -v dig"),
    ("fedns_missing_kdig", "command -v kdig"),
    (
        "fedns_missing_unbound",
        "command -v unbound || test -x /usr/sbin/unbound",
    ),
    (
        "fedns_missing_named",
        "command -v named || test -x /usr/sbin/named",
    ),
    ("fedns_missing_promtool", "command -v promtool"),
    (
        "fedns_missing_nsd",
        "command -v nsd || test -x /usr/sbin/nsd",
    ),
    (
        "fedns_missing_knotd",
        "command -v knotd || test -x /usr/sbin/knotd",
    ),
    ("fedns_missing_kustomize", "kubectl kustomize --help"),
    ("fedns_missing_helm", "python3 -c 'import helm_python'"),
    (
        "fedns_missing_mmdb_writer",
        "python3 -c 'import mmdb_writer'",
    ),
];

fn main() {
    println!("cargo::rerun-if-changed=.ci/build.rs");
    println!("cargo::rerun-if-env-changed=FEDNS_SKIP_MISSING_TOOLS");
    for (cfg, _) in TOOLS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    if std::env::var("FEDNS_SKIP_MISSING_TOOLS").as_deref() != Ok("1") {
        return;
    }
    println!("cargo::rerun-if-env-changed=PATH");
    for (cfg, probe) in TOOLS {
        let usable = Command::new("sh")
            .args(["-c", &format!("{probe} >/dev/null 2>&1")])
            .status()
            .is_ok_and(|s| s.success());
        if !usable {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
