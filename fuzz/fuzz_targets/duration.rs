//! Durations as users write them (`--ttl`, `--wait`, `?ttl=`): `parse_duration`, `parse_ttl`
//! and `format_duration`.
#![no_main]

use std::time::Duration;

use cadenas::duration::MAX_DURATION;
use cadenas::{format_duration, parse_duration, parse_ttl, Error};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let parsed = parse_duration("ttl", text);
    match &parsed {
        Ok(d) => {
            assert!(
                *d >= Duration::from_millis(1) && *d <= MAX_DURATION,
                "{text:?} gave {d:?}"
            );
            // What format_duration writes reads back, rounded down to milliseconds.
            let shown = format_duration(*d);
            let back = parse_duration("ttl", &shown)
                .unwrap_or_else(|e| panic!("{shown:?} (from {text:?}) does not read back: {e}"));
            assert_eq!(
                back,
                Duration::from_millis(d.as_millis() as u64),
                "{text:?} -> {d:?} -> {shown:?}"
            );
        }
        Err(Error::InvalidInput {
            what: "ttl",
            message,
        }) => {
            // The message quotes what was given.
            assert!(message.contains(text), "{text:?}: {message}");
        }
        Err(other) => panic!("{text:?} gave {other:?}"),
    }
    // parse_ttl is parse_duration plus `none`.
    match parse_ttl(text) {
        Ok(None) => assert!(text.trim().eq_ignore_ascii_case("none"), "{text:?}"),
        Ok(Some(d)) => assert_eq!(parsed.ok(), Some(d), "{text:?}"),
        Err(e) => assert!(
            parsed.is_err(),
            "{text:?}: parse_ttl failed ({e}), parse_duration not"
        ),
    }
});
