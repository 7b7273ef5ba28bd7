//! Independent jobs spread over a few threads, stopping at the first error.
//!
//! A scoped pool of its own rather than a crate such as rayon: the callers (verifying an OCI
//! layout's blobs, finishing a COPY's files) need one loop over a slice with an early stop,
//! and a global pool would share its threads with the compressors' own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// Calls `f` on every item of `items`, on up to `threads` scoped threads (so `f` may borrow),
/// each taking the next item no thread has taken yet. The first error stops the threads from
/// taking more items and is returned once the items already started are done. With one
/// thread, or one item, everything runs on the calling thread. A panic in `f` is passed on.
pub fn try_for_each<T, E, F>(items: &[T], threads: usize, f: F) -> Result<(), E>
where
    T: Sync,
    E: Send,
    F: Fn(&T) -> Result<(), E> + Sync,
{
    let threads = threads.min(items.len());
    if threads <= 1 {
        return items.iter().try_for_each(f);
    }
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if let Err(e) = f(item) {
                        failed
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .get_or_insert(e);
                        // The other threads find nothing left to take.
                        next.store(items.len(), Ordering::Relaxed);
                        return;
                    }
                }
            });
        }
    });
    match failed.into_inner().unwrap_or_else(PoisonError::into_inner) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_is_done_once() {
        let items: Vec<usize> = (0..1000).collect();
        for threads in [0, 1, 3] {
            let seen: Vec<AtomicUsize> = items.iter().map(|_| AtomicUsize::new(0)).collect();
            try_for_each(&items, threads, |&i| {
                seen[i].fetch_add(1, Ordering::Relaxed);
                Ok::<(), ()>(())
            })
            .unwrap();
            assert!(seen.iter().all(|n| n.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn the_first_error_stops_the_rest() {
        // Every other item takes a millisecond: without the early stop, 10,000 of them would
        // keep three threads busy for over three seconds.
        let items: Vec<usize> = (0..10_000).collect();
        let done = AtomicUsize::new(0);
        let err = try_for_each(&items, 4, |&i| {
            if i == 0 {
                return Err(format!("item {i}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
            done.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .unwrap_err();
        assert_eq!(err, "item 0");
        assert!(done.load(Ordering::Relaxed) < items.len() / 2, "{done:?}");
        let inline = try_for_each(&items, 1, |&i| if i == 3 { Err(i) } else { Ok(()) });
        assert_eq!(inline, Err(3));
    }
}
