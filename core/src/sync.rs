//! The synchronisation facade: every atomic that this workspace writes by hand is imported from
//! here, so that `RUSTFLAGS="--cfg loom"` swaps in loom's model-checked versions.
//!
//! Architecture Invariant: no other module imports `std::sync::atomic` directly.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard, RwLock};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard, RwLock};

/// Waits a moment in a retry loop (under loom, lets the model schedule another thread).
pub(crate) fn spin() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}
