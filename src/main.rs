//! The server binary: everything lives in the library; `main` only starts it.

/// mimalloc instead of glibc malloc: profiling the relay under load showed a third of the
/// server's CPU in glibc's malloc/free (`malloc_consolidate`, `_int_free`); see BENCHMARKS.md.
#[cfg(feature = "ssr")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "ssr")]
#[tokio::main]
async fn main() -> std::process::ExitCode {
    streamai::server::main().await
}

/// The `hydrate` build has no binary; the browser entry point is `streamai::hydrate`.
#[cfg(not(feature = "ssr"))]
pub fn main() {}
