//! `<security>` and `<api-key>`: the credentials of a node, read from files next to the cluster
//! file.
//!
//! A credential file holds the secret's bytes; one trailing newline (`\n` or `\r\n`) is not part
//! of it, so `echo KEY > file` works. Paths are relative to the cluster file's folder. A file
//! that cannot be read, or a secret that is too short or too long, is a configuration error
//! naming the attribute; the secret itself never appears in an error or in `Debug` output.

use std::fmt;
use std::path::Path;

use crate::parse::{Attrs, Parser};
use crate::ConfigError;

/// Shortest cluster secret, in bytes.
pub const MIN_CLUSTER_SECRET: usize = 32;
/// Shortest API key, in bytes.
pub const MIN_API_KEY: usize = 16;
/// Longest pool token, in bytes: the pool handshake has a one-byte length.
pub const MAX_POOL_TOKEN: usize = 255;
/// Longest secret read from a file (any kind), in bytes.
pub const MAX_SECRET_FILE: usize = 4096;

/// Bytes that must not be printed: `Debug` shows only the length.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
    /// The secret's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// One `<api-key name=".." file=".."/>`: a key the query front ends accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKey {
    /// A label for logs and metrics (1 to 64 of `[A-Za-z0-9_.-]`).
    pub name: String,
    /// The key.
    pub key: Secret,
}

/// Shared secrets (`<security>` and every `<api-key>`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Security {
    /// Token pools must present in their handshake (none: any pool is accepted). 1 to 255
    /// bytes, from `pool-token` or `pool-token-file`.
    pub pool_token: Option<Secret>,
    /// The cluster secret (`cluster-secret-file`): with it, replication and time sync are
    /// authenticated. At least 32 bytes.
    pub cluster_secret: Option<Secret>,
    /// API keys: when any is configured, the query front ends require one.
    pub api_keys: Vec<ApiKey>,
}

impl Parser<'_> {
    /// `<security cluster-secret-file pool-token pool-token-file>`.
    pub(crate) fn security(&self, a: &mut Attrs) -> Result<Security, ConfigError> {
        let inline = a.take("pool-token");
        let file = a.take("pool-token-file");
        let pool_token = match (inline, file) {
            (Some(_), Some(f)) => {
                return Err(self.err(
                    f.pos,
                    "`pool-token` and `pool-token-file` are mutually exclusive; expected one",
                ))
            }
            (Some(t), None) => {
                let bytes = t.value.into_bytes();
                check_token(bytes.len())
                    .map_err(|m| self.err(t.pos, format!("`pool-token` {m}")))?;
                Some(Secret(bytes))
            }
            (None, Some(f)) => {
                let bytes = self.secret_file(&f.value, f.pos, "pool-token-file")?;
                check_token(bytes.len()).map_err(|m| {
                    self.err(
                        f.pos,
                        format!("`pool-token-file` {:?}: the token {m}", f.value),
                    )
                })?;
                Some(Secret(bytes))
            }
            (None, None) => None,
        };
        let cluster_secret = match a.take("cluster-secret-file") {
            None => None,
            Some(f) => {
                let bytes = self.secret_file(&f.value, f.pos, "cluster-secret-file")?;
                if bytes.len() < MIN_CLUSTER_SECRET {
                    return Err(self.err(
                        f.pos,
                        format!(
                            "`cluster-secret-file` {:?} holds {} bytes; expected at least {MIN_CLUSTER_SECRET} \
                             (e.g. `head -c 32 /dev/urandom | base64 > FILE`)",
                            f.value,
                            bytes.len()
                        ),
                    ));
                }
                Some(Secret(bytes))
            }
        };
        Ok(Security {
            pool_token,
            cluster_secret,
            api_keys: Vec::new(),
        })
    }

    /// `<api-key name file>`.
    pub(crate) fn api_key(&self, a: &mut Attrs) -> Result<ApiKey, ConfigError> {
        let name = a.required(self, "name")?;
        let ok = !name.value.is_empty()
            && name.value.len() <= 64
            && name
                .value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err(self.err(
                name.pos,
                format!(
                    "bad api-key `name` {:?}: expected 1 to 64 of A-Z a-z 0-9 _ . -",
                    name.value
                ),
            ));
        }
        let file = a.required(self, "file")?;
        let key = self.secret_file(&file.value, file.pos, "file")?;
        if key.len() < MIN_API_KEY {
            return Err(self.err(
                file.pos,
                format!(
                    "api-key {:?}: file {:?} holds {} bytes; expected at least {MIN_API_KEY}",
                    name.value,
                    file.value,
                    key.len()
                ),
            ));
        }
        if key.iter().any(|b| !b.is_ascii_graphic()) {
            return Err(self.err(
                file.pos,
                format!(
                    "api-key {:?}: file {:?} must hold printable ASCII without spaces \
                     (it is sent as `Authorization: Bearer KEY`)",
                    name.value, file.value
                ),
            ));
        }
        Ok(ApiKey {
            name: name.value,
            key: Secret(key),
        })
    }

    /// Reads a credential file (relative to the cluster file's folder), without one trailing
    /// newline.
    fn secret_file(&self, path: &str, pos: usize, attr: &str) -> Result<Vec<u8>, ConfigError> {
        if path.is_empty() {
            return Err(self.err(pos, format!("`{attr}` is empty; expected a file path")));
        }
        let full = match Path::new(self.file).parent() {
            Some(dir) if Path::new(path).is_relative() => dir.join(path),
            _ => Path::new(path).to_path_buf(),
        };
        // At most one byte more than allowed is read, so `/dev/zero` or a huge file is an error,
        // not a hang.
        let mut bytes = Vec::new();
        std::fs::File::open(&full)
            .and_then(|f| {
                use std::io::Read as _;
                f.take(MAX_SECRET_FILE as u64 + 1).read_to_end(&mut bytes)
            })
            .map_err(|e| {
                self.err(
                    pos,
                    format!("`{attr}`: cannot read {}: {e}", full.display()),
                )
            })?;
        if bytes.len() > MAX_SECRET_FILE {
            return Err(self.err(
                pos,
                format!(
                    "`{attr}`: {} is over {MAX_SECRET_FILE} bytes; expected a short secret",
                    full.display()
                ),
            ));
        }
        Ok(strip_newline(bytes))
    }
}

/// Drops one trailing `\n` or `\r\n`.
pub(crate) fn strip_newline(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    bytes
}

fn check_token(len: usize) -> Result<(), String> {
    match len {
        0 => Err("is empty; expected 1 to 255 bytes (leave it out to accept any pool)".into()),
        n if n > MAX_POOL_TOKEN => Err(format!(
            "is {n} bytes; expected at most {MAX_POOL_TOKEN} (the pool handshake's limit)"
        )),
        _ => Ok(()),
    }
}
