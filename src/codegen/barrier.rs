//! The barrier the threads of a worker pool meet at, after every step of a run and between
//! runs.
//!
//! Threads meet hundreds of times per image, and a step takes microseconds to milliseconds.
//! `std::sync::Barrier` parks waiting threads at once, and waking a parked thread costs
//! 50–65 µs on a 2-core KVM guest (half a millisecond at the 99th percentile): more than most
//! steps take. So a waiting thread first spins on a generation counter for up to a bounded
//! time, and only then parks on a condition variable. The bound adapts: it starts at about a
//! millisecond, long enough to cover the imbalance of one step, so that a thread almost never
//! parks inside a run when every thread has a core, and short enough that workers idle
//! between runs go to sleep soon. Each wait that ends in parking halves it, and each that
//! ends while spinning doubles it back: when the machine is oversubscribed (more threads than
//! cores, or other processes), the thread waited for is often descheduled, and spinning only
//! takes the core it needs. Waits for the next run do not adapt the bound (their length is up
//! to the caller), and spin the longest bound.
//!
//! The last thread to arrive wakes the parked ones only if there are any: most meetings end
//! with every thread still spinning, and then no lock is taken and no system call made.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Spin iterations between two looks at the clock (each `pause` is ≈ 27 ns on Zen 3).
const SPINS_PER_CLOCK_READ: u32 = 64;

/// The shortest the spin bound adapts down to.
const MIN_SPIN: Duration = Duration::from_micros(20);

/// Whether a wait is inside a run (and adapts the spin bound) or for the next run.
#[derive(Copy, Clone, PartialEq, Eq)]
pub(super) enum Wait {
    InRun,
    ForRun,
}

pub(super) struct SpinBarrier {
    /// Threads that must arrive to complete a meeting; lowered once, before the first
    /// meeting completes, if a pool could start fewer threads than it asked for.
    threads: AtomicUsize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    /// Threads parked (or about to park) on `wake`.
    sleepers: AtomicUsize,
    /// The longest a waiting thread spins before it parks.
    max_spin: Duration,
    /// How long a waiting thread spins before it parks now, in nanoseconds: between
    /// `MIN_SPIN` and `max_spin`.
    spin_nanos: AtomicU64,
    lock: Mutex<()>,
    wake: Condvar,
}

impl SpinBarrier {
    pub fn new(threads: usize, max_spin: Duration) -> SpinBarrier {
        SpinBarrier {
            threads: AtomicUsize::new(threads),
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            max_spin,
            spin_nanos: AtomicU64::new(nanos(max_spin)),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Lowers the number of threads that meet. Only valid before any meeting has completed
    /// and while fewer than `threads` threads have arrived at the first one.
    pub fn set_threads(&self, threads: usize) {
        self.threads.store(threads, Ordering::SeqCst);
    }

    /// Returns once every thread has called `wait` for this generation. The last thread to
    /// arrive runs `on_last` first, while every other thread is still waiting. Everything a
    /// thread wrote before waiting (and `on_last` wrote) is visible to every thread after.
    pub fn wait(&self, kind: Wait, on_last: impl FnOnce()) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.threads.load(Ordering::SeqCst) {
            // Nobody can arrive for the next generation before seeing it advance, so the
            // count can be reset before advancing.
            self.arrived.store(0, Ordering::Relaxed);
            on_last();
            self.generation.fetch_add(1, Ordering::SeqCst);
            // A thread about to park counts itself in `sleepers` and then looks at the
            // generation (both sequentially consistent): either it sees the new generation
            // or this load sees it counted. Taking the lock before notifying means a thread
            // that counted itself is already waiting on the condition variable.
            if self.sleepers.load(Ordering::SeqCst) > 0 {
                drop(self.lock.lock().unwrap_or_else(PoisonError::into_inner));
                self.wake.notify_all();
            }
            return;
        }
        let spin_nanos = self.spin_nanos.load(Ordering::Relaxed);
        let spin = match kind {
            Wait::InRun => Duration::from_nanos(spin_nanos),
            Wait::ForRun => self.max_spin,
        };
        let start = Instant::now();
        loop {
            for _ in 0..SPINS_PER_CLOCK_READ {
                if self.generation.load(Ordering::Acquire) != generation {
                    if kind == Wait::InRun && spin_nanos < nanos(self.max_spin) {
                        let longer = spin_nanos.saturating_mul(2).min(nanos(self.max_spin));
                        self.spin_nanos.store(longer, Ordering::Relaxed);
                    }
                    return;
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= spin {
                break;
            }
        }
        if kind == Wait::InRun {
            let shorter = (spin_nanos / 2).max(nanos(MIN_SPIN).min(nanos(self.max_spin)));
            self.spin_nanos.store(shorter, Ordering::Relaxed);
        }
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        while self.generation.load(Ordering::SeqCst) == generation {
            guard = self
                .wake
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every thread sees every other thread's writes from before each meeting, whether the
    /// waiters spin (long bound) or park (zero bound).
    fn meetings_order_writes(threads: usize, spin: Duration) {
        const MEETINGS: u64 = 1_000;
        let barrier = SpinBarrier::new(threads, spin);
        let counters: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
        let last_runs = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for thread in 0..threads {
                let (barrier, counters, last_runs) = (&barrier, &counters, &last_runs);
                scope.spawn(move || {
                    for meeting in 1..=MEETINGS {
                        counters[thread].store(meeting, Ordering::Relaxed);
                        barrier.wait(Wait::InRun, || {
                            last_runs.fetch_add(1, Ordering::Relaxed);
                        });
                        // Nobody writes again before the second meeting.
                        for counter in counters {
                            let seen = counter.load(Ordering::Relaxed);
                            assert_eq!(seen, meeting);
                        }
                        barrier.wait(Wait::ForRun, || {});
                    }
                });
            }
        });
        assert_eq!(last_runs.load(Ordering::Relaxed), MEETINGS);
    }

    #[test]
    fn spinning_waiters_see_every_write() {
        meetings_order_writes(2, Duration::from_millis(1));
    }

    #[test]
    fn parked_waiters_are_woken_and_see_every_write() {
        // More threads than this machine's cores.
        meetings_order_writes(5, Duration::ZERO);
    }
}
