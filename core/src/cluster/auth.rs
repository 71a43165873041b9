//! Cluster authentication: `docs/protocols/replication.md#authentication` and
//! `docs/protocols/time-sync.md#authentication`.
//!
//! With `<security cluster-secret-file>`, every node holds the same secret `S` and:
//!
//! - a replication connection is mutually authenticated before any state-bearing message: the
//!   sender's `HELLO` carries a fresh nonce `Ns`; the receiver answers `CHALLENGE(Nr, proof_r)`,
//!   the sender checks `proof_r` and answers `AUTH(proof_s)`; only then does the receiver's node
//!   see the `HELLO`. Both proofs are HMAC-SHA256 under `S` of the whole transcript (the `HELLO`
//!   body, which holds `Ns`, and `Nr`) with distinct labels, so neither can be replayed as the
//!   other, nor on another connection;
//! - every frame after `AUTH`, in both directions, ends with a 16-byte tag: HMAC-SHA256 under a
//!   per-connection, per-direction key derived from `S` and the transcript, over the frame's
//!   sequence number (implicit: 0, 1, 2 … per direction) and the frame's bytes. A replayed,
//!   reordered, dropped-then-spliced, truncated or modified frame fails its tag;
//! - every time-sync datagram ends with a tag under a key derived from `S`, over the whole
//!   datagram, which carries the sender's incarnation and a per-process counter (replay
//!   protection is in the node: `super::node`).
//!
//! The primitives are RustCrypto's `hmac` and `sha2`; every comparison of a proof or a tag is
//! `Mac::verify_*` (constant time). Nonces come from the driver (the OS random source): this
//! module is sans-IO.
//!
//! Without a secret nothing here runs; `HELLO.auth` is 0 and frames carry no tag.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of a handshake nonce.
pub const NONCE_LEN: usize = 16;
/// Bytes of a handshake proof (a whole HMAC-SHA256).
pub const PROOF_LEN: usize = 32;
/// Bytes of a frame's or a datagram's tag (HMAC-SHA256 truncated, RFC 2104 §5).
pub const TAG_LEN: usize = 16;

/// A handshake nonce.
pub type Nonce = [u8; NONCE_LEN];
/// A handshake proof.
pub type Proof = [u8; PROOF_LEN];

const LABEL_CHALLENGE: &[u8] = b"presenced repl v2 challenge";
const LABEL_AUTH: &[u8] = b"presenced repl v2 auth";
const LABEL_S2R: &[u8] = b"presenced repl v2 sender-to-receiver";
const LABEL_R2S: &[u8] = b"presenced repl v2 receiver-to-sender";
const LABEL_TIME: &[u8] = b"presenced time v2";

/// A frame or datagram failed authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Shorter than a tag.
    #[error("too short to carry an authentication tag")]
    Short,
    /// The tag does not match.
    #[error("bad authentication tag")]
    BadTag,
    /// A handshake proof does not match.
    #[error("bad authentication proof")]
    BadProof,
}

/// The cluster secret, ready to derive keys and proofs.
#[derive(Clone)]
pub struct ClusterKey {
    mac: HmacSha256,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

/// Which end of a replication connection this node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Dialled the connection and sent `HELLO`.
    Sender,
    /// Accepted it.
    Receiver,
}

impl ClusterKey {
    /// Keys HMAC with the secret (any length; config requires at least 32 bytes).
    pub fn new(secret: &[u8]) -> Self {
        // HMAC takes keys of any length, so this cannot fail.
        let Ok(mac) = HmacSha256::new_from_slice(secret) else {
            unreachable_hmac()
        };
        Self { mac }
    }

    /// HMAC(S, label ‖ 0x00 ‖ Nr ‖ hello_body): labels hold no 0 byte and `Nr` has a fixed
    /// length, so every input has one reading.
    fn prf(&self, label: &[u8], nonce_r: &Nonce, hello_body: &[u8]) -> HmacSha256 {
        let mut m = self.mac.clone();
        m.update(label);
        m.update(&[0]);
        m.update(nonce_r);
        m.update(hello_body);
        m
    }

    /// The receiver's proof in `CHALLENGE`.
    pub fn challenge_proof(&self, hello_body: &[u8], nonce_r: &Nonce) -> Proof {
        self.prf(LABEL_CHALLENGE, nonce_r, hello_body)
            .finalize()
            .into_bytes()
            .into()
    }

