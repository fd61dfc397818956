//! The stores, one module each, behind cargo features.
//!
//! | store | URL | feature |
//! |---|---|---|
//! | [`memory`] | `memory:` | always |
//! | SQLite | `sqlite://PATH` | `sqlite` (default) |
//! | Redis, Redis Cluster | `redis://`, `rediss://`, `redis+cluster://` | `redis` |
//! | Redlock | `redlock://h:p,h:p,h:p` | `redlock` |
//! | PostgreSQL | `postgres://` | `postgres` |
//! | MySQL / MariaDB | `mysql://`, `mariadb://` | `mysql` |

pub mod memory;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "redlock")]
pub mod redlock;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
