//! The server binary: everything lives in the library; `main` only starts it.

/// mimalloc instead of glibc malloc: profiling the relay under load showed a third of the
/// server's CPU in glibc's malloc/free (`malloc_consolidate`, `_int_free`); see BENCHMARKS.md.
#[cfg(feature = "ssr")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "ssr")]
fn main() -> std::process::ExitCode {
    without_huge_pages();
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(streamai::server::main()),
        Err(err) => {
            eprintln!("流式AI could not start its runtime: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// No transparent huge pages for this process. mimalloc asks for them on its arenas, and
/// a server of many small per-connection buffers then has the kernel zero 2 MiB at a time:
/// at 1,000 streams that was 20 % more memory per stream (45 → 36 KiB) for no speed.
#[cfg(all(feature = "ssr", target_os = "linux"))]
#[allow(unsafe_code)] // the one call into libc; the crate denies unsafe code elsewhere
fn without_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    // The arguments are `unsigned long`s (prctl is variadic), and the last three must be 0.
    let (on, unused): (libc::c_ulong, libc::c_ulong) = (1, 0);
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, on, unused, unused, unused) };
}

#[cfg(all(feature = "ssr", not(target_os = "linux")))]
fn without_huge_pages() {}

/// The `hydrate` build has no binary; the browser entry point is `streamai::hydrate`.
#[cfg(not(feature = "ssr"))]
pub fn main() {}
