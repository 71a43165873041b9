//! The presence model: who a user is ([`Sid`], [`Uid`]), on which clients they are logged in
//! ([`ClientType`]), whether strangers may start a chat, and extension data ([`Ext`]).
//!
//! A user's state is a [`Record`]: a small set of last-writer-wins registers, each carrying the
//! [`Stamp`] of the write that set it. Merging two records takes, register by register, the
//! greater `(stamp, value)` pair. That makes [`Record::merge`] a join of a semilattice
//! (commutative, associative, idempotent), which is what lets replicas converge whatever the order
//! in which updates reach them, and lets a login on one node never erase a concurrent login from
//! another client type on another node.
//!
//! Extension data and its limits live in the `ext` submodule ([`Ext`], [`ExtLimits`],
//! [`ExtError`]), re-exported here.
//!
//! This module does not know about maps, threads or bytes on a wire.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::Arc;

use crate::hlc::Stamp;

mod ext;

pub use ext::{Ext, ExtError, ExtLimits};

/// The public IM number that web platforms know: the key of the store.
///
/// INVARIANT: never zero (zero is "no user" on every wire format).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sid(NonZeroU64);

impl Sid {
    /// The smallest valid id, 1.
    pub const MIN: Self = Self(NonZeroU64::MIN);

    /// Returns `None` for zero, which is not a valid IM id.
    pub fn new(raw: u64) -> Option<Self> {
        NonZeroU64::new(raw).map(Self)
    }

    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The pool's internal user id, kept with the record and reported back in snapshots.
pub type Uid = u64;

/// The kind of IM client a session runs on. The numeric codes are frozen: they are on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ClientType {
    /// A desktop client.
    Pc = 0,
    /// A phone app.
    Mobile = 1,
    /// A browser client.
    Web = 2,
    /// A tablet app.
    Pad = 3,
    /// An SMS gateway session.
    Sms = 4,
    /// Anything else.
    Other = 5,
}

impl ClientType {
    /// Every client type, in code order (the order in which statuses list them).
    pub const ALL: [Self; 6] = [
        Self::Pc,
        Self::Mobile,
        Self::Web,
        Self::Pad,
        Self::Sms,
        Self::Other,
    ];

    /// The wire code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The client type for a wire code, `None` for an unknown code.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// The lowercase name used in JSON and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pc => "pc",
            Self::Mobile => "mobile",
            Self::Web => "web",
            Self::Pad => "pad",
            Self::Sms => "sms",
            Self::Other => "other",
        }
    }

    /// The name of the frozen SOAP enumeration value.
    pub fn soap_name(self) -> &'static str {
        match self {
            Self::Pc => "PC",
            Self::Mobile => "Mobile",
            Self::Web => "Web",
            Self::Pad => "Pad",
            Self::Sms => "SMS",
            Self::Other => "Other",
        }
    }

    /// Parses a lowercase name as printed by [`ClientType::name`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// A set of client types, one bit per [`ClientType::code`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientSet(u8);

impl ClientSet {
    /// Adds a client type.
    pub fn insert(&mut self, c: ClientType) {
        self.0 |= 1 << c.code();
    }

    /// Whether the set holds `c`.
    pub fn contains(self, c: ClientType) -> bool {
        self.0 & (1 << c.code()) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The bitmask (bit `code` set for each member).
    pub fn bits(self) -> u8 {
        self.0
    }

    /// The set for a bitmask; `None` if a bit names no client type.
    pub fn from_bits(bits: u8) -> Option<Self> {
        (bits < 1 << ClientType::ALL.len()).then_some(Self(bits))
    }

    /// The members in code order.
    pub fn iter(self) -> impl Iterator<Item = ClientType> {
        ClientType::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }
}

/// A last-writer-wins register: a value and the stamp of the write that set it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reg<T> {
    /// The version of the write.
    pub stamp: Stamp,
    /// The value written.
    pub value: T,
}

impl<T: Ord + Clone> Reg<T> {
    /// Keeps the greater `(stamp, value)` pair. Comparing the value too makes the result
    /// independent of argument order even for two different writes with the same stamp.
    fn join(&mut self, other: &Self) -> bool {
        if *other > *self {
            *self = other.clone();
            true
        } else {
            false
        }
    }
}

fn join_opt<T: Ord + Clone>(mine: &mut Option<Reg<T>>, other: &Option<Reg<T>>) -> bool {
    match (mine.as_mut(), other) {
        (_, None) => false,
        (None, Some(o)) => {
            *mine = Some(o.clone());
            true
        }
        (Some(m), Some(o)) => m.join(o),
    }
}

/// Identity of the user as last reported: the pool's uid and the pool that reported it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ident {
    /// The pool's internal user id.
    pub uid: Uid,
    /// The id of the pool that reported the user (from the pool handshake).
    pub pool: u32,
}

