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

/// jemalloc's options, read before `main`: a background thread returns freed pages to the system
/// after 1 s (by default they stay for 10 s, and the threads that free memory purge it
/// themselves). Measured by hand (release, 2 cores, README "By scale"): the scale-100 `run`
/// peaks at 696-774 MB instead of 808 MB, scale 10 at 575 MB instead of 668 MB, in the same
/// time. Returning pages at once (`dirty_decay_ms:0`) gives 487 and 491 MB, the live heap, but
/// takes twice as long: every page is faulted in again. `_RJEM_MALLOC_CONF` overrides any of them.
#[cfg(feature = "jemalloc")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    cli::main()
}
