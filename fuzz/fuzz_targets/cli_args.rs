//! The `cadenas` command line: arguments (split at NUL bytes) parsed by clap and run against a
//! fresh memory store (`exec` runs as `acquire` once its flags are checked, so no command is
//! started; `bench` only checks its flags). Properties: no panic (clap's own checks of the
//! command definition included); never "store unreachable" or "lost" codes; the exit code and
//! the error message of cadenas (not clap's echo of the arguments) reveal nothing of the
//! password of a store URL (see `assert_password_hidden`).
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use cadenas_fuzz::assert_password_hidden;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut args = vec![OsString::from("cadenas")];
    args.extend(
        data.split(|&b| b == 0)
            .map(|a| OsString::from_vec(a.to_vec())),
    );
    let (code, message) = cadenas_cli::fuzz_run(args.clone());
    assert!(
        code != cadenas_cli::EXIT_UNAVAILABLE && code != cadenas_cli::EXIT_LOST,
        "{args:?} exited {code}: {message}"
    );
    // Messages of cadenas (not clap's, which quote the arguments) reveal nothing of the
    // password of a store URL.
    if message.starts_with("error:") {
        return;
    }
    for (i, arg) in args.iter().enumerate() {
        let Some(arg) = arg.to_str() else { continue };
        // Only store URLs: `--store URL` or `--store=URL`.
        let (flag, url) = match arg.strip_prefix("--store=") {
            Some(url) => ("--store=", url),
            None if i > 0 && args[i - 1] == "--store" => ("", arg),
            None => continue,
        };
        assert_password_hidden(url, |url| {
            let mut run = args.clone();
            run[i] = OsString::from(format!("{flag}{url}"));
            let (code, message) = cadenas_cli::fuzz_run(run);
            // clap's errors quote arguments: not ours to judge.
            if message.starts_with("error:") {
                return "clap error".to_owned();
            }
            format!("{code} {message}")
        });
    }
});
