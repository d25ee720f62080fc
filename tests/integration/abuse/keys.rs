//! Abuse suite: keys.
