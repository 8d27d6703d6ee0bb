//! External tools some tests drive (dig, kdig, unbound, named, promtool, kubectl kustomize, Helm's
//! Python package, the mmdb-writer Python package). A missing tool fails the test with the package to install; `bash .ci/test`
//! installs them all. With `FEDNS_SKIP_MISSING_TOOLS=1` the build (`.ci/build.rs`) marks the
//! tests of missing tools as ignored instead, so they are reported as skipped, never as passed.

use std::process::Command;

/// Whether `probe` (a shell command) succeeds.
pub fn usable(probe: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("{probe} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

/// Fails the test unless `probe` succeeds, naming what to install.
pub fn require(name: &str, probe: &str, install: &str) {
    if !usable(probe) {
        missing(name, install);
    }
}

/// Fails the test: `name` is not installed.
pub fn missing(name: &str, install: &str) -> ! {
    panic!(
        "{name} is not installed: {install} (`bash .ci/test` installs every tool the tests drive; \
         FEDNS_SKIP_MISSING_TOOLS=1 reports the tests that need a missing tool as ignored)"
    )
}
