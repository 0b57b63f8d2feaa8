//! The barrier the threads that split each kernel's work meet at, after every kernel.
//!
//! Threads meet hundreds of times per image, and a kernel takes microseconds to
//! milliseconds. `std::sync::Barrier` parks waiting threads at once, and waking a parked
//! thread costs tens of microseconds — more than small kernels take. So a waiting thread
//! first spins on a generation counter for a few microseconds (enough when both threads are
//! running), and only then parks on a condition variable, so that an oversubscribed machine
//! does not burn the time slice the other thread needs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

/// Spins before parking: a few microseconds.
const SPINS: u32 = 2_000;

pub(super) struct SpinBarrier {
    threads: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

impl SpinBarrier {
    pub fn new(threads: usize) -> SpinBarrier {
        SpinBarrier {
            threads,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Returns once every thread has called `wait` for this generation. Everything a thread
    /// wrote before waiting is visible to every thread after.
    pub fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.threads {
            self.arrived.store(0, Ordering::Relaxed);
            // Advancing under the lock: a waiter that checked the generation under the lock
            // is either already waiting (and gets the notification) or sees the new value.
            let guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.generation.fetch_add(1, Ordering::AcqRel);
            drop(guard);
            self.wake.notify_all();
            return;
        }
        for _ in 0..SPINS {
            if self.generation.load(Ordering::Acquire) != generation {
                return;
            }
            std::hint::spin_loop();
        }
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        while self.generation.load(Ordering::Acquire) == generation {
            guard = self
                .wake
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}
