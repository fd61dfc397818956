//! The machinery of the bad-input table (the library's `tests/bad_input/` and the CLI's
//! `cli/tests/bad_input/`; every row is listed in docs/bad-input.md): the servers and
//! stores every case may use, what a case expects, and the walk that runs each case and
//! checks it.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cadenas::{Error, Locks, StoreErrorKind};

pub use crate::mysql::base_url as mysql_base;
pub use crate::postgres::base_url as postgres_base;
use crate::redis::RedisServer;
pub use crate::redis_url as redis_base;
pub use crate::{free_port, with_query};

/// The password of the Redis server that requires one (never expected in any output).
pub const REDIS_PASSWORD: &str = "BadInputRedisPw-1f7c";
/// A wrong password, given to every store that takes one (never expected in any output).
pub const WRONG_PASSWORD: &str = "WrongPw-8d2e6b";

/// The lease of the locks the cases take first: it outlives every case.
pub const TTL: Option<Duration> = Some(Duration::from_secs(30));

/// Takes `key` on `on` for a case and returns its token.
pub async fn hold(ctx: &Ctx, on: On, key: &str) -> String {
    ctx.locks(on)
        .lock(key)
        .with_ttl(TTL)
        .try_acquire()
        .await
        .unwrap()
        .serialize()
}

/// A key of `n` bytes.
pub fn long(n: usize) -> &'static str {
    "k".repeat(n).leak()
}

/// The names of the rows of docs/bad-input.md (the second column of its numbered rows).
pub fn documented_rows() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/bad-input.md");
    let doc = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    doc.lines()
        .filter_map(|line| {
            let mut cells = line.strip_prefix('|')?.split('|').map(str::trim);
            let number = cells.next()?;
            let name = cells.next()?;
            number.parse::<u32>().ok().map(|_| name.to_owned())
        })
        .collect()
}

