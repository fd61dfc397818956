//! The DynamoDB store's URL and the SDK client it builds.

use std::time::Duration;

use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::Client;
use percent_encoding::percent_decode_str;

use crate::error::{Error, Result};
use crate::url::StoreUrl;

/// The options a `dynamodb://` URL takes (besides the lock layer's).
pub(super) const OPTIONS: &[&str] = &["tls", "region", "create_table", "clock_offset_ms"];

/// The region of a `dynamodb://HOST:PORT/TABLE` endpoint unless `?region=` says otherwise:
/// emulators accept any.
const ENDPOINT_REGION: &str = "us-east-1";

/// How long opening a TCP (and TLS) connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one attempt of a request may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request may take with the SDK's retries.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// What a URL says. Not `Debug`: it may hold a secret key.
pub(super) struct Settings {
    /// The URL without password or query, for messages.
    pub describe: String,
    pub table: String,
    /// `http(s)://HOST:PORT` of a DynamoDB-compatible endpoint; `None` = the AWS config chain.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Access key id and secret from the URL's user and password.
    pub credentials: Option<(String, String)>,
    pub create_table: bool,
    /// Added to this client's clock (tests only).
    pub clock_offset_ms: i64,
}

impl Settings {
    /// Reads `dynamodb:///TABLE` or `dynamodb://[KEY_ID:SECRET@]HOST[:PORT]/TABLE` and its
    /// options.
    pub fn from_url(mut url: StoreUrl) -> Result<Settings> {
        crate::scheme::DYNAMODB.check(&url)?;
        let describe = url.redacted.clone();
        let tls = url.take_bool("tls")?;
        let region = url.take("region");
        let create_table = url.take_bool("create_table")?.unwrap_or(true);
        let clock_offset_ms = match url.take("clock_offset_ms") {
            None => 0,
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|ms| ms.abs() <= 86_400_000)
                .ok_or_else(|| {
                    Error::config(format!(
                        "option clock_offset_ms={v} in {describe} is not a number of milliseconds \
                     within a day (it is for tests only)"
                    ))
                })?,
        };
        url.reject_unknown(OPTIONS)?;
        let table = url.url.path().trim_start_matches('/').to_owned();
        check_table(&table, &describe)?;
        if region.as_deref() == Some("") {
            return Err(Error::config(format!(
                "option region= in {describe} is empty; write e.g. ?region=eu-west-1"
            )));
        }
        let host = url.url.host_str().unwrap_or("").to_owned();
        if host.is_empty() {
            if tls.is_some() {
                return Err(Error::config(format!(
                    "option tls in {describe}: dynamodb:///TABLE reaches AWS over HTTPS always; \
                     tls is for dynamodb://HOST:PORT/TABLE"
                )));
            }
            return Ok(Settings {
                describe,
                table,
                endpoint: None,
                region,
                credentials: None,
                create_table,
                clock_offset_ms,
            });
        }
        let scheme = if tls == Some(true) { "https" } else { "http" };
        let port = url.url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let credentials = match (url.url.username(), url.url.password()) {
            ("", None) => None,
            (id, Some(secret)) if !id.is_empty() => Some((decode(id), decode(secret))),
            _ => {
                return Err(Error::config(format!(
                    "{describe}: give both the access key id and the secret key \
                     (dynamodb://KEY_ID:SECRET@host:port/table), or neither"
                )))
            }
        };
        Ok(Settings {
            describe,
            table,
            endpoint: Some(format!("{scheme}://{host}{port}")),
            region,
            credentials,
            create_table,
            clock_offset_ms,
        })
    }

    /// The SDK client: over the endpoint with the URL's credentials (else the environment's
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, else a placeholder pair that
    /// emulators accept), or over the AWS configuration chain.
    pub async fn client(&self) -> Result<Client> {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .build();
        // Throttling and dropped connections are retried by the SDK, briefly: the lock
        // layer has its own retry policy and the holder's lease is ticking.
        let retry = RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(Duration::from_millis(50));
        let Some(endpoint) = &self.endpoint else {
            let mut loader = aws_config::defaults(BehaviorVersion::latest())
                .http_client(https_client())
                .timeout_config(timeouts)
                .retry_config(retry);
            if let Some(region) = &self.region {
                loader = loader.region(Region::new(region.clone()));
            }
            let sdk = loader.load().await;
            if sdk.region().is_none() {
                return Err(Error::config(format!(
                    "{}: no AWS region; set AWS_REGION (or a profile's region) or add \
                     ?region=NAME",
                    self.describe
                )));
            }
            return Ok(Client::new(&sdk));
        };
        let credentials = match &self.credentials {
            Some((id, secret)) => Credentials::new(id, secret, None, None, "store URL"),
            None => match (
                std::env::var("AWS_ACCESS_KEY_ID"),
                std::env::var("AWS_SECRET_ACCESS_KEY"),
            ) {
                (Ok(id), Ok(secret)) => Credentials::new(id, secret, None, None, "environment"),
                _ => Credentials::new("cadenas", "cadenas", None, None, "placeholder"),
            },
        };
        let region = self.region.as_deref().unwrap_or(ENDPOINT_REGION).to_owned();
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region))
            .credentials_provider(credentials)
            .endpoint_url(endpoint)
            .http_client(https_client())
            .timeout_config(timeouts)
            .retry_config(retry)
            .build();
        Ok(Client::from_conf(config))
    }
}

/// The SDK's hyper client with rustls on ring (HTTP and HTTPS, the system's root
/// certificates).
fn https_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// DynamoDB's rule for table names: 3 to 255 of `a-z A-Z 0-9 _ - .`.
pub(super) fn check_table(table: &str, describe: &str) -> Result<()> {
    let ok = (3..=255).contains(&table.len())
        && table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        return Ok(());
    }
    Err(Error::config(format!(
        "'{table}' in {describe} is not a DynamoDB table name (3 to 255 letters, digits, '_', \
         '-', '.'); write dynamodb:///TABLE or dynamodb://HOST:PORT/TABLE"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> Result<Settings> {
        Settings::from_url(StoreUrl::parse(url).unwrap())
    }

    #[test]
    fn the_two_forms() {
        let s = settings("dynamodb:///locks?region=eu-west-1").unwrap();
        assert_eq!((s.table.as_str(), s.endpoint), ("locks", None));
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        let s = settings("dynamodb://127.0.0.1:8000/locks?tls=true&create_table=false").unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("https://127.0.0.1:8000"));
        assert!(!s.create_table);
        let s = settings("dynamodb://AKID:se%2Fcret@h:1/locks?clock_offset_ms=-5000").unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://h:1"));
        assert_eq!(s.clock_offset_ms, -5000);
        let (id, secret) = s.credentials.unwrap();
        assert_eq!((id.as_str(), secret.as_str()), ("AKID", "se/cret"));
        assert!(!s.describe.contains("se%2Fcret"), "{}", s.describe);
    }

    #[test]
    fn bad_urls_say_what_to_write() {
        let e = |url| settings(url).err().unwrap().to_string();
        assert!(e("dynamodb:///").contains("not a DynamoDB table name"));
        assert!(e("dynamodb://h:1/a/b").contains("not a DynamoDB table name"));
        assert!(e("dynamodb:///locks?tls=true").contains("tls is for"));
        assert!(e("dynamodb://h:1/locks?clock_offset_ms=x").contains("for tests only"));
        assert!(e("dynamodb://:pw@h:1/locks").contains("access key id"));
        assert!(e("dynamodb:///locks?region=").contains("empty"));
        assert!(e("dynamodb:///locks?bogus=1").contains("unknown option 'bogus'"));
    }
}
