//! The `cloudlake` binary: parse flags, run the command, print one clear sentence on failure.

mod cli;

/// mimalloc instead of the system allocator, built without transparent huge pages (its `no_thp`
/// feature turns them off for the process). Measured on 2 cores: the Kafka catch-up of 864 k
/// events takes 8.7–9.2 s instead of 11.5–12.8 s (glibc, THP on) or 10.5–11.3 s (glibc, THP
/// off); the bundled run 0.85–0.99 s instead of 1.0–1.2 s, for a higher peak (320 MB, not 260).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