/// One client type's session register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientReg {
    /// The client type.
    pub client: ClientType,
    /// The register: logged in or not.
    pub reg: Reg<bool>,
}

/// What one pool event does to a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// `UserLogin`: the user logged in on `client`.
    Login(ClientType),
    /// `UserLogout`: the user logged out of `client`.
    Logout(ClientType),
    /// `PermissionChanged`: whether strangers may start a conversation.
    Permission(bool),
    /// Every client logged out (a full snapshot from the user's pool no longer lists the user).
    LogoutAll,
}

/// A local change to one user, before it is stamped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    /// The pool's uid.
    pub uid: Uid,
    /// The pool that sent it.
    pub pool: u32,
    /// What changed.
    pub change: Change,
    /// Replacement extension data, if the event carried any.
    pub ext: Option<Arc<Ext>>,
}

/// A user's replicated state: a set of last-writer-wins registers.
///
/// The registers are stored inline (`clients` is indexed by [`ClientType::code`]), so a record
/// is one allocation in the map and copying it for an update allocates nothing.
///
/// INVARIANT: `ident.stamp` is the greatest stamp of all registers (every write also writes
/// `ident`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Record {
    ident: Reg<Ident>,
    clients: [Option<Reg<bool>>; 6],
    perm: Option<Reg<bool>>,
    ext: Option<Reg<Arc<Ext>>>,
}

impl Record {
    /// The record that `update` stamped with `stamp` creates for an unknown user.
    pub fn from_update(stamp: Stamp, update: &Update) -> Self {
        let mut r = Self {
            ident: Reg {
                stamp,
                value: Ident {
                    uid: update.uid,
                    pool: update.pool,
                },
            },
            clients: [None; 6],
            perm: None,
            ext: None,
        };
        r.apply(stamp, update);
        r
    }

    /// Builds a record from its parts (used by decoders). Returns `None` if a client type
    /// appears twice or a register is newer than `ident`.
    pub fn from_parts(
        ident: Reg<Ident>,
        clients: impl IntoIterator<Item = ClientReg>,
        perm: Option<Reg<bool>>,
        ext: Option<Reg<Arc<Ext>>>,
    ) -> Option<Self> {
        let max = ident.stamp;
        if perm.as_ref().is_some_and(|p| p.stamp > max)
            || ext.as_ref().is_some_and(|e| e.stamp > max)
        {
            return None;
        }
        let mut slots = [None; 6];
        for c in clients {
            let slot = slots.get_mut(usize::from(c.client.code()))?;
            if c.reg.stamp > max || slot.replace(c.reg).is_some() {
                return None;
            }
        }
        Some(Self {
            ident,
            clients: slots,
            perm,
            ext,
        })
    }

    /// A record from its registers as a store engine keeps them (clients indexed by
    /// [`ClientType::code`]), without a check: the caller holds them from a valid record (see
    /// [`Record::regs`]).
    pub(crate) fn from_regs(regs: Regs) -> Self {
        Self {
            ident: regs.ident,
            clients: regs.clients,
            perm: regs.perm,
            ext: regs.ext,
        }
    }

    /// The registers of this record, clients indexed by [`ClientType::code`] (moved out).
    pub(crate) fn into_regs(self) -> Regs {
        Regs {
            ident: self.ident,
            clients: self.clients,
            perm: self.perm,
            ext: self.ext,
        }
    }

    /// Applies a local update stamped `stamp`. Returns whether the record changed.
    pub fn apply(&mut self, stamp: Stamp, update: &Update) -> bool {
        let ident = Reg {
            stamp,
            value: Ident {
                uid: update.uid,
                pool: update.pool,
            },
        };
        let mut changed = self.ident.join(&ident);
        match update.change {
            Change::Login(c) => changed |= self.set_client(c, Reg { stamp, value: true }),
            Change::Logout(c) => {
                changed |= self.set_client(
                    c,
                    Reg {
                        stamp,
                        value: false,
                    },
                )
            }
            Change::LogoutAll => {
                // Every client register is written, whatever its current value: a write that
                // depended on the current state would not commute with concurrent writes.
                for c in ClientType::ALL {
                    changed |= self.set_client(
                        c,
                        Reg {
                            stamp,
                            value: false,
                        },
                    );
                }
            }
            Change::Permission(allow) => {
                changed |= join_opt(
                    &mut self.perm,
                    &Some(Reg {
                        stamp,
                        value: allow,
                    }),
                );
            }
        }
        if let Some(ext) = &update.ext {
            changed |= join_opt(
                &mut self.ext,
                &Some(Reg {
                    stamp,
                    value: ext.clone(),
                }),
            );
        }
        changed
    }

    fn set_client(&mut self, client: ClientType, reg: Reg<bool>) -> bool {
        match self.clients.get_mut(usize::from(client.code())) {
            Some(slot) => join_opt(slot, &Some(reg)),
            None => false,
        }
    }

