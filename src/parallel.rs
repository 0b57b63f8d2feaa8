//! One helper for the compiler's own parallelism (packing constants, compiling kernels):
//! a map over items on a few scoped threads that take items in turn.

use std::sync::atomic::{AtomicUsize, Ordering};

/// `f` applied to every item, on up to `threads` threads (this one included) that take items
/// in turn from a shared counter, each with its own `state`; the results in the items' order.
/// If the system refuses to start a thread, the others do its share.
pub(crate) fn parallel_map<T: Sync, S, R: Send>(
    items: &[T],
    threads: usize,
    state: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        let mut state = state();
        return items.iter().map(|item| f(&mut state, item)).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut state = state();
        let mut done = Vec::new();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(index) else {
                break;
            };
            done.push((index, f(&mut state, item)));
        }
        done
    };
    let mut results = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(scope, work).ok())
            .collect();
        let mut results = work();
        for helper in helpers {
            match helper.join() {
                Ok(done) => results.extend(done),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        results
    });
    results.sort_by_key(|&(index, _)| index);
    results.into_iter().map(|(_, result)| result).collect()
}

#[cfg(test)]
mod tests {
    use super::parallel_map;

    /// Results come back in the items' order, each computed once, however many threads take
    /// items and whatever state each carries.
    #[test]
    fn parallel_map_keeps_the_order() {
        let items: Vec<u64> = (0..1_000).collect();
        for threads in [1, 2, 3, 8] {
            let found = parallel_map(&items, threads, Vec::new, |seen: &mut Vec<u64>, &x| {
                seen.push(x);
                (x * x, seen.len())
            });
            let squares: Vec<u64> = found.iter().map(|&(square, _)| square).collect();
            assert_eq!(squares, items.iter().map(|x| x * x).collect::<Vec<_>>());
            let per_thread_total: usize = found.iter().filter(|&&(_, n)| n == 1).count();
            assert!((1..=threads).contains(&per_thread_total), "{threads}");
        }
    }
}
