//! Time sync over UDP: `docs/protocols/time-sync.md`.
//!
//! The standard-time server (the time master, lowest live sequence number) probes each follower
//! NTP-style. A probe carries the master's send time `t1`; the follower answers with `t1`, its
//! receive time `t2` and its send time `t3`; the master notes the arrival time `t4`. Then
//!
//! ```text
//! offset θ = ((t2 - t1) + (t3 - t4)) / 2      (follower clock minus master clock)
//! delay  δ = (t4 - t1) - (t3 - t2)
//! ```
//!
//! The [`Estimator`] keeps a window of samples per follower and trusts the one with the lowest
//! delay (queueing only ever adds delay, and the error of θ is at most δ/2). When that sample says
//! the follower is off by more than the tolerance, the master sends `CORRECT` with `-θ`; the
//! follower adds it to its correction. All times are cluster time in µs.
//!
//! Terms fence a stale master: a follower applies a correction only from the node it considers
//! time master, at a term no older than the newest it has seen.

use bytes::BufMut;

use crate::cluster::auth::{TimeKey, TAG_LEN};
use crate::wire::{DecodeError, Reader};

/// Magic at the start of every datagram: ASCII `PRST`.
pub const MAGIC: [u8; 4] = *b"PRST";
/// The protocol version this build speaks.
pub const VERSION: u8 = 2;
/// Receive buffer for one datagram. Every valid packet is far smaller (at most 44 bytes); a
/// longer datagram is truncated to this and then refused by the decoder (trailing or missing
/// bytes), so a peer cannot make a node allocate for a datagram. A protocol constant, not a
/// tunable: it is not in `config::Limits`.
pub const MAX_DATAGRAM: usize = 512;

/// Bytes after a packet's fields: the sender's incarnation, its datagram counter and the tag.
pub const TRAILER: usize = 8 + 8 + TAG_LEN;

/// Who sent a datagram and its place in the sender's sequence: every datagram carries it, and a
/// receiver accepts a member's datagrams only from the incarnation that member announced in its
/// (authenticated) replication `HELLO`, each counter once and in increasing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Envelope {
    /// The sender's incarnation (its replication `HELLO.incarnation`).
    pub incarnation: u64,
    /// Strictly increasing per sender process, from 1.
    pub counter: u64,
}

/// A time-sync datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packet {
    /// Master → follower.
    Probe {
        /// The master's term.
        term: u64,
        /// The master's id.
        from: u16,
        /// Probe number (echoed).
        seq: u32,
        /// Master time at send, µs.
        t1: i64,
    },
    /// Follower → master.
    Reply {
        /// The term of the probe.
        term: u64,
        /// The follower's id.
        from: u16,
        /// The probe number.
        seq: u32,
        /// Echo of the probe's `t1`.
        t1: i64,
        /// Follower time at receive, µs.
        t2: i64,
        /// Follower time at send, µs.
        t3: i64,
    },
    /// Master → follower: add `adjust_us` to your correction (0: confirmed within tolerance).
    Correct {
        /// The master's term.
        term: u64,
        /// The master's id.
        from: u16,
        /// The number of the probe whose sample this is based on: a follower applies each
        /// `(from, term, seq)` once, so a duplicated datagram is harmless.
        seq: u32,
        /// The adjustment, µs.
        adjust_us: i64,
    },
}

impl Packet {
    /// Appends the datagram to `out`: header, fields, `env`, and the tag under `key` (16 zero
    /// bytes without a cluster secret).
    pub fn encode(&self, env: Envelope, key: Option<&TimeKey>, out: &mut Vec<u8>) {
        let start = out.len();
        self.encode_fields(out);
        out.put_u64(env.incarnation);
        out.put_u64(env.counter);
        let tag = match key {
            Some(k) => k.tag(out.get(start..).unwrap_or_default()),
            None => [0; TAG_LEN],
        };
        out.put_slice(&tag);
    }

    fn encode_fields(&self, out: &mut Vec<u8>) {
        out.put_slice(&MAGIC);
        out.put_u8(VERSION);
        match *self {
            Self::Probe {
                term,
                from,
                seq,
                t1,
            } => {
                out.put_u8(1);
                out.put_u64(term);
                out.put_u16(from);
                out.put_u32(seq);
                out.put_i64(t1);
            }
            Self::Reply {
                term,
                from,
                seq,
                t1,
                t2,
                t3,
            } => {
                out.put_u8(2);
                out.put_u64(term);
                out.put_u16(from);
                out.put_u32(seq);
                out.put_i64(t1);
                out.put_i64(t2);
                out.put_i64(t3);
            }
            Self::Correct {
                term,
                from,
                seq,
                adjust_us,
            } => {
                out.put_u8(3);
                out.put_u64(term);
                out.put_u16(from);
                out.put_u32(seq);
                out.put_i64(adjust_us);
            }
        }
    }

