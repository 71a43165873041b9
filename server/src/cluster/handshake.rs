//! The authentication layer of a replication link (`docs/protocols/replication.md#authentication`):
//! where the driver runs the `HELLO` → `CHALLENGE` → `AUTH` exchange of
//! [`presenced_core::cluster::auth`] and seals and opens every later frame, so that the
//! [`ClusterNode`](presenced_core::cluster::node::ClusterNode) only ever sees frames of an
//! authenticated peer.
//!
//! Without a cluster secret every link is [`LinkAuth::Plain`] and this layer only refuses a
//! peer that asks for authentication. With one:
//!
//! ```text
//!  outbound (this node sent HELLO)          inbound (this node accepted)
//!  OutStart --HELLO(auth, Ns)--> AwaitChallenge     InStart --HELLO--> AwaitAuth (CHALLENGE sent)
//!  AwaitChallenge --CHALLENGE ok--> Sealed (AUTH sent)  AwaitAuth --AUTH ok--> Sealed (HELLO to node)
//! ```
//!
//! Any other frame in a handshake state, a bad proof or a bad tag closes the link (after an
//! `ERROR` 3 where the peer may be a misconfigured member), and is counted and logged,
//! rate-limited. Frames the node wants sent before the handshake completes wait in
//! `AwaitChallenge::pending` and go out sealed.
//!
//! Invariant: on a link of an authenticated node, nothing but `HELLO`, `CHALLENGE`, `AUTH` or
//! `ERROR` is written or handed to the node before the state is `Sealed`, and after that every
//! frame in both directions is sealed.

use presenced_core::cluster::auth::{ClusterKey, Nonce, Session, Side, NONCE_LEN};
use presenced_core::cluster::repl::Msg;
use presenced_core::proto::ErrorCode;

/// The authentication state of one link. See the module docs.
#[derive(Debug)]
pub(super) enum LinkAuth {
    /// No cluster secret: frames are plain.
    Plain,
    /// Outbound, `HELLO` not written yet.
    OutStart,
    /// Outbound, `HELLO` written; waiting for `CHALLENGE`.
    AwaitChallenge {
        /// The `HELLO` body as written (the transcript).
        hello_body: Vec<u8>,
        /// What the node asked to send meanwhile.
        pending: Vec<Msg>,
    },
    /// Inbound, nothing received yet.
    InStart,
    /// Inbound, `HELLO` received and `CHALLENGE` written; waiting for `AUTH`.
    AwaitAuth {
        /// The `HELLO` body as received (the transcript).
        hello_body: Vec<u8>,
        /// The nonce this node sent.
        nonce_r: Nonce,
        /// The `HELLO`, handed to the node once `AUTH` checks out.
        hello: Box<Msg>,
    },
    /// Authenticated: every frame is sealed.
    Sealed(Box<Session>),
}

/// What the link layer made of one received frame.
#[derive(Debug)]
pub(super) enum Step {
    /// Hand this message to the node.
    Deliver(Msg),
    /// Handled here (a handshake frame); write these frames and keep reading.
    Reply(Vec<Msg>),
    /// `AUTH` checked out: hand this, the stored `HELLO`, to the node.
    Authenticated(Msg),
    /// Refuse the peer: write `ERROR` with this code and message, then close.
    Refuse(ErrorCode, &'static str),
}

/// A fresh nonce from the operating system's random source.
pub(super) fn nonce() -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    if getrandom::getrandom(&mut n).is_err() {
        // No OS randomness (should not happen on Linux): fall back to a hash of the time and
        // address space, still unique per connection.
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let a = h.finish().to_be_bytes();
        h.write_u8(1);
        let b = h.finish().to_be_bytes();
        let (x, y) = n.split_at_mut(8);
        x.copy_from_slice(&a);
        y.copy_from_slice(&b);
    }
    n
}

impl LinkAuth {
    /// The state of a new link.
    pub(super) fn new(key: Option<&ClusterKey>, outbound: bool) -> Self {
        match (key, outbound) {
            (None, _) => Self::Plain,
            (Some(_), true) => Self::OutStart,
            (Some(_), false) => Self::InStart,
        }
    }

    /// Writes `msg` into `out`: fills in `HELLO`'s auth fields, seals after the handshake, and
    /// holds back data frames until it completes.
    pub(super) fn send(&mut self, key: Option<&ClusterKey>, mut msg: Msg, out: &mut Vec<u8>) {
        match self {
            Self::AwaitChallenge { pending, .. } if !matches!(msg, Msg::Error { .. }) => {
                pending.push(msg);
                return;
            }
            Self::OutStart if !matches!(msg, Msg::Hello { .. } | Msg::Error { .. }) => {
                // Nothing is sent before HELLO; the node sends HELLO first on a new link.
                return;
            }
            _ => {}
        }
        let hello = matches!(self, Self::OutStart) && matches!(msg, Msg::Hello { .. });
        if let (true, Msg::Hello { auth, nonce: n, .. }) = (hello, &mut msg) {
            *auth = true;
            *n = nonce();
        }
        let start = out.len();
        msg.encode(out);
        if let Self::Sealed(s) = self {
            s.seal(out, start);
        }
        if hello && key.is_some() {
            *self = Self::AwaitChallenge {
                hello_body: out.get(start + 5..).unwrap_or_default().to_vec(),
                pending: Vec::new(),
            };
        }
    }

