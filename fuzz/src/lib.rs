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
/// intended password shifted by one (`a`→`b`, `z`→`a`, `9`→`0`), the rest kept. If what
/// cadenas shows differs between the two, it shows something of the password.
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
