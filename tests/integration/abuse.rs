//! The abuse and fault suite (issue "Hardening"): each test tries one attack or fault
//! against the real server on loopback and asserts what the server answered, and that
//! it still serves other streams byte-exact afterwards.

mod connections;
mod cross_site;
mod demo;
mod input;
mod keys;
mod provider;
mod retry_wait;
mod startup;
