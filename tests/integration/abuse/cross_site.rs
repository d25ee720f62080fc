//! Abuse suite: cross_site.
