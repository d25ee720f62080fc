//! Abuse suite: input.
