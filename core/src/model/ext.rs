//! Extension data ([`Ext`]): the small map of UTF-8 keys to UTF-8 values that a pool event may
//! carry, replaced as a whole by the next event that carries one, and the [`ExtLimits`] every
//! builder and decoder checks before allocating.
//!
//! Limits are values, never literals at a call site: the pool protocol uses the node's
//! configured ones (`<limits max-ext-*>`), and decoders of already-accepted data use
//! [`ExtLimits::WIRE`]. The encoding itself is in [`crate::wire`]; this module knows no bytes.

/// Limits on extension data; every decoder checks them before allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtLimits {
    /// Most entries per user.
    pub max_entries: usize,
    /// Longest key in bytes (at most 255: the key length is one byte on the wire).
    pub max_key: usize,
    /// Longest value in bytes (at most 65535).
    pub max_value: usize,
}

impl ExtLimits {
    /// The widest limits the encoding can carry (a one-byte entry count, a one-byte key length,
    /// a two-byte value length): any extension data that can be encoded is within them.
    ///
    /// Decoders of data that some node already accepted (replication records, query results)
    /// use these instead of the receiver's configured limits: a peer cannot exceed them, and a
    /// node must never refuse a record another node took under different `<limits>`.
    pub const WIRE: Self = Self {
        max_entries: 255,
        max_key: 255,
        max_value: 65_535,
    };
}

/// The defaults of `<limits max-ext-entries max-ext-key-bytes max-ext-value-bytes>`.
impl Default for ExtLimits {
    fn default() -> Self {
        Self {
            max_entries: 16,
            max_key: 64,
            max_value: 256,
        }
    }
}

/// Why extension data was refused. Nothing was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExtError {
    /// More entries than [`ExtLimits::max_entries`].
    #[error("more than {0} extension entries")]
    TooManyEntries(usize),
    /// A key is empty or longer than [`ExtLimits::max_key`].
    #[error("extension key must be 1 to {0} bytes")]
    BadKey(usize),
    /// A value is longer than [`ExtLimits::max_value`].
    #[error("extension value longer than {0} bytes")]
    ValueTooLong(usize),
    /// The same key twice.
    #[error("duplicate extension key")]
    DuplicateKey,
}

/// Extension data: a small map of UTF-8 keys to UTF-8 values, replaced as a whole by an event that
/// carries it.
///
/// INVARIANT: entries are sorted by key, keys are unique and non-empty, and the sizes were within
/// the [`ExtLimits`] in force when the value was built.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ext {
    entries: Box<[(Box<str>, Box<str>)]>,
}

impl Ext {
    /// Builds extension data from entries in any order, checking `limits`.
    pub fn new(mut entries: Vec<(String, String)>, limits: &ExtLimits) -> Result<Self, ExtError> {
        if entries.len() > limits.max_entries {
            return Err(ExtError::TooManyEntries(limits.max_entries));
        }
        let max_key = limits.max_key.min(ExtLimits::WIRE.max_key);
        let max_value = limits.max_value.min(ExtLimits::WIRE.max_value);
        for (k, v) in &entries {
            if k.is_empty() || k.len() > max_key {
                return Err(ExtError::BadKey(max_key));
            }
            if v.len() > max_value {
                return Err(ExtError::ValueTooLong(max_value));
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        if entries
            .windows(2)
            .any(|w| w.first().map(|a| &a.0) == w.get(1).map(|b| &b.0))
        {
            return Err(ExtError::DuplicateKey);
        }
        let entries = entries
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Ok(Self { entries })
    }

    /// The entries, sorted by key.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_limits_are_enforced() {
        let l = ExtLimits {
            max_entries: 1,
            max_key: 3,
            max_value: 2,
        };
        let e = |v: &[(&str, &str)]| {
            Ext::new(
                v.iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
                &l,
            )
        };
        assert_eq!(
            e(&[("a", "1"), ("b", "2")]),
            Err(ExtError::TooManyEntries(1))
        );
        assert_eq!(e(&[("abcd", "1")]), Err(ExtError::BadKey(3)));
        assert_eq!(e(&[("", "1")]), Err(ExtError::BadKey(3)));
        assert_eq!(e(&[("a", "123")]), Err(ExtError::ValueTooLong(2)));
        assert!(e(&[("a", "12")]).is_ok());
    }
}
