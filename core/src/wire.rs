//! Byte-level building blocks shared by every binary protocol: a panic-free [`Reader`] cursor,
//! the length-prefixed frame header, and the encodings of [`Ext`] that several messages carry.
//!
//! Every frame on every presenced TCP protocol is
//!
//! ```text
//! +----------------+--------+----------------------+
//! | length: u32 BE | type:u8| body (length-1 bytes)|
//! +----------------+--------+----------------------+
//! ```
//!
//! where `length` counts the type byte and the body, is at least 1, and is checked against the
//! connection's configured maximum before anything is buffered for it. Integers are big-endian.
//!
//! Architecture Invariant: decoders never index into a slice; they read through [`Reader`],
//! which returns [`DecodeError`] instead of panicking, and reject trailing bytes.

use std::sync::Arc;

use bytes::BufMut;

use crate::model::{Ext, ExtLimits};

/// Why bytes could not be decoded. The connection that sent them must be closed; no state was
/// changed by the failed decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A frame ended before a field did.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A field holds a value the protocol does not allow.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// A length exceeds its configured limit.
    #[error("{what} of {len} exceeds the limit of {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The length announced.
        len: u64,
        /// The limit in force.
        max: u64,
    },
    /// A frame type this protocol version does not define.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// The handshake did not start with the protocol's magic.
    #[error("bad magic (not a presenced peer)")]
    BadMagic,
    /// The peer speaks a protocol version this build does not.
    #[error("unsupported protocol version {0}")]
    BadVersion(u8),
    /// A frame held more bytes than its fields.
    #[error("{0} trailing bytes in frame")]
    TrailingBytes(usize),
}

/// A cursor over a byte slice that returns errors instead of panicking.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Takes the next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// Reads a `u8`.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// Reads a big-endian `u16`.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// Reads a UTF-8 string of `n` bytes.
    pub fn str(&mut self, n: usize, what: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.take(n, what)?).map_err(|_| DecodeError::Invalid(what))
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Succeeds only if every byte was read.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

/// Size of the frame header (length and type).
pub const FRAME_HEADER: usize = 5;

/// A whole frame split off a buffer: its type, its body, and the bytes it took.
pub type Frame<'a> = (u8, &'a [u8], usize);

/// Splits one frame off the front of `buf`.
///
/// `Ok(None)`: more bytes are needed. `Ok(Some((type, body, consumed)))`: a whole frame.
/// `Err`: the length is zero or above `max_frame`; the connection must be closed.
pub fn split_frame(buf: &[u8], max_frame: u32) -> Result<Option<Frame<'_>>, DecodeError> {
    let mut r = Reader::new(buf);
    let Ok(len) = r.u32("frame length") else {
        return Ok(None);
    };
    //= docs/protocols/pool.md#framing
    //# `length` counts the type byte and the body; it is at least 1 and at most the
    //# receiver's `max-frame` limit.
    if len == 0 {
        return Err(DecodeError::Invalid("frame length 0"));
    }
    if len > max_frame {
        return Err(DecodeError::TooLarge {
            what: "frame",
            len: len.into(),
            max: max_frame.into(),
        });
    }
    let len = len as usize;
    if r.remaining() < len {
        return Ok(None);
    }
    let Ok(frame) = r.take(len, "frame") else {
        return Ok(None);
    };
    let (ty, body) = frame
        .split_first()
        .ok_or(DecodeError::Truncated("frame type"))?;
    Ok(Some((*ty, body, 4 + len)))
}

/// Writes a frame whose body `body` writes into `out`, patching the length afterwards.
pub fn put_frame(out: &mut Vec<u8>, ty: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.put_u32(0);
    out.put_u8(ty);
    body(out);
    let len = (out.len() - start - 4) as u32;
    if let Some(prefix) = out.get_mut(start..start + 4) {
        prefix.copy_from_slice(&len.to_be_bytes());
    }
}

/// Encodes extension data: `count:u8 { klen:u8 key vlen:u16 value }*`, keys ascending.
pub fn put_ext(out: &mut impl BufMut, ext: &Ext) {
    out.put_u8(ext.len() as u8);
    for (k, v) in ext.entries() {
        out.put_u8(k.len() as u8);
        out.put_slice(k.as_bytes());
        out.put_u16(v.len() as u16);
        out.put_slice(v.as_bytes());
    }
}

/// Decodes extension data written by [`put_ext`], checking `limits` before each allocation and
/// requiring strictly ascending keys (so that a decoded value re-encodes to the same bytes).
pub fn read_ext(r: &mut Reader<'_>, limits: &ExtLimits) -> Result<Arc<Ext>, DecodeError> {
    let count = usize::from(r.u8("ext count")?);
    if count > limits.max_entries {
        return Err(DecodeError::TooLarge {
            what: "ext entries",
            len: count as u64,
            max: limits.max_entries as u64,
        });
    }
    let mut entries = Vec::with_capacity(count);
    let mut prev: Option<&str> = None;
    for _ in 0..count {
        let klen = usize::from(r.u8("ext key length")?);
        if klen == 0 || klen > limits.max_key {
            return Err(DecodeError::Invalid("ext key length"));
        }
        let k = r.str(klen, "ext key")?;
        let vlen = usize::from(r.u16("ext value length")?);
        if vlen > limits.max_value {
            return Err(DecodeError::TooLarge {
                what: "ext value",
                len: vlen as u64,
                max: limits.max_value as u64,
            });
        }
        let v = r.str(vlen, "ext value")?;
        if prev.is_some_and(|p| p >= k) {
            return Err(DecodeError::Invalid("ext keys not strictly ascending"));
        }
        prev = Some(k);
        entries.push((k.to_owned(), v.to_owned()));
    }
    Ext::new(entries, limits)
        .map(Arc::new)
        .map_err(|_| DecodeError::Invalid("ext"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_frame_partial_and_limits() {
        assert_eq!(split_frame(&[0, 0, 0], 16), Ok(None));
        assert_eq!(split_frame(&[0, 0, 0, 2, 7], 16), Ok(None));
        assert_eq!(
            split_frame(&[0, 0, 0, 2, 7, 9, 1], 16),
            Ok(Some((7, &[9u8][..], 6)))
        );
        assert_eq!(
            split_frame(&[0, 0, 0, 0], 16),
            Err(DecodeError::Invalid("frame length 0"))
        );
        assert!(matches!(
            split_frame(&[0, 0, 1, 0], 16),
            Err(DecodeError::TooLarge { .. })
        ));
    }
}
