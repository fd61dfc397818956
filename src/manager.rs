//! [`Manager`]: named stores with one default (Verrou's `Verrou` class).

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::guard::Guard;
use crate::lock::Lock;
use crate::locks::Locks;
use crate::store::LockInfo;

/// Several named stores, one of them the default. The `Locks` methods on the manager act on
/// the default store; [`store`](Manager::store) picks another (Verrou's `use`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> cadenas::Result<()> {
/// use cadenas::{Locks, Manager};
/// let manager = Manager::builder()
///     .store("local", Locks::memory())
///     .store("shared", Locks::connect("memory:?namespace=shared").await?)
///     .default_store("local")
///     .build()?;
/// let guard = manager.lock("report").acquire().await?;
/// assert!(!manager.store("shared")?.lock("report").is_locked().await?);
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Manager {
    stores: BTreeMap<String, Locks>,
    default: String,
}

impl Manager {
    /// Names stores and picks the default.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// Builds from the environment: `CADENAS_STORES` (`name=url,name=url`) with
    /// `CADENAS_DEFAULT_STORE` (default: the first), or else `CADENAS_STORE` (one URL, named
    /// `default`).
    pub async fn from_env() -> Result<Manager> {
        Manager::from_vars(|name| std::env::var(name).ok()).await
    }

    /// [`from_env`](Manager::from_env) with the variables read through `var` (for tests).
    pub async fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Manager> {
        let mut builder = Manager::builder();
        match (var("CADENAS_STORES"), var("CADENAS_STORE")) {
            (Some(list), _) if !list.trim().is_empty() => {
                let mut first = None;
                for item in split_entries(&list).filter(|s| !s.is_empty()) {
                    let (name, url) = item.split_once('=').ok_or_else(|| {
                        Error::config(format!(
                            "CADENAS_STORES entry '{}' is not name=url",
                            crate::url::redact_text(item)
                        ))
                    })?;
                    first.get_or_insert_with(|| name.to_owned());
                    let locks = Locks::connect(url).await.map_err(|e| match e {
                        Error::Config { message } => {
                            Error::config(format!("CADENAS_STORES entry '{name}': {message}"))
                        }
                        other => other,
                    })?;
                    builder = builder.store(name, locks);
                }
                let default = var("CADENAS_DEFAULT_STORE")
                    .or(first)
                    .ok_or_else(|| Error::config("CADENAS_STORES names no store"))?;
                builder.default_store(default).build()
            }
            (_, Some(url)) => builder
                .store("default", Locks::connect(&url).await?)
                .default_store("default")
                .build(),
            _ => Err(Error::config(
                "set CADENAS_STORE to a store URL, or CADENAS_STORES to name=url,name=url",
            )),
        }
    }

