//! CPU-bound work over a few independent items (landing files' batches, a query's output
//! batches) spread over the cores with scoped threads, in input order.

use crate::{Error, Result};

/// `f` over every item, on as many threads as cores (at most one per item), in input order.
/// The first error (in input order) is returned.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> Result<R> + Sync) -> Result<Vec<R>> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    if items.len() < 2 || cores < 2 {
        return items.iter().map(f).collect();
    }
    let per_thread = items.len().div_ceil(cores.min(items.len()));
    let parts: Vec<Result<Vec<R>>> = std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = items
            .chunks(per_thread)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Result<Vec<R>>>()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::Internal("a worker thread panicked".into()))))
            .collect()
    });
    let mut out = Vec::with_capacity(items.len());
    for part in parts {
        out.extend(part?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_come_in_input_order_and_the_first_error_wins() {
        let items: Vec<u32> = (0..37).collect();
        assert_eq!(
            super::map(&items, |x| Ok(x * 2)).unwrap(),
            items.iter().map(|x| x * 2).collect::<Vec<_>>()
        );
        let err = super::map(&items, |x| {
            if *x % 10 == 7 { Err(crate::Error::Internal(format!("bad {x}"))) } else { Ok(*x) }
        })
        .unwrap_err();
        assert!(err.to_string().contains("bad 7"), "{err}");
        assert!(super::map(&Vec::<u32>::new(), |x| Ok(*x)).unwrap().is_empty());
    }
}
