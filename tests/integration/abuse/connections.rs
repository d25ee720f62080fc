//! Abuse suite: connections.