    /// Decodes one datagram. The tag is not checked here: a node with a cluster secret checks
    /// it first ([`TimeKey::verify`]); one without ignores it.
    pub fn decode(data: &[u8]) -> Result<(Self, Envelope), DecodeError> {
        let mut r = Reader::new(data);
        if r.array::<4>("magic")? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let v = r.u8("version")?;
        if v != VERSION {
            return Err(DecodeError::BadVersion(v));
        }
        let i64_ = |r: &mut Reader<'_>, w| r.u64(w).map(|x| x as i64);
        let p = match r.u8("type")? {
            1 => Self::Probe {
                term: r.u64("term")?,
                from: r.u16("from")?,
                seq: r.u32("seq")?,
                t1: i64_(&mut r, "t1")?,
            },
            2 => Self::Reply {
                term: r.u64("term")?,
                from: r.u16("from")?,
                seq: r.u32("seq")?,
                t1: i64_(&mut r, "t1")?,
                t2: i64_(&mut r, "t2")?,
                t3: i64_(&mut r, "t3")?,
            },
            3 => Self::Correct {
                term: r.u64("term")?,
                from: r.u16("from")?,
                seq: r.u32("seq")?,
                adjust_us: i64_(&mut r, "adjust")?,
            },
            t => return Err(DecodeError::UnknownType(t)),
        };
        let env = Envelope {
            incarnation: r.u64("incarnation")?,
            counter: r.u64("counter")?,
        };
        r.array::<TAG_LEN>("tag")?;
        r.finish()?;
        Ok((p, env))
    }
}

/// One measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Follower minus master, µs.
    pub offset_us: i64,
    /// Round-trip delay less the follower's processing, µs.
    pub delay_us: i64,
}

impl Sample {
    /// The sample from the four timestamps; `None` if they are inconsistent (negative delay).
    pub fn from_times(t1: i64, t2: i64, t3: i64, t4: i64) -> Option<Self> {
        let delay = (t4.checked_sub(t1)?).checked_sub(t3.checked_sub(t2)?)?;
        if delay < 0 {
            return None;
        }
        let offset = (t2.checked_sub(t1)? / 2).checked_add(t3.checked_sub(t4)? / 2)?;
        Some(Self {
            offset_us: offset,
            delay_us: delay,
        })
    }
}

/// The master's view of one follower's clock: a window of samples.
#[derive(Clone, Debug, Default)]
pub struct Estimator {
    samples: Vec<Sample>,
    /// Samples from probes up to this number describe the clock before the last correction.
    stale_upto: u32,
}

/// Samples kept per follower.
pub const WINDOW: usize = 8;
/// Samples needed before a correction within 100× the tolerance is made.
pub const MIN_SAMPLES: usize = 3;
/// Adjustments beyond this (a day) are refused: no real clock is that far off, a forged or
/// corrupted packet may be.
pub const MAX_ADJUST_US: i64 = 86_400_000_000;

impl Estimator {
    /// Adds the sample from probe `seq`; `latest_seq` is the newest probe sent. Returns the
    /// adjustment to send to the follower, if one is due: `Some(0)` confirms it is within
    /// tolerance.
    ///
    /// A correction is due when the lowest-delay sample of the window is off by more than
    /// `tolerance_us` (by more than 100× the tolerance, one sample is enough). After a
    /// correction the window is cleared and samples of probes sent before it are ignored: they
    /// describe the old clock. A follower is confirmed as soon as one sample proves it within
    /// tolerance (offset plus half the delay), or after enough samples say so.
    pub fn add(&mut self, seq: u32, s: Sample, tolerance_us: i64, latest_seq: u32) -> Option<i64> {
        if seq <= self.stale_upto || s.offset_us.unsigned_abs() > MAX_ADJUST_US.unsigned_abs() {
            return None;
        }
        if self.samples.len() == WINDOW {
            self.samples.remove(0);
        }
        self.samples.push(s);
        let best = self.best()?;
        let off = best.offset_us.unsigned_abs();
        let tol = tolerance_us.unsigned_abs();
        let enough = self.samples.len() >= MIN_SAMPLES || off > 100 * tol;
        if enough && off > tol {
            self.samples.clear();
            self.stale_upto = latest_seq;
            return Some(best.offset_us.saturating_neg());
        }
        let proven = off + best.delay_us.unsigned_abs() / 2 <= tol;
        (proven || (enough && off <= tol)).then_some(0)
    }

    /// The lowest-delay sample of the window.
    pub fn best(&self) -> Option<Sample> {
        self.samples.iter().copied().min_by_key(|s| s.delay_us)
    }
}

