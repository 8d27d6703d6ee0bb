//! The README and everything under deploy/ stand alone: no path outside the repository, no
//! reference to drafting notes, and every repository path they name exists.

mod common;

use std::path::{Component, Path, PathBuf};

use common::repo;

/// README.md and every text file under deploy/.
fn documents() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = vec![repo().join("README.md")];
    walk(&repo().join("deploy"), &mut out);
    out
}

/// `path` joined to `base` and normalized without touching the file system.
fn normalize(base: &Path, path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in base.join(path).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// Words of a text that look like relative paths going up (`../x`, `../../y`).
fn upward_paths(text: &str) -> Vec<&str> {
    text.split(|c: char| c.is_whitespace() || "`'\"()[]{},;<>|".contains(c))
        .filter(|w| w.starts_with("../"))
        .collect()
}

fn problems_of(path: &Path, text: &str) -> Vec<String> {
    let root = repo();
    let rel = path
        .strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string();
    let mut problems = Vec::new();
    for banned in [
        "../shared",
        "/work/",
        "the brief",
        "not runnable here",
        "not run here",
        "Proposed as",
    ] {
        if text.contains(banned) {
            problems.push(format!("{rel}: mentions {banned:?}"));
        }
    }
    let dir = path.parent().unwrap();
    for up in upward_paths(text) {
        if !normalize(dir, up).starts_with(&root) {
            problems.push(format!("{rel}: {up} leaves the repository"));
        }
    }
    problems
}

#[test]
fn the_readme_and_deploy_name_no_path_outside_the_repository() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for path in documents() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // not text
        };
        checked += 1;
        problems.extend(problems_of(&path, &text));
    }
    assert!(checked > 50, "README and deploy/ read: {checked} files");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_check_catches_paths_outside_and_drafting_notes() {
    let file = repo().join("deploy/kustomize/base/kustomization.yaml");
    assert!(problems_of(&file, "resources:\n- ../crds\n- ../../helm\n").is_empty());
    let bad = problems_of(
        &file,
        "see ../../../../shared/spec/dns.md and `../../../../x`\n",
    );
    assert_eq!(bad.len(), 3, "{bad:?}");
    assert_eq!(problems_of(&file, "as the brief says").len(), 1);
}

#[test]
fn repository_paths_named_in_the_readme_exist() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mut missing = Vec::new();
    for word in readme.split(|c: char| c.is_whitespace() || "`'\"()[]{},;|".contains(c)) {
        let word = word.trim_end_matches(['.', ':']);
        let named = ["deploy/", "tests/", "src/", "bench/", "zones/", ".ci/"]
            .iter()
            .any(|p| word.starts_with(p));
        // `bench/out/` is generated (gitignored): a clean checkout has none of it, so a
        // concrete path there is missing for every reader even where a local run made it.
        let generated = word.starts_with("bench/out/");
        if named
            && !word.contains(['<', '*', '…'])
            && !word.contains("fedns-0.")
            && (generated || !repo().join(word).exists())
        {
            missing.push(word.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "README names missing paths: {missing:?}"
    );
}
