//! The real `cadenas` binary on DynamoDB (a `dynalite` emulator the test starts): processes
//! exclude each other with increasing `CADENAS_FENCE`, and `dynamodb:///TABLE` takes its
//! endpoint, region and credentials from the AWS environment variables.
#![cfg(feature = "dynamodb")]

use std::process::{Child, Command as StdCommand};
use std::time::Duration;

use cadenas_test_support::dynamodb::{DynamoServer, Emulator};
use cadenas_test_support::process::wait_exit;

#[test]
fn processes_take_turns_with_increasing_fences() {
    let server = DynamoServer::start(Emulator::Dynalite);
    let store = server.url("locks");
    let dir = tempfile::tempdir().unwrap();
    // Each turn records its fence while it holds the lock: the file is in holding order.
    let script = format!(
        "cd {}; if ! mkdir inside 2>/dev/null; then echo overlap >> errors; fi; echo $CADENAS_FENCE >> fences; sleep 0.02; rmdir inside",
        dir.path().display()
    );
    let children: Vec<Child> = (0..4)
        .map(|_| {
            let s = format!(
                "for i in 1 2 3; do {} exec --wait 60s --store {store} turn -- sh -c '{script}' || exit 1; done",
                assert_cmd::cargo::cargo_bin("cadenas").display(),
            );
            StdCommand::new("sh").args(["-c", &s]).env_remove("CADENAS_STORE").spawn().unwrap()
        })
        .collect();
    for c in children {
        let out = wait_exit(c, Duration::from_secs(120));
        assert!(out.status.success());
    }
    assert!(
        !dir.path().join("errors").exists(),
        "two processes held the lock at once"
    );
    let fences: Vec<u64> = std::fs::read_to_string(dir.path().join("fences"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(fences.len(), 12);
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
}

#[test]
fn the_aws_config_chain_form_reads_the_environment() {
    let server = DynamoServer::start(Emulator::Dynalite);
    let home = tempfile::tempdir().unwrap();
    let run = |store: &str, args: &[&str], aws: bool| {
        let mut c = assert_cmd::Command::cargo_bin("cadenas").unwrap();
        c.args(args)
            .args(["--store", store, "chain"])
            .env_remove("CADENAS_STORE");
        if aws {
            // No profile files, no instance metadata: only what these variables say.
            c.env("HOME", home.path())
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("AWS_ENDPOINT_URL_DYNAMODB", server.endpoint())
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "cadenas")
                .env("AWS_SECRET_ACCESS_KEY", "cadenas");
        }
        c.timeout(Duration::from_secs(60)).output().unwrap()
    };
    let out = run("dynamodb:///locks", &["acquire", "--ttl", "1m"], true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same table, reached by its endpoint.
    let out = run(&server.url("locks"), &["status"], false);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
