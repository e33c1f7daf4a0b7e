//! CPU-bound work over independent items (landing files, Kafka pieces, a query's output
//! batches, buckets of series) spread over the cores with scoped threads.

use std::sync::Mutex;

use crate::{Error, Result};

/// `f` over every item, on as many threads as cores (at most one per item), results in input
/// order. Each thread takes the next item when it is done with one, so items of uneven cost
/// (files of different sizes) still keep every core busy; each item is dropped once `f` is done
/// with it. Returns the first error in input order; a thread stops at its first error.
pub fn map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> Result<R> + Sync) -> Result<Vec<R>> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = cores.min(items.len());
    if threads < 2 {
        return items.into_iter().map(f).collect();
    }
    let queue = Mutex::new(items.into_iter().enumerate());
    // Taking the next item cannot panic, so no thread leaves the lock poisoned while taking one.
    let next = || queue.lock().unwrap_or_else(|e| e.into_inner()).next();
    let done: Vec<Result<Done<R>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    while let Some((i, item)) = next() {
                        let r = f(item);
                        let failed = r.is_err();
                        mine.push((i, r));
                        if failed {
                            break;
                        }
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| Error::Internal("a worker thread panicked".into())))
            .collect()
    });
    let mut all = Vec::new();
    for part in done {
        all.extend(part?);
    }
    // Items are taken in input order, so an item left undone lies after some error, which
    // comes first here.
    all.sort_unstable_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

/// One thread's results, each with its item's index.
type Done<R> = Vec<(usize, Result<R>)>;

#[cfg(test)]
mod tests {
    #[test]
    fn results_come_in_input_order_and_the_first_error_wins() {
        let items: Vec<u32> = (0..37).collect();
        assert_eq!(
            super::map(items.clone(), |x| Ok(x * 2)).unwrap(),
            items.iter().map(|x| x * 2).collect::<Vec<_>>()
        );
        let err = super::map(items, |x| {
            if x % 10 == 7 { Err(crate::Error::Internal(format!("bad {x}"))) } else { Ok(x) }
        })
        .unwrap_err();
        assert!(err.to_string().contains("bad 7"), "{err}");
        assert!(super::map(Vec::<u32>::new(), Ok).unwrap().is_empty());
    }
}
