//! Abuse suite: retry_wait.
