//! Abuse suite: provider.