    /// Opens one whole received frame (`frame` = length, type, body[, tag]): checks and strips
    /// the tag once sealed. `Err` is an authentication failure.
    pub(super) fn open<'a>(&mut self, frame: &'a [u8]) -> Result<&'a [u8], ()> {
        match self {
            Self::Sealed(s) => s.open(frame).map_err(|_| ()),
            _ => Ok(frame.get(5..).unwrap_or_default()),
        }
    }

    /// A decoded frame (`body` as received, for the transcript) in the current state.
    pub(super) fn receive(&mut self, key: Option<&ClusterKey>, msg: Msg, body: &[u8]) -> Step {
        match (std::mem::replace(self, Self::Plain), key) {
            (Self::Plain, _) => match msg {
                Msg::Hello { auth: true, .. } => {
                    Step::Refuse(ErrorCode::Auth, "this node has no cluster secret")
                }
                Msg::Challenge { .. } | Msg::Auth { .. } => {
                    Step::Refuse(ErrorCode::Protocol, "unexpected authentication frame")
                }
                m => Step::Deliver(m),
            },
            (Self::InStart, Some(key)) => match msg {
                Msg::Hello { auth: true, .. } => {
                    let nonce_r = nonce();
                    let proof = key.challenge_proof(body, &nonce_r);
                    *self = Self::AwaitAuth {
                        hello_body: body.to_vec(),
                        nonce_r,
                        hello: Box::new(msg),
                    };
                    Step::Reply(vec![Msg::Challenge {
                        nonce: nonce_r,
                        proof,
                    }])
                }
                Msg::Hello { .. } => Step::Refuse(
                    ErrorCode::Auth,
                    "authentication required: this cluster has a secret",
                ),
                _ => Step::Refuse(ErrorCode::Protocol, "expected HELLO"),
            },
            (
                Self::AwaitAuth {
                    hello_body,
                    nonce_r,
                    hello,
                },
                Some(key),
            ) => match msg {
                Msg::Auth { proof } if key.verify_auth(&hello_body, &nonce_r, &proof).is_ok() => {
                    *self =
                        Self::Sealed(Box::new(key.session(&hello_body, &nonce_r, Side::Receiver)));
                    Step::Authenticated(*hello)
                }
                Msg::Auth { .. } => Step::Refuse(ErrorCode::Auth, "authentication failed"),
                Msg::Error { .. } => Step::Refuse(
                    ErrorCode::Auth,
                    "the peer refused this node's proof (does it hold another secret?)",
                ),
                _ => Step::Refuse(ErrorCode::Protocol, "expected AUTH"),
            },
            (
                Self::AwaitChallenge {
                    hello_body,
                    pending,
                },
                Some(key),
            ) => match msg {
                Msg::Challenge { nonce: nr, proof }
                    if key.verify_challenge(&hello_body, &nr, &proof).is_ok() =>
                {
                    let mut replies = vec![Msg::Auth {
                        proof: key.auth_proof(&hello_body, &nr),
                    }];
                    replies.extend(pending);
                    // AUTH goes out plain and the pending frames sealed: `write_replies`.
                    *self = Self::Sealed(Box::new(key.session(&hello_body, &nr, Side::Sender)));
                    Step::Reply(replies)
                }
                Msg::Challenge { .. } => {
                    Step::Refuse(ErrorCode::Auth, "the peer failed authentication")
                }
                // The peer refused us (e.g. it has no secret, or ours is wrong): the node logs it.
                m @ Msg::Error { .. } => Step::Deliver(m),
                _ => Step::Refuse(ErrorCode::Protocol, "expected CHALLENGE"),
            },
            (Self::Sealed(s), _) => {
                *self = Self::Sealed(s);
                match msg {
                    Msg::Hello { .. } | Msg::Challenge { .. } | Msg::Auth { .. } => {
                        Step::Refuse(ErrorCode::Protocol, "unexpected handshake frame")
                    }
                    m => Step::Deliver(m),
                }
            }
            (Self::OutStart, _) => Step::Refuse(ErrorCode::Protocol, "frame before HELLO"),
            // A handshake state without a key cannot be built (`new`).
            (_, None) => Step::Refuse(ErrorCode::Protocol, "unexpected frame"),
        }
    }

    /// Writes the replies of a [`Step::Reply`] that completed the sender's side: `AUTH` plain,
    /// the rest sealed.
    pub(super) fn write_replies(&mut self, replies: Vec<Msg>, out: &mut Vec<u8>) {
        let mut first = true;
        for m in replies {
            if first && matches!(m, Msg::Auth { .. } | Msg::Challenge { .. }) {
                m.encode(out);
            } else {
                self.send(None, m, out);
            }
            first = false;
        }
    }
}
