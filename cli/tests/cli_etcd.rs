//! `cadenas exec` on etcd, against a 3-member cluster the test starts: processes exclude
//! each other with increasing fences, a holder survives the loss of a member (the leader),
//! and `exec` and `etcdctl lock` exclude each other.
#![cfg(feature = "etcd")]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cadenas_test_support::etcd::EtcdCluster;
use cadenas_test_support::process::{wait_exit, wait_until};

const LIMIT: Duration = Duration::from_secs(60);

fn key(name: &str) -> String {
    format!("cli-etcd-{name}-{:x}", rand::random::<u32>())
}

/// `cadenas exec --store URL KEY -- sh -c SCRIPT`.
fn exec(url: &str, key: &str, script: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cadenas"))
        .args([
            "exec", "--store", url, "--ttl", "2s", key, "--", "sh", "-c", script,
        ])
        .env_remove("CADENAS_STORE")
        .env_remove("CADENAS_STORES")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the cadenas binary runs")
}

#[test]
fn exec_excludes_across_processes_with_increasing_fences() {
    let cluster = EtcdCluster::with_members(3);
    let dir = tempfile::tempdir().unwrap();
    let k = key("exclude");
    // `mkdir` fails if another holder is inside: the command then exits 99.
    let script = format!(
        "mkdir {d}/inside || exit 99; echo $CADENAS_FENCE >> {d}/fences; sleep 0.2; rmdir {d}/inside",
        d = dir.path().display()
    );
    let children: Vec<Child> = (0..4).map(|_| exec(&cluster.url(), &k, &script)).collect();
    for child in children {
        let out = wait_exit(child, LIMIT);
        assert!(
            out.status.success(),
            "{:?}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let fences: Vec<u64> = std::fs::read_to_string(dir.path().join("fences"))
        .unwrap()
        .lines()
        .map(|l| l.parse().expect("CADENAS_FENCE is a number"))
        .collect();
    assert_eq!(fences.len(), 4);
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
}

#[test]
fn exec_keeps_its_lock_when_the_leader_is_lost() {
    let mut cluster = EtcdCluster::with_members(3);
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let k = key("leader");
    // Holds for 6 s with a 2 s lease: the watchdog must extend through the failover.
    let script = format!("touch {}; sleep 6", started.display());
    let holder = exec(&cluster.url(), &k, &script);
    wait_until("exec holds the lock", LIMIT, || started.exists());
    let leader = cluster.leader().expect("a leader");
    cluster.kill(leader);
    // Another process cannot take it meanwhile.
    let out = Command::new(env!("CARGO_BIN_EXE_cadenas"))
        .args(["acquire", "--wait", "0", "--store", &cluster.url(), &k])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = wait_exit(holder, LIMIT);
    assert!(
        out.status.success(),
        "exec lost its lock with a quorum up: {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    cluster.restart(leader).unwrap();
}

#[test]
fn exec_and_etcdctl_lock_exclude_each_other() {
    let cluster = EtcdCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let k = key("etcdctl");
    let holder = exec(
        &cluster.url(),
        &k,
        &format!("touch {}; sleep 1.5", started.display()),
    );
    wait_until("exec holds the lock", LIMIT, || started.exists());
    let mut ctl = cluster
        .etcdctl()
        .args(["lock", &k, "--", "sh", "-c", "echo got"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // etcdctl queues behind exec's holding and gets the lock only once exec released it.
    let mut holder = holder;
    let deadline = std::time::Instant::now() + LIMIT;
    while holder.try_wait().unwrap().is_none() {
        assert!(
            ctl.try_wait().unwrap().is_none(),
            "etcdctl got the lock while exec held it"
        );
        assert!(std::time::Instant::now() < deadline, "exec did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(wait_exit(holder, LIMIT).status.success());
    let ctl = wait_exit(ctl, LIMIT);
    assert_eq!(String::from_utf8_lossy(&ctl.stdout), "got\n");
    // And the other way round: while etcdctl holds it, exec --wait 0 gives up (exit 75).
    let ctl = cluster
        .etcdctl()
        .args(["lock", &k, "--", "sh", "-c", "echo in; sleep 2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ctl = ctl;
    let mut first = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(ctl.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "in\n");
    let out = Command::new(env!("CARGO_BIN_EXE_cadenas"))
        .args([
            "exec",
            "--wait",
            "0",
            "--store",
            &cluster.url(),
            &k,
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = ctl.kill();
    let _ = ctl.wait();
}
