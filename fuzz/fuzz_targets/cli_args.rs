//! The `cadenas` command line: arguments (split at NUL bytes) parsed by clap and run against a
//! fresh memory store (`exec` runs as `acquire` once its flags are checked, so no command is
//! started; `bench` only checks its flags). Properties: no panic (clap's own checks of the
//! command definition included); never "store unreachable" or "lost" codes; the exit code and
//! the error message of cadenas (not clap's echo of the arguments) do not change when only
//! the password of a store URL changes.
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use cadenas_fuzz::with_other_password;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut args = vec![OsString::from("cadenas")];
    args.extend(
        data.split(|&b| b == 0)
            .map(|a| OsString::from_vec(a.to_vec())),
    );
    let (code, message) = cadenas::fuzzing::cli_run(args.clone());
    assert!(
        code != cadenas::cli::EXIT_UNAVAILABLE && code != cadenas::cli::EXIT_LOST,
        "{args:?} exited {code}: {message}"
    );
    // Messages of cadenas (not clap's, which quote the arguments) do not change when only
    // the password of a store URL does.
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
        let Some(twin) = with_other_password(url) else {
            continue;
        };
        let mut other = args.clone();
        other[i] = OsString::from(format!("{flag}{twin}"));
        let (other_code, other_message) = cadenas::fuzzing::cli_run(other.clone());
        if other_message.starts_with("error:") {
            continue;
        }
        assert_eq!(
            (code, &message),
            (other_code, &other_message),
            "{args:?} and {other:?}"
        );
    }
});
