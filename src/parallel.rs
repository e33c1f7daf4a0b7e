//! CPU-bound work over a few independent items (landing files' batches, a query's output
//! batches) spread over the cores with scoped threads, in input order.

use crate::{Error, Result};

/// `f` over every item, on as many threads as cores (at most one per item), in input order.
/// Each item is dropped once `f` is done with it. The first error (in input order) is returned.
pub fn map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> Result<R> + Sync) -> Result<Vec<R>> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    if items.len() < 2 || cores < 2 {
        return items.into_iter().map(f).collect();
    }
    let per_thread = items.len().div_ceil(cores.min(items.len()));
    let mut parts: Vec<Vec<T>> = Vec::new();
    let mut rest = items.into_iter();
    loop {
        let part: Vec<T> = rest.by_ref().take(per_thread).collect();
        if part.is_empty() {
            break;
        }
        parts.push(part);
    }
    let done: Vec<Result<Vec<R>>> = std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| scope.spawn(move || part.into_iter().map(f).collect::<Result<Vec<R>>>()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::Internal("a worker thread panicked".into()))))
            .collect()
    });
    let mut out = Vec::new();
    for part in done {
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
