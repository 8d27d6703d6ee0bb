//! The container image, built and run: `deploy/image/build` writes an OCI image archive; this test
//! checks it with skopeo (the standard tool reads it), unpacks it by hand (index → manifest →
//! config and layers), and runs the image's own binary from the unpacked root filesystem the way
//! a container runtime would: as the image's user, with its entrypoint, working directory and
//! environment. It serves the demo the image carries and answers `dig` on loopback.
//!
//! Cost: building the image compiles a static release binary (several minutes on a cold cache).
//! `.ci/run` builds the image once before `cargo test` and passes it in `FEDNS_IMAGE_ARCHIVE`;
//! without it this test runs the build itself, in a target directory of its own
//! (`target/image/cargo`) so it never waits on the lock of the `cargo test` that runs it.
//!
//! Needs (Debian packages): umoci (the build), skopeo, bind9-dnsutils (dig). Runs as root (it
//! switches to the image's user, 65532, like a runtime).

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::repo;

/// Kills the image's fedns when the test fails before stopping it (it would outlive the test).
struct KillOnPanic(u32);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
}

/// Fails naming the Debian package when a tool is missing (never skips).
fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is required by tests/image.rs: apt-get install {package} (.ci/run installs it)"
    );
}

/// The image archive: `FEDNS_IMAGE_ARCHIVE`, else built now by `deploy/image/build`.
fn archive() -> PathBuf {
    if let Some(path) = std::env::var_os("FEDNS_IMAGE_ARCHIVE") {
        return PathBuf::from(path);
    }
    require("umoci", "umoci");
    let out = Command::new(repo().join("deploy/image/build"))
        .env("CARGO_TARGET_DIR", repo().join("target/image/cargo"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run deploy/image/build");
    assert!(out.status.success(), "deploy/image/build failed");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout
        .lines()
        .last()
        .expect("the build prints the archive path");
    assert_eq!(
        last,
        format!("target/image/fedns-{}.oci.tar", env!("CARGO_PKG_VERSION")),
        "the last line is the archive's path"
    );
    repo().join(last)
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(algorithm).join(hex)
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_image_runs_as_its_user_with_its_entrypoint_and_answers_dig() {
    require("skopeo", "skopeo");
    require("dig", "bind9-dnsutils");
    let archive = archive();
    let version = env!("CARGO_PKG_VERSION");
    let reference = format!("ghcr.io/fedns/fedns:{version}");

    // A standard tool reads the archive, finds it by name, and sees the contract.
    let inspected: Value = serde_json::from_str(&run(Command::new("skopeo").args([
        "inspect",
        "--config",
        &format!("oci-archive:{}:{reference}", archive.display()),
    ])))
    .unwrap();
    let config = &inspected["config"];
    assert_eq!(config["User"], "65532:65532");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/fedns"])
    );
    assert_eq!(
        config["Labels"]["org.opencontainers.image.version"], version,
        "the image label carries Cargo.toml's version"
    );
    assert_eq!(
        config["Labels"]["org.opencontainers.image.source"],
        "https://github.com/fedns/fedns"
    );

    // Unpack by hand, as a runtime does: index → manifest → config and layers.
    let work = repo().join(format!("target/image/test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let layout = work.join("layout");
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(&layout).unwrap();
    std::fs::create_dir_all(&rootfs).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout));
    let index = json(&layout.join("index.json"));
    let manifest_desc = &index["manifests"][0];
    assert_eq!(
        manifest_desc["annotations"]["io.containerd.image.name"], reference,
        "containerd (ctr import, kind load image-archive) names it like the manifests do"
    );
    let manifest = json(&blob(&layout, manifest_desc["digest"].as_str().unwrap()));
    let image_config = json(&blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    for layer in manifest["layers"].as_array().unwrap() {
        run(Command::new("tar")
            .arg("-xzf")
            .arg(blob(&layout, layer["digest"].as_str().unwrap()))
            .arg("-C")
            .arg(&rootfs));
    }
    let c = &image_config["config"];
    assert!(
        !rootfs.join("bin/sh").exists() && !rootfs.join("usr/bin").exists(),
        "no shell, no userland in the image"
    );
    let (uid, gid) = c["User"].as_str().unwrap().split_once(':').unwrap();
    let (uid, gid): (u32, u32) = (uid.parse().unwrap(), gid.parse().unwrap());
    assert_eq!(uid, 65532);
    let entrypoint: Vec<String> = serde_json::from_value(c["Entrypoint"].clone()).unwrap();
    let workdir = c["WorkingDir"].as_str().unwrap().trim_start_matches('/');
    let env: Vec<String> = serde_json::from_value(c["Env"].clone()).unwrap();
    let binary = rootfs.join(entrypoint[0].trim_start_matches('/'));
    require("file", "file");
    let linkage = run(Command::new("file").arg("-b").arg(&binary));
    assert!(
        linkage.contains("statically linked") || linkage.contains("static-pie linked"),
        "no dynamic loader, no libc in the image: {linkage}"
    );

    // What a user types: `podman run IMAGE serve --source deploy/demo --zones zones`, plus
    // loopback listeners on free ports and JSON logs to find them.
    let mut cmd = Command::new(&binary);
    cmd.args(&entrypoint[1..])
        .args(["serve", "--source", "deploy/demo", "--zones", "zones"])
        .args([
            "--dns-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--udp-workers", "1", "--log-format", "json"])
        .current_dir(rootfs.join(workdir))
        .env_clear()
        .envs(env.iter().filter_map(|kv| kv.split_once('=')))
        .uid(uid)
        .gid(gid)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let _reaper = KillOnPanic(child.id());
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = Instant::now();
    let startup = loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no start-up line"
        );
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            panic!("the image's fedns exited: {:?}", child.wait());
        };
        if line.contains("fedns serving") {
            break serde_json::from_str::<Value>(&line).unwrap();
        }
    };
    assert_eq!(startup["version"], version, "{startup}");
    let dns = startup["dns"].as_str().unwrap().to_owned();
    let (host, port) = dns.rsplit_once(':').unwrap();
    let answer = run(Command::new("dig").args([
        &format!("@{host}"),
        "-p",
        port,
        "+noall",
        "+answer",
        "+tries=1",
        "+time=3",
        "nginx.test.galactic.svc.us1.us.example.com",
        "A",
    ]));
    let proc_status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&work);
    assert!(
        answer
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .contains("IN A 10.1.0.10"),
        "the demo answers from the image: {answer}"
    );
    let uids = proc_status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(uids[0], "65532", "runs as the image's user: {proc_status}");
}
