//! API keys of the query front ends (raw TCP, HTTP JSON, SOAP, `/v1/cluster`, `/metrics`):
//! [`ApiKeys`], the set configured by `<api-key name file>`, and [`ApiKeys::check`], the one
//! place a presented key is judged, for every front end.
//!
//! Invariants:
//! - With no key configured, everything is [`AuthOutcome::Open`]: the front ends behave as
//!   before keys existed.
//! - A presented key is compared with **every** configured key in time that depends only on the
//!   lengths involved, never on where the bytes differ nor on which key matched
//!   ([`constant_time_eq`] over all of them, results folded without branching out early).
//! - The outcome tells the node (metrics) whether the key was missing or wrong; what the client
//!   is told is the same for both (each front end writes one fixed refusal).
//!
//! Pure code: no I/O, no clock, no allocation per check.

/// A set of named keys. Empty: the front ends are open.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ApiKeys {
    keys: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: the keys never reach a log.
        f.debug_list()
            .entries(self.keys.iter().map(|(n, _)| n))
            .finish()
    }
}

/// What a client presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    /// No credentials at all (no `Authorization` header, a v1 `HELLO`, an empty key).
    Missing,
    /// Credentials that are not a key in the expected form (another HTTP scheme, no token).
    Malformed,
    /// A key, to be compared.
    Key(&'a [u8]),
}

/// The verdict on one request or connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// No key is configured: nothing was checked.
    Open,
    /// The key matched the configured key with this index (see [`ApiKeys::name`]).
    Granted(usize),
    /// Keys are configured and none was presented.
    Missing,
    /// Keys are configured and what was presented is malformed or matches none.
    Invalid,
}

impl AuthOutcome {
    /// Whether the request may be served.
    pub fn allowed(self) -> bool {
        matches!(self, Self::Open | Self::Granted(_))
    }

    /// The `outcome` label of the metric: `granted`, `missing` or `invalid` (`open` is not
    /// counted by the node).
    pub fn label(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Granted(_) => "granted",
            Self::Missing => "missing",
            Self::Invalid => "invalid",
        }
    }
}

impl ApiKeys {
    /// The keys `(name, key bytes)`, in configuration order.
    pub fn new(keys: impl IntoIterator<Item = (String, Vec<u8>)>) -> Self {
        Self {
            keys: keys.into_iter().collect(),
        }
    }

    /// Whether no key is configured (the front ends are open).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The name of key `index`.
    pub fn name(&self, index: usize) -> Option<&str> {
        self.keys.get(index).map(|(n, _)| n.as_str())
    }

    /// Judges what a client presented. Compares against every key, whatever matches.
    pub fn check(&self, presented: Presented<'_>) -> AuthOutcome {
        if self.keys.is_empty() {
            return AuthOutcome::Open;
        }
        let key = match presented {
            Presented::Missing => return AuthOutcome::Missing,
            Presented::Key([]) => return AuthOutcome::Missing,
            Presented::Malformed => return AuthOutcome::Invalid,
            Presented::Key(k) => k,
        };
        // Fold over all keys: the index of the last match (configured keys are distinct in
        // practice; should two be equal, either name is right).
        let mut found = usize::MAX;
        for (i, (_, k)) in self.keys.iter().enumerate() {
            let hit = usize::from(constant_time_eq(k, key));
            // Branch-free select: `found` becomes `i` when hit is 1.
            let mask = hit.wrapping_neg();
            found = (i & mask) | (found & !mask);
        }
        if found == usize::MAX {
            AuthOutcome::Invalid
        } else {
            AuthOutcome::Granted(found)
        }
    }
}

/// Compares secrets in time independent of where they differ (it depends on the lengths only).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(all(test, not(loom)))]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys::new([
            ("portal".to_owned(), b"0123456789abcdef".to_vec()),
            ("wiki".to_owned(), b"fedcba9876543210".to_vec()),
        ])
    }

    #[test]
    fn outcomes() {
        let k = keys();
        let check = |p| k.check(p);
        assert_eq!(
            check(Presented::Key(b"0123456789abcdef")),
            AuthOutcome::Granted(0)
        );
        assert_eq!(
            check(Presented::Key(b"fedcba9876543210")),
            AuthOutcome::Granted(1)
        );
        assert_eq!(
            check(Presented::Key(b"fedcba987654321")),
            AuthOutcome::Invalid
        );
        assert_eq!(
            check(Presented::Key(b"fedcba98765432100")),
            AuthOutcome::Invalid
        );
        assert_eq!(check(Presented::Key(b"")), AuthOutcome::Missing);
        assert_eq!(check(Presented::Missing), AuthOutcome::Missing);
        assert_eq!(check(Presented::Malformed), AuthOutcome::Invalid);
        assert_eq!(k.name(1), Some("wiki"));
        assert!(!format!("{k:?}").contains("0123"));
        let open = ApiKeys::default();
        assert_eq!(open.check(Presented::Missing), AuthOutcome::Open);
        assert!(open.check(Presented::Key(b"x")).allowed());
        assert!(!AuthOutcome::Invalid.allowed());
    }
}
