//! Servers the tool runs itself (redis-server on free ports, so it can kill and restart
//! them: the test support's [`RedisServer`], without persistence, so a restart loses every
//! key as a crash of a Redis without AOF does) and the admin side of the SQL stores (killing
//! connections, users, tables).

use anyhow::{bail, Context, Result};
use sqlx::{Executor, Row};

pub use cadenas_test_support::etcd::EtcdCluster;
pub use cadenas_test_support::redis::{RedisCluster, RedisServer};
pub use cadenas_test_support::redis_sentinel::SentinelTopology;

/// The admin connection to a SQL store: kills the holders' connections and cleans up.
pub enum SqlAdmin {
    Postgres {
        pool: sqlx::PgPool,
        table: String,
    },
    Mysql {
        pool: sqlx::MySqlPool,
        table: String,
        database: String,
        users: Vec<String>,
    },
}

impl SqlAdmin {
    /// Connects to `url` (no query) as the admin user.
    pub async fn postgres(url: &str, table: &str) -> Result<SqlAdmin> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(url)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {}", redact(url)))?;
        Ok(SqlAdmin::Postgres {
            pool,
            table: table.to_owned(),
        })
    }

    pub async fn mysql(url: &str, table: &str, database: &str) -> Result<SqlAdmin> {
        let pool = sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(2)
            .connect(url)
            .await
            .with_context(|| format!("connecting to MySQL at {}", redact(url)))?;
        Ok(SqlAdmin::Mysql {
            pool,
            table: table.to_owned(),
            database: database.to_owned(),
            users: Vec::new(),
        })
    }

    /// MySQL: a user of its own for one worker, so that its connections can be found and
    /// killed (`KILL` by user). Returns the password.
    pub async fn create_user(&mut self, user: &str) -> Result<String> {
        let SqlAdmin::Mysql {
            pool,
            database,
            users,
            ..
        } = self
        else {
            bail!("users are only made on MySQL");
        };
        let password = format!("p{:016x}", rand::random::<u64>());
        pool.execute(format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'").as_str())
            .await
            .with_context(|| {
                format!("creating MySQL user {user} (the URL's user needs CREATE USER)")
            })?;
        users.push(user.to_owned());
        pool.execute(format!("GRANT ALL PRIVILEGES ON `{database}`.* TO '{user}'@'%'").as_str())
            .await
            .with_context(|| format!("granting {database} to {user}"))?;
        Ok(password)
    }

    /// Kills every connection of one worker: by `application_name` on PostgreSQL, by user on
    /// MySQL. Returns how many were killed.
    pub async fn kill_connections(&self, who: &str) -> Result<u64> {
        match self {
            SqlAdmin::Postgres { pool, .. } => {
                let rows = sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                )
                .bind(who)
                .fetch_all(pool)
                .await
                .context("pg_terminate_backend")?;
                Ok(rows.len() as u64)
            }
            SqlAdmin::Mysql { pool, .. } => {
                let ids: Vec<i64> =
                    sqlx::query("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?")
                        .bind(who)
                        .fetch_all(pool)
                        .await
                        .context("reading the MySQL process list")?
                        .iter()
                        .map(|r| r.try_get::<i64, _>(0))
                        .collect::<Result<_, _>>()?;
                let mut killed = 0;
                for id in ids {
                    // A connection that ended meanwhile answers "unknown thread": fine.
                    if pool
                        .execute(format!("KILL CONNECTION {id}").as_str())
                        .await
                        .is_ok()
                    {
                        killed += 1;
                    }
                }
                Ok(killed)
            }
        }
    }

    /// Drops the run's tables (and sequence) and users.
    pub async fn cleanup(&self) -> Result<()> {
        match self {
            SqlAdmin::Postgres { pool, table } => {
                pool.execute(
                    format!("DROP TABLE IF EXISTS \"{table}\", \"{table}_holders\"").as_str(),
                )
                .await?;
                pool.execute(format!("DROP SEQUENCE IF EXISTS \"{table}_fence_seq\"").as_str())
                    .await?;
            }
            SqlAdmin::Mysql {
                pool, table, users, ..
            } => {
                for user in users {
                    pool.execute(format!("DROP USER IF EXISTS '{user}'@'%'").as_str())
                        .await?;
                }
                pool.execute(
                    format!("DROP TABLE IF EXISTS `{table}`, `{table}_fences`, `{table}_holders`")
                        .as_str(),
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// A URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "(unparsable URL)".to_owned(),
    }
}
