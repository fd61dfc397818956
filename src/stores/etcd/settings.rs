//! The etcd store's URL: endpoints, TLS, user and password, timeouts; and driver errors as
//! [`StoreError`]s.

use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, TlsOptions};

use crate::error::{Error, Result};
use crate::store::{StoreError, StoreErrorKind};
use crate::url::StoreUrl;

/// The etcd store's own URL options.
pub(super) const OPTIONS: &[&str] = &["ca_file", "connect_timeout", "timeout"];

/// The client port etcd listens on by default.
pub(super) const DEFAULT_PORT: u16 = 2379;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a URL says about reaching the cluster.
pub(super) struct Settings {
    /// The URL without password, for messages.
    pub describe: String,
    /// `http://host:port` or `https://host:port`, one per member named.
    pub endpoints: Vec<String>,
    pub options: ConnectOptions,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("describe", &self.describe)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Reads `etcd://[user:pass@]host[:port][,host[:port]…][?options]` (`etcds://` for TLS).
    pub fn from_url(mut url: StoreUrl) -> Result<Settings> {
        crate::scheme::ETCD.check(&url)?;
        let describe = url.redacted.clone();
        let tls = url.url.scheme() == "etcds";
        let ca_file = url.take("ca_file");
        let connect_timeout = url
            .take_duration("connect_timeout")?
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let timeout = url.take_duration("timeout")?.unwrap_or(DEFAULT_TIMEOUT);
        url.reject_unknown(OPTIONS)?;
        if !url.url.path().is_empty() && url.url.path() != "/" {
            return Err(Error::config(format!(
                "{describe}: an etcd URL names members only, no path; write etcd://host:2379[,host:2379…]"
            )));
        }
        if url.hosts.is_empty() || !url.url.has_host() {
            return Err(Error::config(format!(
                "{describe} names no etcd member; write etcd://host:2379[,host:2379…]"
            )));
        }
        let http = if tls { "https" } else { "http" };
        let endpoints = url
            .hosts
            .iter()
            .map(|h| with_port(h, http))
            .collect::<Vec<_>>();
        let mut options = ConnectOptions::new()
            .with_connect_timeout(connect_timeout)
            .with_timeout(timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            // The auth token of etcd expires (5 minutes by default): get a new one when it does.
            .with_auto_token_refresh(true);
        let user = percent_decode(url.url.username());
        if let Some(password) = url.url.password() {
            options = options.with_user(user, percent_decode(password));
        } else if !user.is_empty() {
            return Err(Error::config(format!(
                "{describe} names user '{user}' without a password; write etcd://user:password@host"
            )));
        }
        match (tls, ca_file) {
            (true, Some(path)) => {
                let pem = std::fs::read(&path).map_err(|e| {
                    Error::config(format!("ca_file {path} of {describe} cannot be read: {e}"))
                })?;
                options =
                    options.with_tls(TlsOptions::new().ca_certificate(Certificate::from_pem(pem)));
            }
            (true, None) => options = options.with_tls(TlsOptions::new().with_native_roots()),
            (false, Some(_)) => {
                return Err(Error::config(format!(
                    "ca_file in {describe} needs TLS: write etcds://…"
                )))
            }
            (false, None) => {}
        }
        Ok(Settings {
            describe,
            endpoints,
            options,
        })
    }
}

/// `host:port` as an endpoint of `scheme`, with etcd's port when none is given.
fn with_port(host: &str, scheme: &str) -> String {
    let has_port = match host.rfind(']') {
        Some(end) => host[end..].contains(':'),
        None => host.contains(':'),
    };
    if has_port {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{DEFAULT_PORT}")
    }
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// A driver error as a [`StoreError`]: what happened (`doing`), classified.
pub(super) fn op_error(doing: &str, e: etcd_client::Error) -> StoreError {
    use tonic_code::*;
    let (kind, hint) = match &e {
        // etcd answers a wrong password with "invalid argument".
        etcd_client::Error::GRpcStatus(status)
            if status.message().contains("authentication failed") =>
        {
            (
                StoreErrorKind::Unavailable,
                "; check the user and password in the URL",
            )
        }
        // A TLS handshake that refused the server's certificate.
        etcd_client::Error::GRpcStatus(status) if status.message().contains("certificate") => (
            StoreErrorKind::Unavailable,
            "; the server's TLS certificate was not trusted: pass ?ca_file=PATH with the CA \
             that signed it",
        ),
        etcd_client::Error::GRpcStatus(status) => match status.code() as i32 {
            UNAUTHENTICATED | PERMISSION_DENIED => (
                StoreErrorKind::Unavailable,
                "; check the user and password in the URL and the user's roles",
            ),
            UNAVAILABLE => (
                StoreErrorKind::Unavailable,
                "; is etcd running there, with a quorum of its members up?",
            ),
            DEADLINE_EXCEEDED | ABORTED | RESOURCE_EXHAUSTED | CANCELLED | UNKNOWN => {
                (StoreErrorKind::Transient, "")
            }
            _ => (StoreErrorKind::Rejected, ""),
        },
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => (
            StoreErrorKind::Unavailable,
            "; is etcd running at that address?",
        ),
        etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_) => {
            (StoreErrorKind::Rejected, "")
        }
        _ => (StoreErrorKind::Transient, ""),
    };
    StoreError::new(kind, format!("{doing} failed: {e}{hint}")).with_source(e)
}

/// gRPC status codes (as numbers, so that the store needs no direct tonic dependency).
mod tonic_code {
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const ABORTED: i32 = 10;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings> {
        Settings::from_url(StoreUrl::parse(text)?)
    }

    #[test]
    fn endpoints_get_etcds_port_and_scheme() {
        let s = parse("etcd://a,b:2400,[::1]").unwrap();
        assert_eq!(
            s.endpoints,
            ["http://a:2379", "http://b:2400", "http://[::1]:2379"]
        );
        let s = parse("etcds://a:2379").unwrap();
        assert_eq!(s.endpoints, ["https://a:2379"]);
    }

    #[test]
    fn bad_urls_are_config_errors_without_the_password() {
        for text in [
            "etcd://u:Pw-7q@h/path",
            "etcd://u:Pw-7q@h?ca_file=x",
            "etcd://u:Pw-7q@h?nope=1",
            "etcds://u:Pw-7q@h?ca_file=/no/such/file",
            "etcd://u:Pw-7q@h?timeout=forever",
        ] {
            let e = parse(text).unwrap_err();
            // A bad duration is InvalidInput, as on every store; the rest is Config.
            assert!(
                matches!(e, Error::Config { .. } | Error::InvalidInput { .. }),
                "{text}: {e:?}"
            );
            assert!(!e.to_string().contains("Pw-7q"), "{text}: {e}");
        }
        let e = parse("etcd://alice@h").unwrap_err().to_string();
        assert!(e.contains("without a password"), "{e}");
    }

    #[test]
    fn debug_hides_the_password() {
        let s = parse("etcd://u:Pw-7q@h").unwrap();
        assert!(!format!("{s:?}").contains("Pw-7q"));
    }
}
