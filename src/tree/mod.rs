//! The RCU copy-on-write B+tree over ranges (raw core; no values, no locks).
//!
//! Owns: node layout and handles (`node`), read-only descents (`search`), free-space
//! queries (`gap`), and the writer's copy-on-write edits (`cow`). Must not: dereference
//! entry pointers — to the tree an entry is an opaque pointer with bounds beside it.

pub(crate) mod bulk;
#[cfg(any(test, fuzzing))]
pub(crate) mod check;
pub(crate) mod cow;
pub(crate) mod gap;
pub(crate) mod node;
pub(crate) mod search;