    /// The sender's proof in `AUTH`.
    pub fn auth_proof(&self, hello_body: &[u8], nonce_r: &Nonce) -> Proof {
        self.prf(LABEL_AUTH, nonce_r, hello_body)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Checks the receiver's proof (constant time).
    pub fn verify_challenge(
        &self,
        hello_body: &[u8],
        nonce_r: &Nonce,
        proof: &Proof,
    ) -> Result<(), AuthError> {
        self.prf(LABEL_CHALLENGE, nonce_r, hello_body)
            .verify_slice(proof)
            .map_err(|_| AuthError::BadProof)
    }

    /// Checks the sender's proof (constant time).
    pub fn verify_auth(
        &self,
        hello_body: &[u8],
        nonce_r: &Nonce,
        proof: &Proof,
    ) -> Result<(), AuthError> {
        self.prf(LABEL_AUTH, nonce_r, hello_body)
            .verify_slice(proof)
            .map_err(|_| AuthError::BadProof)
    }

    /// The frame keys of one authenticated connection, for `side`.
    pub fn session(&self, hello_body: &[u8], nonce_r: &Nonce, side: Side) -> Session {
        let key = |label| -> HmacSha256 {
            let k = self.prf(label, nonce_r, hello_body).finalize().into_bytes();
            let Ok(m) = HmacSha256::new_from_slice(&k) else {
                unreachable_hmac()
            };
            m
        };
        let (send, recv) = match side {
            Side::Sender => (key(LABEL_S2R), key(LABEL_R2S)),
            Side::Receiver => (key(LABEL_R2S), key(LABEL_S2R)),
        };
        Session {
            send,
            recv,
            send_seq: 0,
            recv_seq: 0,
        }
    }

    /// The key of time-sync datagrams.
    pub fn time_key(&self) -> TimeKey {
        let mut m = self.mac.clone();
        m.update(LABEL_TIME);
        let k = m.finalize().into_bytes();
        let Ok(mac) = HmacSha256::new_from_slice(&k) else {
            unreachable_hmac()
        };
        TimeKey { mac }
    }
}

/// `new_from_slice` fails only for MACs with fixed key sizes, which HMAC is not.
#[cold]
fn unreachable_hmac() -> ! {
    unreachable!("HMAC accepts keys of any length")
}

/// The frame keys and sequence numbers of one authenticated replication connection.
#[derive(Clone)]
pub struct Session {
    send: HmacSha256,
    recv: HmacSha256,
    send_seq: u64,
    recv_seq: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("send_seq", &self.send_seq)
            .field("recv_seq", &self.recv_seq)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Seals the frame that starts at `buf[start]` and runs to the end of `buf` (as
    /// [`crate::wire::put_frame`] wrote it): adds [`TAG_LEN`] to its length field and appends
    /// the tag over the sequence number and the frame's bytes.
    pub fn seal(&mut self, buf: &mut Vec<u8>, start: usize) {
        let Some(prefix) = buf.get_mut(start..start + 4) else {
            return;
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(prefix);
        let len = u32::from_be_bytes(len).saturating_add(TAG_LEN as u32);
        prefix.copy_from_slice(&len.to_be_bytes());
        let mut m = self.send.clone();
        m.update(&self.send_seq.to_be_bytes());
        m.update(buf.get(start..).unwrap_or_default());
        let tag = m.finalize().into_bytes();
        buf.extend_from_slice(tag.get(..TAG_LEN).unwrap_or_default());
        self.send_seq = self.send_seq.wrapping_add(1);
    }

    /// Checks the tag of one whole received frame (`frame` = length, type, body, tag, as
    /// [`crate::wire::split_frame`] delimited it) and returns the body without the tag.
    pub fn open<'a>(&mut self, frame: &'a [u8]) -> Result<&'a [u8], AuthError> {
        if frame.len() < 5 + TAG_LEN {
            return Err(AuthError::Short);
        }
        let (signed, tag) = frame.split_at(frame.len() - TAG_LEN);
        let mut m = self.recv.clone();
        m.update(&self.recv_seq.to_be_bytes());
        m.update(signed);
        m.verify_truncated_left(tag)
            .map_err(|_| AuthError::BadTag)?;
        self.recv_seq = self.recv_seq.wrapping_add(1);
        Ok(signed.get(5..).unwrap_or_default())
    }
}

/// The key of time-sync datagrams.
#[derive(Clone)]
pub struct TimeKey {
    mac: HmacSha256,
}

impl std::fmt::Debug for TimeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TimeKey(..)")
    }
}

