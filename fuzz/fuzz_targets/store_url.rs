//! Store URLs: `StoreUrl::parse`, its redacted form, and `Locks::connect` (a build with only
//! the memory store, so nothing is reached). Properties: errors are typed; the redacted form
//! parses back to the same scheme, user, hosts, port and path, with no password but `***`;
//! nothing shown (redacted URL, `Debug`, error message) reveals the password (see
//! `assert_password_hidden`).
#![no_main]

use cadenas::url::StoreUrl;
use cadenas::{Error, Locks};
use cadenas_fuzz::{assert_password_hidden, block_on};
use libfuzzer_sys::fuzz_target;

const SPECIAL: &[&str] = &["http", "https", "ws", "wss", "ftp", "file"];

/// The redacted form parses back to the same store, without password but `***`.
fn check_round_trip(text: &str, u: &StoreUrl) {
    let r = StoreUrl::parse(&u.redacted).unwrap_or_else(|e| {
        panic!(
            "the redacted form {:?} of {text:?} does not parse: {e}",
            u.redacted
        )
    });
    assert!(
        matches!(r.url.password(), None | Some("***")),
        "{:?} keeps a password",
        u.redacted
    );
    assert_eq!(r.url.password().is_some(), u.url.password().is_some());
    assert_eq!(r.url.scheme(), u.url.scheme(), "{text:?}");
    assert_eq!(r.url.username(), u.url.username(), "{text:?}");
    assert_eq!(r.url.host_str(), u.url.host_str(), "{text:?}");
    assert_eq!(r.url.port(), u.url.port(), "{text:?}");
    // An opaque path (`memory:x `) keeps a trailing space when the query is cut off, which
    // the next parse trims: a quirk of the URL crate, irrelevant to stores.
    let path = |u: &StoreUrl| u.url.path().trim_end_matches(' ').to_owned();
    assert_eq!(path(&r), path(u), "{text:?}");
    assert_eq!(r.hosts, u.hosts, "{text:?} -> {:?}", u.redacted);
    assert!(r.options.is_empty(), "{:?} keeps options", u.redacted);
    assert_eq!(
        r.redacted,
        u.redacted.trim_end_matches(' '),
        "redaction is not idempotent"
    );
}

/// Everything cadenas shows about `text`: the redacted form and `Debug` of the parsed URL,
/// or the error's message and `Debug`; the same for `Locks::connect`.
fn shown(text: &str) -> String {
    let parsed = match StoreUrl::parse(text) {
        Ok(u) => format!("{} {u:?}", u.redacted),
        Err(e) => format!("{e} {e:?}"),
    };
    let connected = match block_on(Locks::connect(text)) {
        Ok(locks) => format!("{} {locks:?}", locks.describe()),
        Err(e) => format!("{e} {e:?}"),
    };
    format!("{parsed}\n{connected}")
}

fuzz_target!(|text: &str| {
    match StoreUrl::parse(text) {
        Ok(u) => {
            // The URL crate rewrites URLs of its "special" schemes (`http:/h` becomes
            // `http://h/`), which no store uses; the round trip holds for the others.
            if !SPECIAL.contains(&u.url.scheme()) {
                check_round_trip(text, &u);
            }
        }
        Err(Error::Config { .. }) => {}
        Err(other) => panic!("{text:?} gave {other:?}"),
    }
    match block_on(Locks::connect(text)) {
        Ok(locks) => {
            let scheme = StoreUrl::parse(text).map(|u| u.url.scheme().to_owned());
            assert_eq!(
                scheme.ok().as_deref(),
                Some("memory"),
                "{text:?} opened {}",
                locks.describe()
            );
        }
        // Built without store features: a store's scheme names the feature to enable.
        Err(Error::Unsupported { what, .. }) => {
            assert!(what.contains("cargo feature"), "{text:?}: {what}")
        }
        Err(e) => assert!(
            matches!(e, Error::Config { .. } | Error::InvalidInput { .. }),
            "{text:?} gave {e:?}"
        ),
    }
    // Nothing shown reveals the password.
    assert_password_hidden(text, shown);
});
