//! The README's first command works on a fresh clone: it is read from README.md, run in a
//! `git clone` of the repository's HEAD (what a newcomer gets; uncommitted changes are not
//! in it) with the state directory (`XDG_STATE_HOME`) in a temporary directory, and must
//! print what it echoes and leave the embedded default store (the SQLite file) there.
//!
//! Two differences from a newcomer's run, to keep the test cheap: `--release` is dropped, so
//! the test build's artifacts are reused (cargo's choice of which binary `cargo run` runs
//! depends on the workspace's members, not on the profile), and the clone builds into this
//! test's own target directory (only the two path crates are compiled again; the registry
//! dependencies are reused when they were built with the same features, as `./scripts/test`
//! does first).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root (the CLI crate is one of its folders).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the CLI crate lives in the repository")
        .to_path_buf()
}

/// The first command of the README's first `sh` block.
fn first_command(readme: &str) -> String {
    let block = readme
        .split("```sh\n")
        .nth(1)
        .expect("README.md has a ```sh block");
    let block = block.split("```").next().unwrap_or_default();
    block
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .expect("the README's first sh block has a command")
        .to_owned()
}

#[test]
fn first_command_is_found() {
    let readme =
        "# x\n\n```sh\n# a comment\ncargo run -- exec k -- echo hi\n\n./scripts/test\n```\n";
    assert_eq!(first_command(readme), "cargo run -- exec k -- echo hi");
}

#[test]
fn the_readme_first_command_runs_on_a_fresh_clone() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("reading README.md");
    let command = first_command(&readme);
    assert!(
        command.starts_with("cargo run ") && command.contains("echo"),
        "the README's first command is no longer `cargo run … echo …`: {command}"
    );
    let echoed = command
        .rsplit_once("echo ")
        .map(|(_, text)| text.trim_matches('"').to_owned())
        .unwrap();
    let command = command.replacen(" --release", "", 1);

    // Always the same folder, so each run's build of the clone replaces the last one's.
    let clone = Path::new(env!("CARGO_TARGET_TMPDIR")).join("readme-clone");
    if clone.exists() {
        std::fs::remove_dir_all(&clone).expect("removing the last run's clone");
    }
    let out = Command::new("git")
        .args(["clone", "--quiet", "--no-hardlinks"])
        .arg(&root)
        .arg(&clone)
        .output()
        .expect("git must be installed to clone the repository");
    assert!(
        out.status.success(),
        "git clone {} failed: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );

    // target/debug/cadenas → target: the directory this test was built in.
    let target = Path::new(env!("CARGO_BIN_EXE_cadenas"))
        .parent()
        .and_then(Path::parent)
        .expect("the binary is in <target>/<profile>/");
    let state = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(&command)
        .current_dir(&clone)
        .env("CARGO_TARGET_DIR", target)
        .env("XDG_STATE_HOME", state.path())
        .env_remove("CADENAS_STORE")
        .env_remove("CADENAS_STORES")
        // Everything the build needs was fetched for this test's own build.
        .env("CARGO_NET_OFFLINE", "true")
        .output()
        .expect("running sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`{command}` in a fresh clone failed ({}):\n{stderr}",
        out.status
    );
    assert_eq!(
        stdout.trim(),
        echoed,
        "stdout of `{command}`; stderr:\n{stderr}"
    );
    let db = state.path().join("cadenas/locks.db");
    assert!(
        db.is_file(),
        "`{command}` did not use the embedded default store {}",
        db.display()
    );
}
