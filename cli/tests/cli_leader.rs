//! `cadenas leader`: who leads an election, and `--watch`, against a SQLite file shared with
//! `cadenas exec` candidates in other processes (the singleton supervisor of the README).
#![cfg(feature = "sqlite")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command as StdCommand, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cadenas_test_support::process::wait_exit;

use assert_cmd::Command;
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(30);

struct Env {
    _dir: tempfile::TempDir,
    store: String,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("sqlite://{}", dir.path().join("locks.db").display());
        Env { _dir: dir, store }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("cadenas").unwrap();
        c.env("CADENAS_STORE", &self.store)
            .env_remove("CADENAS_STORES")
            .timeout(PATIENCE);
        c
    }

    /// Starts `cadenas` with `args`; its stdout lines arrive on the channel.
    fn spawn(&self, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
        let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("cadenas"))
            .args(args)
            .env("CADENAS_STORE", &self.store)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        (child, rx)
    }

    /// A singleton supervisor: `cadenas exec NAME` as `owner`, its command printing the term
    /// (`CADENAS_FENCE`) and then running until stopped. Its first line is the term, once it
    /// leads.
    fn spawn_supervisor(
        &self,
        name: &str,
        owner: &str,
        extra: &[&str],
    ) -> (Child, mpsc::Receiver<String>) {
        let mut args = vec!["exec", "--ttl", "2s", "--owner", owner];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            name,
            "--",
            "sh",
            "-c",
            "echo \"$CADENAS_FENCE\"; exec sleep 60",
        ]);
        self.spawn(&args)
    }

    /// A supervisor that leads: the child and its term.
    fn supervisor(&self, name: &str, owner: &str, extra: &[&str]) -> (Child, u64) {
        let (child, lines) = self.spawn_supervisor(name, owner, extra);
        (child, term(&lines))
    }
}

fn term(lines: &mpsc::Receiver<String>) -> u64 {
    let line = next_line(lines, "the supervisor's term");
    line.parse().expect("CADENAS_FENCE is a number")
}

fn next_line(lines: &mpsc::Receiver<String>, what: &str) -> String {
    lines
        .recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("no line within {PATIENCE:?}: expected {what}"))
}

fn next_json(lines: &mpsc::Receiver<String>, what: &str) -> Value {
    let line = next_line(lines, what);
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {line}"))
}

fn terminate(child: &Child) {
    let ok = StdCommand::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM {}", child.id());
}

#[test]
fn leader_shows_the_supervisor_that_leads_with_its_term() {
    let env = Env::new();
    let out = env.cmd().args(["leader", "sched"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "no leader: exit 1");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no leader");
    let out = env
        .cmd()
        .args(["leader", "--json", "sched"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({ "name": "sched", "leader": false }));

    let (supervisor, term) = env.supervisor("sched", "host-a", &["--metadata", "10.0.0.1:80"]);
    let out = env
        .cmd()
        .args(["leader", "--json", "sched"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "someone leads: exit 0");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["leader"], true);
    assert_eq!(v["candidate"], "host-a");
    assert_eq!(v["term"], term, "the term is exec's CADENAS_FENCE");
    assert_eq!(v["value"], "10.0.0.1:80");
    let left = v["remaining_ms"].as_u64().expect("a lease");
    assert!(left <= 2_000, "{left}");
    let out = env.cmd().args(["leader", "sched"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("leader host-a, term {term}, lease ends in "))
            && text.trim_end().ends_with(", value 10.0.0.1:80"),
        "{text}"
    );
    terminate(&supervisor);
    let out = wait_exit(supervisor, PATIENCE);
    assert_eq!(
        out.status.code(),
        Some(143),
        "exec passes on the command's SIGTERM"
    );
}

#[test]
fn leader_watch_prints_each_change_until_interrupted() {
    let env = Env::new();
    let args = [
        "leader",
        "--watch",
        "--json",
        "--poll-interval",
        "50ms",
        "sched",
    ];
    let (watch, lines) = env.spawn(&args);
    let v = next_json(&lines, "the vacancy at the start");
    assert_eq!(v["change"], "vacant", "{v}");
    assert_eq!(v["leader"], false, "{v}");

    let (first, t1) = env.supervisor("sched", "host-a", &[]);
    let v = next_json(&lines, "host-a elected");
    assert_eq!(
        (v["change"].clone(), v["candidate"].clone()),
        ("elected".into(), "host-a".into()),
        "{v}"
    );
    assert_eq!(v["term"], t1, "{v}");

    // The next supervisor waits; when the first stops, it leads with a higher term.
    let (second, lines_b) = env.spawn_supervisor("sched", "host-b", &["--metadata", "10.0.0.2:80"]);
    terminate(&first);
    wait_exit(first, PATIENCE);
    let t2 = term(&lines_b);
    assert!(t2 > t1, "term {t2} after {t1}");
    let mut v = next_json(&lines, "host-b elected");
    if v["change"] == "vacant" {
        v = next_json(&lines, "host-b elected");
    }
    assert_eq!(v["change"], "elected", "{v}");
    assert_eq!(v["candidate"], "host-b", "{v}");
    assert_eq!(v["term"], t2, "{v}");
    assert_eq!(v["value"], "10.0.0.2:80", "{v}");
    terminate(&second);
    wait_exit(second, PATIENCE);
    let v = next_json(&lines, "the vacancy at the end");
    assert_eq!(v["change"], "vacant", "{v}");

    // Interrupted: a clean exit, nothing on stderr.
    terminate(&watch);
    let out = wait_exit(watch, PATIENCE);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn leader_watch_in_text_and_sigint() {
    let env = Env::new();
    let (supervisor, term) = env.supervisor("sched", "host-a", &[]);
    let (watch, lines) = env.spawn(&["leader", "--watch", "sched"]);
    let line = next_line(&lines, "the leader at the start");
    assert!(
        line.starts_with(&format!("elected host-a, term {term}, lease ends in ")),
        "{line}"
    );
    let ok = StdCommand::new("kill")
        .args(["-INT", &watch.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let out = wait_exit(watch, PATIENCE);
    assert_eq!(out.status.code(), Some(0));
    terminate(&supervisor);
    wait_exit(supervisor, PATIENCE);
}
