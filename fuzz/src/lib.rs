//! Helpers shared by the fuzz targets.

use std::cell::RefCell;

/// URL schemes of stores on the network: their URLs may carry a user and a password.
pub const NETWORK_SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    "redis+cluster",
    "rediss+cluster",
    "redlock",
    "redlock+tls",
    "postgres",
    "postgresql",
    "mysql",
    "mariadb",
];

/// The stretch of `text` a user most likely meant as the password: what sits between the
/// `:` after `scheme:` (and any slashes) plus the user name, and the last `@`, when the scheme
/// is a network store's and the stretch has a letter or digit in it.
pub fn intended_password(text: &str) -> Option<std::ops::Range<usize>> {
    let (scheme, _) = text.split_once(':')?;
    let bare = scheme.trim_start_matches(|c: char| c <= ' ');
    if !NETWORK_SCHEMES.contains(&bare.to_ascii_lowercase().as_str()) {
        return None;
    }
    let mut start = scheme.len() + 1;
    while text[start..].starts_with('/') {
        start += 1;
    }
    let at = start + text[start..].rfind('@')?;
    let colon = start + text[start..at].find(':')?;
    // A user name with an authority delimiter in it means the `:` is not the password's.
    if text[start..colon].contains(['/', '?', '#']) {
        return None;
    }
    let range = colon + 1..at;
    text[range.clone()]
        .contains(|c: char| c.is_ascii_alphanumeric())
        .then_some(range)
}

/// `text` with another password of the same shape: every ASCII letter and digit of the
/// intended password shifted by one (`a`→`b`, `z`→`a`, `9`→`0`), the rest kept.
pub fn with_other_password(text: &str) -> Option<String> {
    let range = intended_password(text)?;
    let shifted: String = text[range.clone()]
        .chars()
        .map(|c| match c {
            'z' => 'a',
            'Z' => 'A',
            '9' => '0',
            c if c.is_ascii_alphanumeric() => (c as u8 + 1) as char,
            c => c,
        })
        .collect();
    Some(format!(
        "{}{shifted}{}",
        &text[..range.start],
        &text[range.end..]
    ))
}

/// Checks that what cadenas shows of `text` (`shown`) reveals nothing of its password.
///
/// When the password has no URL delimiter (`/ ? # @ \`) in it, the URL has the same shape
/// with any password, so what is shown must not change at all when only the password does.
/// With a delimiter, the password changes the shape (a port may become valid or not), so the
/// check is on its pieces: no run of 4 or more letters and digits of it may show, unless it
/// shows just the same with the other password (a word of the message, not the password).
pub fn assert_password_hidden(text: &str, shown: impl Fn(&str) -> String) {
    let (Some(range), Some(twin)) = (intended_password(text), with_other_password(text)) else {
        return;
    };
    let (mine, other) = (shown(text), shown(&twin));
    let stretch = &text[range];
    if !stretch.contains(['/', '?', '#', '@', '\\']) {
        assert_eq!(
            mine, other,
            "what is shown of {text:?} and {twin:?} differs"
        );
        return;
    }
    let (mine_l, other_l) = (mine.to_ascii_lowercase(), other.to_ascii_lowercase());
    for piece in stretch
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| p.len() >= 4)
    {
        let piece = piece.to_ascii_lowercase();
        assert!(
            !mine_l.contains(&piece) || other_l.contains(&piece),
            "{piece:?} of the password of {text:?} shows in {mine:?}"
        );
    }
}

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// Runs `future` on a current-thread runtime kept for the whole fuzzing run.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    RUNTIME.with(|rt| {
        let mut rt = rt.borrow_mut();
        let rt = rt.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime")
        });
        rt.block_on(future)
    })
}
