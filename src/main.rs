//! The `cloudlake` binary: parse flags, run the command, print one clear sentence on failure.

mod cli;

/// mimalloc instead of the system allocator, built without transparent huge pages (its `no_thp`
/// feature turns them off for the process). Measured on 2 cores: the Kafka catch-up of 864 k
/// events takes 8.7–9.2 s instead of 11.5–12.8 s (glibc, THP on) or 10.5–11.3 s (glibc, THP
/// off); the bundled run 0.85–0.99 s instead of 1.0–1.2 s, for a higher peak (320 MB, not 260).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// One function of mimalloc's C API, from the library the mimalloc crate links (mimalloc 3 in
// libmimalloc-sys 0.1.49, the version Cargo.lock pins).
#[cfg(feature = "mimalloc")]
unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    fn mi_collect(force: bool);
}

/// `mi_option_purge_delay` in that version's `mi_option_e` (include/mimalloc.h).
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// How long memory freed stays committed before mimalloc returns it to the OS;
/// `MIMALLOC_PURGE_DELAY` in the environment wins. mimalloc 3 waits 1 s by default, and the
/// purge it scheduled before `main` (1 s ahead) would hold every later one back until then: the
/// forced collection purges it now, so the next ones follow the new delay.
#[cfg(feature = "mimalloc")]
pub(crate) fn set_purge_delay(millis: i32) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an integer option and collects the calling thread's heap; mimalloc
        // allows both at any time, from any thread.
        unsafe {
            mi_option_set(MI_OPTION_PURGE_DELAY, millis.into());
            mi_collect(true);
        }
    }
}

/// Without mimalloc (a build for heap profilers) there is no purge delay to set.
#[cfg(not(feature = "mimalloc"))]
pub(crate) fn set_purge_delay(_millis: i32) {}

fn main() -> std::process::ExitCode {
    cli::main()
}