impl TimeKey {
    /// The tag of a datagram's bytes before the tag.
    pub fn tag(&self, signed: &[u8]) -> [u8; TAG_LEN] {
        let mut m = self.mac.clone();
        m.update(signed);
        let full = m.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(full.get(..TAG_LEN).unwrap_or(&[0; TAG_LEN]));
        tag
    }

    /// Checks a datagram whose last [`TAG_LEN`] bytes are its tag (constant time).
    pub fn verify(&self, datagram: &[u8]) -> Result<(), AuthError> {
        if datagram.len() < TAG_LEN {
            return Err(AuthError::Short);
        }
        let (signed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        let mut m = self.mac.clone();
        m.update(signed);
        m.verify_truncated_left(tag).map_err(|_| AuthError::BadTag)
    }
}

#[cfg(all(test, not(loom)))]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::wire::{put_frame, split_frame};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn pair() -> (Session, Session) {
        let k = ClusterKey::new(SECRET);
        let hello = b"hello body with Ns";
        let nr = [7u8; NONCE_LEN];
        (
            k.session(hello, &nr, Side::Sender),
            k.session(hello, &nr, Side::Receiver),
        )
    }

    fn frame(s: &mut Session, ty: u8, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_frame(&mut out, ty, |b| b.extend_from_slice(body));
        s.seal(&mut out, 0);
        out
    }

    #[test]
    fn sealed_frames_open_in_order_on_the_other_side() {
        let (mut a, mut b) = pair();
        for i in 0..5u8 {
            let f = frame(&mut a, 0x10, &[i; 9]);
            let (ty, _, n) = split_frame(&f, 1 << 20).unwrap().unwrap();
            assert_eq!((ty, n), (0x10, f.len()));
            assert_eq!(b.open(&f).unwrap(), &[i; 9]);
        }
        // And the other way, with its own key.
        let f = frame(&mut b, 0x11, b"ack");
        assert_eq!(a.open(&f).unwrap(), b"ack");
    }

    #[test]
    fn replayed_reordered_modified_or_reflected_frames_fail() {
        let (mut a, mut b) = pair();
        let f1 = frame(&mut a, 0x10, b"one");
        let f2 = frame(&mut a, 0x10, b"two");
        assert_eq!(b.open(&f2), Err(AuthError::BadTag), "reordered");
        assert_eq!(b.open(&f1).unwrap(), b"one");
        assert_eq!(b.open(&f1), Err(AuthError::BadTag), "replayed");
        let mut bad = f2.clone();
        bad[6] ^= 1;
        assert_eq!(b.open(&bad), Err(AuthError::BadTag), "modified");
        // A frame reflected back to its sender fails: each direction has its own key.
        let (mut a2, _) = pair();
        let g = frame(&mut a2, 0x20, b"hb");
        let (mut a3, _) = pair();
        assert_eq!(a3.open(&g), Err(AuthError::BadTag));
        assert_eq!(b.open(&f2[..4]), Err(AuthError::Short));
    }

    #[test]
    fn proofs_bind_the_transcript_and_the_secret() {
        let k = ClusterKey::new(SECRET);
        let nr = [1u8; NONCE_LEN];
        let p = k.challenge_proof(b"hello", &nr);
        assert!(k.verify_challenge(b"hello", &nr, &p).is_ok());
        assert!(k.verify_challenge(b"hellp", &nr, &p).is_err());
        assert!(k.verify_challenge(b"hello", &[2; NONCE_LEN], &p).is_err());
        // A challenge proof is not an auth proof.
        assert!(k.verify_auth(b"hello", &nr, &p).is_err());
        let other = ClusterKey::new(b"another secret of at least 32 bytes");
        assert!(other.verify_challenge(b"hello", &nr, &p).is_err());
        assert!(other
            .verify_auth(b"hello", &nr, &k.auth_proof(b"hello", &nr))
            .is_err());
    }

    #[test]
    fn datagram_tags_detect_changes() {
        let k = ClusterKey::new(SECRET).time_key();
        let mut d = b"PRST\x02\x01 some fields".to_vec();
        let tag = k.tag(&d);
        d.extend_from_slice(&tag);
        assert!(k.verify(&d).is_ok());
        d[7] ^= 0x80;
        assert_eq!(k.verify(&d), Err(AuthError::BadTag));
        assert_eq!(k.verify(&d[..3]), Err(AuthError::Short));
    }
}
