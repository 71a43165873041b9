//! Credentials on the command line: pool tokens (`push --token`, `--token-file`,
//! `PRESENCED_POOL_TOKEN`) and API keys (`query --api-key-file`, `PRESENCED_API_KEY`).
//!
//! A file holds the secret's bytes without one trailing newline (`\n` or `\r\n`), as the
//! cluster file's credential files do, so `echo KEY > file` works. A flag wins over the
//! environment variable; an empty variable counts as unset. Secrets are never printed.

use std::path::Path;

use anyhow::Context as _;

/// The pool token's environment variable.
pub(crate) const POOL_TOKEN_ENV: &str = "PRESENCED_POOL_TOKEN";
/// The API key's environment variable.
pub(crate) const API_KEY_ENV: &str = "PRESENCED_API_KEY";

/// Longest secret file read, in bytes (as the cluster file's credential files).
const MAX_FILE: u64 = 4096;

/// Reads a credential file, without one trailing newline.
pub(crate) fn read_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(
        meta.len() <= MAX_FILE,
        "{} is {} bytes; expected at most {MAX_FILE}",
        path.display(),
        meta.len()
    );
    let mut bytes =
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.truncate(bytes.len() - 1);
    }
    Ok(bytes)
}

/// The secret from a flag's value, a flag's file, or else the variable `env` (clap already
/// refused both flags together).
pub(crate) fn resolve(
    value: Option<&str>,
    file: Option<&Path>,
    env: &str,
) -> anyhow::Result<Option<Vec<u8>>> {
    if let Some(v) = value {
        return Ok(Some(v.as_bytes().to_vec()));
    }
    if let Some(f) = file {
        return read_file(f).map(Some);
    }
    match std::env::var_os(env) {
        Some(v) if !v.is_empty() => {
            use std::os::unix::ffi::OsStrExt as _;
            Ok(Some(v.as_bytes().to_vec()))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_lose_one_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("presenced-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (text, want) in [
            (&b"tok\n"[..], &b"tok"[..]),
            (b"tok\r\n", b"tok"),
            (b"tok\n\n", b"tok\n"),
            (b"tok", b"tok"),
        ] {
            let p = dir.join("t");
            std::fs::write(&p, text).unwrap();
            assert_eq!(read_file(&p).unwrap(), want);
            assert_eq!(
                resolve(None, Some(&p), "PRESENCED_TEST_UNSET")
                    .unwrap()
                    .unwrap(),
                want
            );
        }
        assert_eq!(
            resolve(Some("flag"), None, "PRESENCED_TEST_UNSET").unwrap(),
            Some(b"flag".to_vec())
        );
        assert_eq!(resolve(None, None, "PRESENCED_TEST_UNSET").unwrap(), None);
        assert!(read_file(&dir.join("missing")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
