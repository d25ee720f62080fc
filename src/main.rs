//! The server binary: everything lives in the library; `main` only starts it.

#[cfg(feature = "ssr")]
#[tokio::main]
async fn main() -> std::process::ExitCode {
    streamai::server::main().await
}

/// The `hydrate` build has no binary; the browser entry point is `streamai::hydrate`.
#[cfg(not(feature = "ssr"))]
pub fn main() {}
