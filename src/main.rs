//! The `cloudlake` binary: parse flags, run the command, print one clear sentence on failure.

mod cli;

/// jemalloc instead of the system allocator (the `jemalloc` feature, on by default). Measured on
/// 2 cores (session 15, release, against mimalloc 3, which the binary used before; README,
/// Streaming, "jemalloc instead of mimalloc"): a Kafka stream of 480 days (10.4 M events,
/// `state_memory_mb = 256`) peaks at 1.50-1.52 GB of RSS instead of 2.33-2.56 GB, at the same
/// speed; a scale-100 catch-up runs at 137-149 k events/s at 1.39-1.53 GB, against 113-135 k at
/// 1.76-1.81 GB; the bundled run takes 0.85 s instead of 0.96 s (medians) at about 240 MB
/// instead of 258 MB. What it saves is allocator pages, not data: the live heap of the 480-day
/// stream peaks at about 750 MB either way. Tune it with `_RJEM_MALLOC_CONF` (the crate prefixes
/// jemalloc's symbols). `--no-default-features` gives glibc's allocator, which heap profilers
/// such as heaptrack follow.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
