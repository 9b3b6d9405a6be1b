//! rcu-rangemap: a concurrent range map (crate docs are written with the map).

#![warn(missing_docs)]

mod key;
#[cfg(loom)]
#[doc(hidden)]
pub mod lock;
#[cfg(not(loom))]
#[allow(dead_code)]
mod lock;
mod sync;

pub use key::Key;