#[cfg(all(test, not(loom)))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use hex_literal::hex;
    use proptest::prelude::*;

    use super::*;

    //= docs/protocols/time-sync.md#test-vectors
    #[test]
    fn vectors_from_the_spec() {
        let env = Envelope {
            incarnation: 0x0102_0304_0506_0708,
            counter: 9,
        };
        let mut out = Vec::new();
        Packet::Probe {
            term: 3,
            from: 1,
            seq: 7,
            t1: 1_764_000_000_000_000,
        }
        .encode(env, None, &mut out);
        assert_eq!(
            out,
            hex!("50525354 02 01 0000000000000003 0001 00000007 0006445941624000 0102030405060708 0000000000000009 00000000000000000000000000000000")
        );
        out.clear();
        let key =
            crate::cluster::auth::ClusterKey::new(b"0123456789abcdef0123456789abcdef").time_key();
        Packet::Correct {
            term: 3,
            from: 1,
            seq: 7,
            adjust_us: -2000,
        }
        .encode(env, Some(&key), &mut out);
        assert_eq!(
            out,
            hex!("50525354 02 03 0000000000000003 0001 00000007 fffffffffffff830 0102030405060708 0000000000000009 a33111016e5719ae775d758d20ee5bd9")
        );
        assert!(key.verify(&out).is_ok());
        assert_eq!(
            Packet::decode(&hex!("50525354 01 01")),
            Err(DecodeError::BadVersion(1))
        );
        assert_eq!(
            Packet::decode(&hex!("50525353 02 01")),
            Err(DecodeError::BadMagic)
        );
    }

    #[test]
    fn lowest_delay_sample_wins_and_corrects_outside_tolerance() {
        let mut e = Estimator::default();
        // Follower is 5 ms ahead; one sample has a large asymmetric queueing delay.
        let s1 = Sample::from_times(0, 5_100, 5_120, 220).unwrap();
        assert_eq!(e.add(1, s1, 1000, 1), None);
        let s2 = Sample::from_times(1000, 26_000, 26_010, 2_000).unwrap();
        assert_eq!(e.add(2, s2, 1000, 2), None);
        let s3 = Sample::from_times(3000, 8_050, 8_060, 3_110).unwrap();
        assert_eq!(e.add(3, s3, 1000, 4), Some(-5_000));
        // Probe 4 was sent before the correction: its sample is stale.
        assert_eq!(e.add(4, s3, 1000, 4), None);
        // Within tolerance but not provably (delay too large): confirmed after enough samples.
        let mut e = Estimator::default();
        let s = Sample {
            offset_us: 500,
            delay_us: 1500,
        };
        assert_eq!(e.add(1, s, 1000, 1), None);
        assert_eq!(e.add(2, s, 1000, 2), None);
        assert_eq!(e.add(3, s, 1000, 3), Some(0));
        // Provably within tolerance from one sample: confirmed at once.
        let mut e = Estimator::default();
        assert_eq!(
            e.add(
                1,
                Sample {
                    offset_us: 300,
                    delay_us: 100
                },
                1000,
                1
            ),
            Some(0)
        );
        // A huge offset is corrected from one sample.
        let mut e = Estimator::default();
        let far = Sample {
            offset_us: -2_000_000,
            delay_us: 200,
        };
        assert_eq!(e.add(1, far, 1000, 1), Some(2_000_000));
        // Regression: a forged reply with an absurd offset is ignored instead of overflowing
        // (helper review: `-i64::MIN` panicked in debug builds).
        let mut e = Estimator::default();
        assert_eq!(
            e.add(
                1,
                Sample {
                    offset_us: i64::MIN,
                    delay_us: 0
                },
                1000,
                1
            ),
            None
        );
    }

    proptest! {
        #[test]
        fn packets_round_trip(term in any::<u64>(), from in any::<u16>(), seq in any::<u32>(), a in any::<i64>(), b in any::<i64>(), c in any::<i64>()) {
            for p in [Packet::Probe { term, from, seq, t1: a }, Packet::Reply { term, from, seq, t1: a, t2: b, t3: c }, Packet::Correct { term, from, seq, adjust_us: c }] {
                let mut out = Vec::new();
                let env = Envelope { incarnation: a as u64, counter: b as u64 };
                p.encode(env, None, &mut out);
                prop_assert_eq!(Packet::decode(&out), Ok((p, env)));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..96)) {
            crate::fuzzing::timesync_packet(&bytes);
        }

        /// With symmetric delays the estimate is exact; with asymmetric ones it errs by at most
        /// half the delay.
        #[test]
        fn offset_error_is_bounded_by_half_the_delay(t1 in 0i64..1 << 40, off in -1i64 << 30..1 << 30, d1 in 0i64..100_000, d2 in 0i64..100_000, proc in 0i64..1000) {
            let t2 = t1 + d1 + off;
            let t3 = t2 + proc;
            let t4 = t3 - off + d2;
            let s = Sample::from_times(t1, t2, t3, t4).unwrap();
            prop_assert_eq!(s.delay_us, d1 + d2);
            prop_assert!((s.offset_us - off).abs() <= s.delay_us / 2 + 1);
        }
    }
}
