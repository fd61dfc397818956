//! `cadenas exec` in session mode (`?mode=session`) on PostgreSQL and MariaDB/MySQL: real
//! processes exclude each other, see increasing `CADENAS_FENCE`, and a holder whose server
//! connection is killed stops its command and exits 76.
#![cfg(any(feature = "postgres", feature = "mysql"))]

use std::process::{Command as StdCommand, Stdio};
use std::time::Duration;

use cadenas_test_support::process::{wait_exit, wait_until};

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn cadenas(store: &str, args: &[&str]) -> StdCommand {
    let mut c = StdCommand::new(assert_cmd::cargo::cargo_bin("cadenas"));
    c.args(args)
        .env("CADENAS_STORE", store)
        .env_remove("CADENAS_STORES")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn random_key() -> String {
    format!("cli-session-{:012x}", rand::random::<u64>() >> 16)
}

/// Four `exec`s of one key at once: never two inside, fences increasing in holding order.
fn exec_excludes_with_increasing_fences(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (inside, fences) = (dir.path().join("inside"), dir.path().join("fences"));
    let script = format!(
        "mkdir {inside} || exit 9; echo $CADENAS_FENCE >> {fences}; sleep 0.2; rmdir {inside}",
        inside = inside.display(),
        fences = fences.display()
    );
    let key = random_key();
    let children: Vec<_> = (0..4)
        .map(|_| {
            cadenas(store, &["exec", &key, "--", "sh", "-c", &script])
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = wait_exit(child, Duration::from_secs(60));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{store}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let seen: Vec<u64> = std::fs::read_to_string(&fences)
        .unwrap()
        .lines()
        .map(|l| l.parse().expect("CADENAS_FENCE is a number"))
        .collect();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{store}: {seen:?}");
}

/// The server session holding `key`, read with `cadenas status --json` from another process.
fn holder_session(store: &str, key: &str) -> Option<u64> {
    let out = cadenas(store, &["status", "--json", key]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v: serde_json::Value = serde_json::from_str(text.lines().next()?).ok()?;
    let owner = v.pointer("/holders/0/owner").or_else(|| v.get("owner"))?;
    owner.as_str()?.rsplit(' ').next()?.parse().ok()
}

/// `exec` whose connection the server kills: its command stops, it exits 76.
fn killed_connection_exits_76(store: &str, kill: impl FnOnce(u64)) {
    let key = random_key();
    let exec = cadenas(
        store,
        &[
            "exec",
            "--ttl",
            "1500ms",
            "--kill-after",
            "5s",
            &key,
            "--",
            "sleep",
            "60",
        ],
    )
    .spawn()
    .unwrap();
    let mut session = None;
    wait_until("exec holds the lock", Duration::from_secs(30), || {
        session = holder_session(store, &key);
        session.is_some()
    });
    kill(session.unwrap());
    let out = wait_exit(exec, Duration::from_secs(20));
    assert_eq!(
        out.status.code(),
        Some(76),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("lost"));
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use cadenas_test_support::postgres::{admin, base_url};

    fn store() -> (String, String) {
        let table = format!("cadenas_cs_{:012x}", rand::random::<u64>() >> 16);
        (format!("{}?mode=session&table={table}", base_url()), table)
    }

    fn drop_sequence(table: &str) {
        block_on(async {
            let pool = admin().await;
            let drop = format!("DROP SEQUENCE IF EXISTS \"{table}_fence_seq\"");
            sqlx::query(&drop).execute(&pool).await.unwrap();
        });
    }

    #[test]
    fn postgres_session_exec_excludes_with_increasing_fences() {
        let (url, table) = store();
        exec_excludes_with_increasing_fences(&url);
        drop_sequence(&table);
    }

    #[test]
    fn postgres_session_exec_exits_76_when_its_backend_is_terminated() {
        let (url, table) = store();
        killed_connection_exits_76(&url, |pid| {
            block_on(async {
                let pool = admin().await;
                sqlx::query("SELECT pg_terminate_backend($1)")
                    .bind(pid as i32)
                    .execute(&pool)
                    .await
                    .unwrap();
            })
        });
        drop_sequence(&table);
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use super::*;
    use cadenas_test_support::mysql::{admin, base_url};

    #[test]
    fn mysql_session_exec_excludes_with_increasing_fences() {
        exec_excludes_with_increasing_fences(&format!("{}?mode=session", base_url()));
    }

    #[test]
    fn mysql_session_exec_exits_76_when_its_connection_is_killed() {
        killed_connection_exits_76(&format!("{}?mode=session", base_url()), |id| {
            block_on(async {
                let pool = admin().await;
                sqlx::query(&format!("KILL {id}"))
                    .execute(&pool)
                    .await
                    .unwrap();
            })
        });
    }
}