    /// Joins `other` into `self`. Returns whether `self` changed.
    ///
    /// This is the semilattice join: commutative, associative and idempotent.
    pub fn merge(&mut self, other: &Self) -> bool {
        let mut changed = self.ident.join(&other.ident);
        for (mine, theirs) in self.clients.iter_mut().zip(other.clients.iter()) {
            changed |= join_opt(mine, theirs);
        }
        changed |= join_opt(&mut self.perm, &other.perm);
        changed |= join_opt(&mut self.ext, &other.ext);
        changed
    }

    /// The identity register.
    pub fn ident(&self) -> &Reg<Ident> {
        &self.ident
    }

    /// The client session registers that were ever written, in client type order.
    pub fn clients(&self) -> impl Iterator<Item = ClientReg> + '_ {
        ClientType::ALL
            .into_iter()
            .zip(self.clients.iter())
            .filter_map(|(client, reg)| reg.map(|reg| ClientReg { client, reg }))
    }

    /// The permission register.
    pub fn perm(&self) -> Option<&Reg<bool>> {
        self.perm.as_ref()
    }

    /// The extension register.
    pub fn ext(&self) -> Option<&Reg<Arc<Ext>>> {
        self.ext.as_ref()
    }

    /// The public view of this record.
    pub fn status(&self, sid: Sid) -> Status {
        let mut clients = ClientSet::default();
        for c in self.clients().filter(|c| c.reg.value) {
            clients.insert(c.client);
        }
        Status {
            sid,
            known: true,
            online: !clients.is_empty(),
            clients,
            // A user who never sent PermissionChanged accepts conversations (the IM default).
            accepts_strangers: self.perm.as_ref().is_none_or(|p| p.value),
            changed_at_ms: Some(self.ident.stamp.physical_ms()),
            uid: Some(self.ident.value.uid),
            ext: self.ext.as_ref().map(|e| e.value.clone()),
        }
    }
}

/// A [`Record`]'s registers laid bare, for a store engine that keeps them in its own layout.
///
/// INVARIANT (kept by whoever builds one from a valid record): `ident.stamp` is the greatest
/// stamp of all registers.
#[derive(Clone, Debug, Default)]
pub(crate) struct Regs {
    pub(crate) ident: Reg<Ident>,
    pub(crate) clients: [Option<Reg<bool>>; 6],
    pub(crate) perm: Option<Reg<bool>>,
    pub(crate) ext: Option<Reg<Arc<Ext>>>,
}

/// What the query front ends publish about one id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The id asked for.
    pub sid: Sid,
    /// Whether the store has ever heard of this id.
    pub known: bool,
    /// Logged in on at least one client.
    pub online: bool,
    /// The clients the user is logged in on.
    pub clients: ClientSet,
    /// Whether strangers may start a conversation.
    pub accepts_strangers: bool,
    /// Cluster time (ms since the Unix epoch) of the last change; `None` when unknown.
    pub changed_at_ms: Option<u64>,
    /// The pool's uid; `None` when unknown.
    pub uid: Option<Uid>,
    /// Extension data, if any was ever sent.
    pub ext: Option<Arc<Ext>>,
}

impl Status {
    /// The status of an id the store does not know.
    pub fn unknown(sid: Sid) -> Self {
        Self {
            sid,
            known: false,
            online: false,
            clients: ClientSet::default(),
            accepts_strangers: false,
            changed_at_ms: None,
            uid: None,
            ext: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(ms: u64, node: u16) -> Stamp {
        Stamp::new(ms << 16, node)
    }

    fn upd(change: Change) -> Update {
        Update {
            uid: 1,
            pool: 1,
            change,
            ext: None,
        }
    }

    #[test]
    fn concurrent_logins_on_two_clients_both_survive() {
        let mut a = Record::from_update(st(10, 1), &upd(Change::Login(ClientType::Pc)));
        let b = Record::from_update(st(11, 2), &upd(Change::Login(ClientType::Mobile)));
        a.merge(&b);
        let s = a.status(Sid::new(5).unwrap());
        assert_eq!(
            s.clients.iter().collect::<Vec<_>>(),
            [ClientType::Pc, ClientType::Mobile]
        );
    }

    #[test]
    fn later_logout_wins_over_earlier_login() {
        let mut a = Record::from_update(st(10, 1), &upd(Change::Login(ClientType::Pc)));
        a.apply(st(12, 1), &upd(Change::Logout(ClientType::Pc)));
        a.apply(st(11, 2), &upd(Change::Login(ClientType::Pc)));
        let s = a.status(Sid::new(5).unwrap());
        assert!(s.known && !s.online);
        assert_eq!(s.changed_at_ms, Some(12));
    }

    /// The inline layout: a record is one map value with no heap of its own (ext aside).
    #[test]
    fn record_layout_is_compact() {
        assert_eq!(size_of::<Stamp>(), 10);
        assert!(size_of::<Record>() <= 152, "{}", size_of::<Record>());
    }
}