/// Runs every case of `cases` (a panic in one is a failure of that row, not the end of the
/// walk) and fails with every failed row. First checks that `cases` are exactly the rows of
/// docs/bad-input.md that `mine` picks (the library's rows, or the binary's): no row missing
/// from the doc, none documented but gone.
pub async fn walk(ctx: Ctx, cases: Vec<Case>, mine: fn(&str) -> bool) {
    let mut documented: Vec<String> = documented_rows().into_iter().filter(|n| mine(n)).collect();
    let mut names: Vec<String> = cases.iter().map(|c| c.name.to_owned()).collect();
    documented.sort();
    names.sort();
    for name in &names {
        assert!(
            documented.contains(name),
            "docs/bad-input.md does not list '{name}' (or this table should not have it)"
        );
    }
    for name in &documented {
        assert!(
            names.contains(name),
            "docs/bad-input.md lists '{name}', which is no row of the table"
        );
    }
    let ctx = Arc::new(ctx);
    let cases: Vec<Arc<Case>> = cases.into_iter().map(Arc::new).collect();
    let mut failures = Vec::new();
    for case in &cases {
        let (ctx, row) = (ctx.clone(), case.clone());
        let outcome = tokio::spawn(async move { run_case(&ctx, &row).await })
            .await
            .unwrap_or_else(|e| Err(format!("panicked: {e}")));
        if let Err(why) = outcome {
            failures.push(format!("{}: {why}", case.name));
        }
    }
    ctx.cleanup().await;
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// `prefix` and 12 random hex digits: a namespace or table of this run.
pub fn random(prefix: &str) -> String {
    format!("{prefix}{:012x}", rand::random::<u64>() >> 16)
}

/// The stores the cases use, each in its own random namespace or table.
pub struct Ctx {
    /// Redis at `CADENAS_TEST_REDIS_URL`, in a random namespace.
    pub redis: Locks,
    /// The namespace of [`redis`](Self::redis).
    pub redis_ns: String,
    /// A raw connection to the same Redis, to plant values of other types.
    pub redis_raw: redis::Client,
    /// PostgreSQL in a random table.
    pub postgres: Locks,
    /// The table of [`postgres`](Self::postgres).
    pub pg_table: String,
    /// MariaDB/MySQL in a random table.
    pub mysql: Locks,
    /// The table of [`mysql`](Self::mysql).
    pub my_table: String,
    /// A SQLite file shared with the `cadenas` binary.
    pub sqlite: Locks,
    /// The URL of [`sqlite`](Self::sqlite).
    pub sqlite_url: String,
    /// A Redis that requires [`REDIS_PASSWORD`].
    pub locked_redis: RedisServer,
    /// Tables the cases create, dropped at the end (`true`: on PostgreSQL).
    pub extra_tables: std::sync::Mutex<Vec<(bool, String)>>,
    /// The `cadenas` binary that [`cli`](Self::cli) runs (see [`with_cli`](Self::with_cli)).
    program: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

async fn connect_or_explain(url: &str, what: &str, how: &str) -> Locks {
    Locks::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{what} is not reachable ({e}). {how}"))
}

impl Ctx {
    /// Connects to every store (panics with how to get one that is missing).
    pub async fn new() -> Ctx {
        let redis_ns = random("cadenas-bad-");
        let redis = connect_or_explain(
            &with_query(&redis_base(), &format!("namespace={redis_ns}")),
            "Redis",
            "Install and start it (apt-get install redis-server) or set CADENAS_TEST_REDIS_URL.",
        )
        .await;
        let pg_table = random("cadenas_bad_");
        let postgres = connect_or_explain(
            &with_query(&postgres_base(), &format!("table={pg_table}")),
            "PostgreSQL",
            "Install and start it (apt-get install postgresql) or set CADENAS_TEST_POSTGRES_URL.",
        )
        .await;
        let my_table = random("cadenas_bad_");
        let mysql = connect_or_explain(
            &with_query(&mysql_base(), &format!("table={my_table}")),
            "MariaDB/MySQL",
            "Install and start it (apt-get install mariadb-server) or set CADENAS_TEST_MYSQL_URL.",
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let sqlite_url = format!("sqlite://{}", dir.path().join("locks.db").display());
        let sqlite = Locks::connect(&sqlite_url).await.unwrap();
        Ctx {
            redis_raw: redis::Client::open(redis_base()).unwrap(),
            redis,
            redis_ns,
            postgres,
            pg_table,
            mysql,
            my_table,
            sqlite,
            sqlite_url,
            locked_redis: RedisServer::with_password(REDIS_PASSWORD),
            extra_tables: Default::default(),
            program: None,
            _dir: dir,
        }
    }

    /// The context whose [`cli`](Self::cli) runs `program` (the test's
    /// `env!("CARGO_BIN_EXE_cadenas")`).
    pub fn with_cli(mut self, program: impl Into<PathBuf>) -> Ctx {
        self.program = Some(program.into());
        self
    }

    /// The factory of a store.
    pub fn locks(&self, store: On) -> &Locks {
        match store {
            On::Redis => &self.redis,
            On::Postgres => &self.postgres,
            On::Mysql => &self.mysql,
            On::Sqlite => &self.sqlite,
        }
    }

    /// A raw Redis connection.
    pub async fn raw(&self) -> redis::aio::MultiplexedConnection {
        self.redis_raw
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Puts a Redis list under `key` of the context's namespace (someone else's data where a
    /// lock would be); returns the stored key.
    pub async fn plant_list(&self, key: &str) -> String {
        let stored = format!("{}:{key}", self.redis_ns);
        let _: () = redis::cmd("RPUSH")
            .arg(&stored)
            .arg("x")
            .query_async(&mut self.raw().await)
            .await
            .unwrap();
        stored
    }

    /// Runs the `cadenas` binary with `args` on the SQLite store (unless `--store` is given).
    pub async fn cli(&self, args: &[&str]) -> Got {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let store = self.sqlite_url.clone();
        let program = self
            .program
            .clone()
            .expect("a CLI case needs the binary: Ctx::with_cli");
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(program)
                .args(&args)
                .env("CADENAS_STORE", store)
                .env_remove("CADENAS_STORES")
                .env_remove("CADENAS_LOG")
                .kill_on_drop(true)
                .output(),
        )
        .await;
        match out {
            Err(_) => Got::Cli {
                code: None,
                stdout: String::new(),
                stderr: "no exit within 30 s".to_owned(),
            },
            Ok(out) => {
                let out = out.expect("running the cadenas binary");
                Got::Cli {
                    code: out.status.code(),
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                }
            }
        }
    }

    /// Drops the tables of the run and deletes its Redis keys.
    pub async fn cleanup(&self) {
        let mut con = self.raw().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("*{}*", self.redis_ns))
            .query_async(&mut con)
            .await
            .unwrap_or_default();
        for k in keys {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&k).query_async(&mut con).await;
        }
        let mut pg = vec![self.pg_table.clone()];
        let mut my = vec![self.my_table.clone()];
        for (is_pg, t) in self.extra_tables.lock().unwrap().drain(..) {
            if is_pg {
                pg.push(t)
            } else {
                my.push(t)
            }
        }
        if let Ok(pool) = sqlx::PgPool::connect(&postgres_base()).await {
            for t in pg {
                let _ = sqlx::query(&format!("DROP TABLE IF EXISTS \"{t}\""))
                    .execute(&pool)
                    .await;
                let _ = sqlx::query(&format!("DROP SEQUENCE IF EXISTS \"{t}_fence_seq\""))
                    .execute(&pool)
                    .await;
            }
        }
        if let Ok(pool) = sqlx::MySqlPool::connect(&mysql_base()).await {
            for t in my {
                let _ = sqlx::query(&format!("DROP TABLE IF EXISTS `{t}`"))
                    .execute(&pool)
                    .await;
                let _ = sqlx::query(&format!("DROP TABLE IF EXISTS `{t}_fences`"))
                    .execute(&pool)
                    .await;
                let _ = sqlx::query(&format!("DROP TABLE IF EXISTS `{t}_holders`"))
                    .execute(&pool)
                    .await;
            }
        }
    }
}

/// A store of the context.
#[derive(Debug, Clone, Copy)]
pub enum On {
    /// [`Ctx::redis`].
    Redis,
    /// [`Ctx::postgres`].
    Postgres,
    /// [`Ctx::mysql`].
    Mysql,
    /// [`Ctx::sqlite`].
    Sqlite,
}

/// What a case produced.
#[derive(Debug)]
pub enum Got {
    /// A library call's result.
    Api(Result<(), Error>),
    /// A run of the `cadenas` binary.
    Cli {
        /// The exit code (`None`: killed by a signal, or no exit in time).
        code: Option<i32>,
        /// What it printed on stdout.
        stdout: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// Turns a library result into [`Got`].
pub fn api<T>(r: Result<T, Error>) -> Got {
    Got::Api(r.map(drop))
}

/// What a case must get.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// `Error::InvalidInput` about this.
    Invalid(&'static str),
    /// `Error::Config`.
    Config,
    /// `Error::Unsupported`.
    Unsupported,
    /// `Error::Store` of this kind.
    Store(StoreErrorKind),
    /// `Error::NotOwned`.
    NotOwned,
    /// `Error::Lost`.
    Lost,
    /// `Error::AlreadyLocked`.
    AlreadyLocked,
    /// `Error::Timeout`.
    Timeout,
    /// The binary exits with this code.
    Exit(i32),
}

/// The lock state a case must leave.
#[derive(Debug, Clone, Copy)]
pub enum After {
    /// Nothing to check (no lock involved, or no store reached).
    Nothing,
    /// This key (in the context's namespace or table) is free.
    Free(On, &'static str),
    /// This key is still held (by whoever held it before the bad input).
    Held(On, &'static str),
}

/// What a case runs.
pub type Run = Box<dyn Fn(Arc<Ctx>) -> Pin<Box<dyn Future<Output = Got> + Send>> + Send + Sync>;

/// One row of the table.
pub struct Case {
    /// What is bad, as listed in docs/bad-input.md.
    pub name: &'static str,
    /// What it must get.
    pub expect: Expect,
    /// Words the message must contain (`{pg_table}`, `{my_table}` stand for the tables).
    pub names: &'static [&'static str],
    /// The lock state it must leave.
    pub after: After,
    /// The case itself.
    pub run: Run,
}

/// A row: `case(name, expect, names, after, |ctx| async move { ... })`.
pub fn case<F, Fut>(
    name: &'static str,
    expect: Expect,
    names: &'static [&'static str],
    after: After,
    run: F,
) -> Case
where
    F: Fn(Arc<Ctx>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Got> + Send + 'static,
{
    Case {
        name,
        expect,
        names,
        after,
        run: Box::new(move |ctx| Box::pin(run(ctx))),
    }
}

fn check_error(e: &Error, expect: Expect) -> bool {
    match (expect, e) {
        (Expect::Invalid(what), Error::InvalidInput { what: w, .. }) => what == *w,
        (Expect::Config, Error::Config { .. }) => true,
        (Expect::Unsupported, Error::Unsupported { .. }) => true,
        (Expect::Store(kind), Error::Store { source, .. }) => source.kind == kind,
        (Expect::NotOwned, Error::NotOwned { .. }) => true,
        (Expect::Lost, Error::Lost { .. }) => true,
        (Expect::AlreadyLocked, Error::AlreadyLocked { .. }) => true,
        (Expect::Timeout, Error::Timeout { .. }) => true,
        _ => false,
    }
}

/// Runs one case; `Err` says what was wrong.
pub async fn run_case(ctx: &Arc<Ctx>, case: &Case) -> Result<(), String> {
    let got = tokio::time::timeout(Duration::from_secs(30), (case.run)(ctx.clone()))
        .await
        .map_err(|_| "no answer in 30 s".to_owned())?;
    let message = match (&got, case.expect) {
        (Got::Api(Err(e)), expect) if check_error(e, expect) => format!("{e} {e:?}"),
        (Got::Cli { code, stderr, .. }, Expect::Exit(n)) if *code == Some(n) => {
            // cadenas's own errors are one line on stderr (clap's usage errors are longer).
            if stderr.starts_with("cadenas:") && stderr.trim_end().lines().count() != 1 {
                return Err(format!("more than one line on stderr: {stderr:?}"));
            }
            stderr.clone()
        }
        (got, expect) => return Err(format!("expected {expect:?}, got {got:?}")),
    };
    for name in case.names {
        let name = name
            .replace("{pg_table}", &ctx.pg_table)
            .replace("{my_table}", &ctx.my_table);
        if !message.contains(&name) {
            return Err(format!("the message does not name {name:?}: {message}"));
        }
    }
    for secret in [REDIS_PASSWORD, WRONG_PASSWORD] {
        if message.contains(secret) || format!("{got:?}").contains(secret) {
            return Err(format!("a password shows: {got:?}"));
        }
    }
    let (on, key, held) = match case.after {
        After::Nothing => return Ok(()),
        After::Free(on, key) => (on, key, false),
        After::Held(on, key) => (on, key, true),
    };
    let lock = ctx.locks(on).lock(key);
    let locked = lock
        .is_locked()
        .await
        .map_err(|e| format!("after the case: {e}"))?;
    let _ = lock.force_release().await;
    if locked != held {
        return Err(format!(
            "afterwards {key} on {on:?} is {} (expected {})",
            if locked { "held" } else { "free" },
            if held { "held" } else { "free" }
        ));
    }
    Ok(())
}
