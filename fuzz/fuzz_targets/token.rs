//! Tokens (`cadenas release TOKEN`, `Locks::restore`). Every input is read twice: as token
//! text (decoding never panics, errors are typed, and a token that decodes re-encodes to one
//! that decodes the same), and as the fields of a token (a token of valid fields decodes to
//! the same fields; of invalid fields, is refused).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use cadenas::fuzzing::Token;
use cadenas::Error;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Fields {
    key: String,
    namespace: Option<String>,
    owner: String,
    fence: Option<u64>,
    ttl_ms: Option<u64>,
}

fn valid(f: &Fields) -> bool {
    let ns_ok = f.namespace.as_ref().is_none_or(|ns| {
        (1..=64).contains(&ns.len())
            && ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
    });
    let key_len = f.key.len() + f.namespace.as_ref().map_or(0, |ns| ns.len() + 1);
    ns_ok
        && !f.key.is_empty()
        && !f.key.contains('\0')
        && key_len <= 255
        && !f.owner.is_empty()
        && f.owner.len() <= 255
        && !f.owner.contains('\0')
        && f.ttl_ms
            .is_none_or(|t| (1..=365 * 24 * 3600 * 1000).contains(&t))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match Token::decode(text) {
            Ok(t) => {
                let again = Token::decode(&t.encode())
                    .unwrap_or_else(|e| panic!("{text:?} decoded to {t:?}, re-encoded: {e}"));
                assert_eq!(again, t, "{text:?}");
            }
            Err(Error::InvalidInput { what, .. }) => assert!(
                ["token", "key", "namespace", "owner", "ttl"].contains(&what),
                "{text:?}: {what}"
            ),
            Err(other) => panic!("{text:?} gave {other:?}"),
        }
    }
    let Ok(f) = Fields::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let token = Token {
        key: f.key.clone(),
        namespace: f.namespace.clone(),
        owner: f.owner.clone(),
        fence: f.fence,
        ttl_ms: f.ttl_ms,
        permits: None,
        shared: false,
        ttl: f.ttl_ms.map(std::time::Duration::from_millis),
    };
    let text = token.encode();
    match Token::decode(&text) {
        Ok(back) => {
            assert!(valid(&f), "{f:?} is not valid but its token decodes");
            assert_eq!(back, token);
        }
        Err(Error::InvalidInput { .. }) => assert!(!valid(&f), "{f:?} is valid but refused"),
        Err(other) => panic!("{f:?} gave {other:?}"),
    }
    // A damaged token is refused: drop its last character.
    let mut cut = text.clone();
    cut.pop();
    assert!(Token::decode(&cut).is_err(), "{cut:?} decodes");
});
