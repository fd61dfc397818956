//! The stores, one module each, behind cargo features.
//!
//! | store | URL | feature | kind (metrics label) |
//! |---|---|---|---|
//! | [`memory`] | `memory:` | always | `memory` |
//! | SQLite | `sqlite://PATH` | `sqlite` (default) | `sqlite` |
//! | Redis | `redis://`, `rediss://` | `redis` | `redis` |
//! | Redis Cluster | `redis+cluster://`, `rediss+cluster://` | `redis` | `redis+cluster` |
//! | Redis Sentinel | `redis+sentinel://h:p[,h:p…]/SERVICE[/db]`, `rediss+sentinel://…` | `redis` | `redis+sentinel` |
//! | Redlock | `redlock://h:p,h:p,h:p`, `redlock+tls://…` | `redlock` | `redlock` |
//! | PostgreSQL | `postgres://`, `postgresql://` | `postgres` | `postgres` |
//! | MySQL / MariaDB | `mysql://`, `mariadb://` | `mysql` | `mysql` |
//! | [`etcd`] | `etcd://h:p[,h:p…]`, `etcds://…` | `etcd` | `etcd` |
//! | DynamoDB | `dynamodb:///TABLE`, `dynamodb://HOST:PORT/TABLE` | `dynamodb` | `dynamodb` |
//!
//! One table in the crate (`src/scheme.rs`) holds these rows: [`Locks::connect`] opens a URL
//! through it, and a store's `from_url` checks its scheme against its row. A new store is a
//! row there plus its module here.
//!
//! [`Locks::connect`]: crate::Locks::connect

pub(crate) mod detach;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(feature = "etcd")]
pub mod etcd;
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
