//! Abuse suite: demo.
