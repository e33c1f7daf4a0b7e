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

/// For `run`: jemalloc returns freed pages to the system after 1 s instead of 10 s, from a
/// background thread instead of the threads that free memory. Measured by hand (release, 2
/// cores, README "By scale"): the scale-100 `run` peaks at 665-774 MB instead of 760-809 MB, scale
/// 10 at 505-586 MB instead of 618-668 MB, in the same time. `stream` keeps jemalloc's defaults:
/// there the same settings held RSS where it was (2.81-2.91 GB at scale 60 over 480 days) and
/// took 190-197 s instead of 185 s. A setting jemalloc refuses is left as it was; none of
/// them changes what is computed. `_RJEM_MALLOC_CONF` sets jemalloc's options for any command.
#[cfg(feature = "jemalloc")]
pub(crate) fn return_freed_pages_sooner() {
    use tikv_jemalloc_ctl::{Access, AsName};
    const DECAY_MS: isize = 1000;
    // The default for arenas created from now on, then each arena that exists already.
    let _ = b"arenas.dirty_decay_ms\0".name().write(DECAY_MS);
    let arenas = tikv_jemalloc_ctl::arenas::narenas::read().unwrap_or(0);
    for i in 0..arenas {
        let _ = format!("arena.{i}.dirty_decay_ms\0").as_bytes().name().write(DECAY_MS);
    }
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
}

/// Without jemalloc, the system allocator's behaviour is left as it is.
#[cfg(not(feature = "jemalloc"))]
pub(crate) fn return_freed_pages_sooner() {}

fn main() -> std::process::ExitCode {
    cli::main()
}