    /// The store named `name`.
    pub fn store(&self, name: &str) -> Result<&Locks> {
        self.stores.get(name).ok_or_else(|| {
            Error::config(format!(
                "no store named '{name}'; known stores: {}",
                self.names().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// The default store.
    pub fn default_store(&self) -> &Locks {
        &self.stores[&self.default]
    }

    /// The names of the stores.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.stores.keys().map(String::as_str)
    }

    /// [`Locks::lock`] on the default store.
    pub fn lock(&self, key: &str) -> Lock {
        self.default_store().lock(key)
    }

    /// [`Locks::restore`] on the default store.
    pub async fn restore(&self, token: &str) -> Result<Guard> {
        self.default_store().restore(token).await
    }

    /// [`Locks::list`] on the default store.
    pub async fn list(&self, prefix: &str) -> Result<Vec<LockInfo>> {
        self.default_store().list(prefix).await
    }

    /// Disconnects every store; returns the first error after trying them all.
    pub async fn disconnect_all(&self) -> Result<()> {
        let mut first = None;
        for locks in self.stores.values() {
            if let Err(e) = locks.disconnect().await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Splits `name=url,name=url` at the commas that begin a new `name=scheme:` entry, so that
/// the commas of a URL (a host list, a password) stay in it.
fn split_entries(list: &str) -> impl Iterator<Item = &str> {
    let starts_entry = |rest: &str| {
        if rest.trim().is_empty() {
            return true; // a trailing comma
        }
        let Some((name, url)) = rest.trim_start().split_once('=') else {
            return false;
        };
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    };
    let mut cuts = vec![0];
    cuts.extend(
        list.match_indices(',')
            .map(|(i, _)| i)
            .filter(|&i| starts_entry(&list[i + 1..])),
    );
    cuts.push(list.len());
    (0..cuts.len() - 1).map(move |n| {
        let start = if n == 0 { 0 } else { cuts[n] + 1 };
        list[start..cuts[n + 1]].trim()
    })
}

/// Builds a [`Manager`].
#[derive(Debug, Default)]
pub struct ManagerBuilder {
    stores: BTreeMap<String, Locks>,
    default: Option<String>,
}

impl ManagerBuilder {
    /// Adds a store under `name`.
    pub fn store(mut self, name: impl Into<String>, locks: Locks) -> Self {
        self.stores.insert(name.into(), locks);
        self
    }

    /// Names the default store (default: the only one, if there is one).
    pub fn default_store(mut self, name: impl Into<String>) -> Self {
        self.default = Some(name.into());
        self
    }

    /// Checks that the default names a store.
    pub fn build(self) -> Result<Manager> {
        let default = match self.default {
            Some(d) => d,
            None if self.stores.len() == 1 => {
                self.stores.keys().next().cloned().unwrap_or_default()
            }
            None => return Err(Error::config("name the default store with default_store()")),
        };
        if !self.stores.contains_key(&default) {
            return Err(Error::config(format!(
                "the default store '{default}' is not among the stores: {}",
                self.stores.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(Manager {
            stores: self.stores,
            default,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn from_vars() {
        let vars = |n: &str| match n {
            "CADENAS_STORES" => Some("a=memory:,b=memory:?namespace=b".to_owned()),
            "CADENAS_DEFAULT_STORE" => Some("b".to_owned()),
            _ => None,
        };
        let m = Manager::from_vars(vars).await.unwrap();
        assert_eq!(m.names().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(m.default_store().namespace(), Some("b"));
        assert!(m.store("c").is_err());
        let one = Manager::from_vars(|n| (n == "CADENAS_STORE").then(|| "memory:".into()))
            .await
            .unwrap();
        assert_eq!(one.names().collect::<Vec<_>>(), ["default"]);
        assert!(Manager::from_vars(|_| None).await.is_err());
        let bad =
            Manager::from_vars(|n| (n == "CADENAS_STORES").then(|| "x=memory:,y".into())).await;
        assert!(matches!(bad, Err(Error::Config { .. })));
        m.disconnect_all().await.unwrap();
    }

    /// Found with the bad-input table: a comma inside a URL (a host list, a password) cut it
    /// into two entries, and the second could show a piece of the password.
    #[test]
    fn entries_keep_the_commas_of_their_urls() {
        let split = |list| split_entries(list).collect::<Vec<_>>();
        assert_eq!(
            split("a=redis+cluster://h1:1,h2:2/?namespace=x, b=memory:,"),
            ["a=redis+cluster://h1:1,h2:2/?namespace=x", "b=memory:", ""]
        );
        assert_eq!(
            split("a=redis://u:p,w@h:1,b=memory:"),
            ["a=redis://u:p,w@h:1", "b=memory:"]
        );
        assert_eq!(split("x=memory:,y"), ["x=memory:,y"]);
        assert_eq!(split(""), [""]);
    }

    #[tokio::test]
    async fn a_bad_entry_never_shows_a_password() {
        let list = "a=memory:,redis://u:Pw-9z@h:1";
        let e = Manager::from_vars(|n| (n == "CADENAS_STORES").then(|| list.into()))
            .await
            .unwrap_err();
        assert!(!e.to_string().contains("Pw-9z"), "{e}");
    }
}
