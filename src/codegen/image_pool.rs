//! The worker threads of a network too small to split kernel by kernel (`pool::schedule`
//! found no kernel worth splitting): a batch is shared out image by image, and the calling
//! thread never waits for a worker that has not started an image.
//!
//! `pool::WorkerPool` starts and ends every run with a meeting of all its threads. For a
//! network like LeNet-5, whose image takes ~20 µs, that meeting is the whole cost: when the
//! machine is busy, a descheduled worker makes the caller wait for it for a scheduler time
//! slice (a batch of 8 took 1.2–2.2 ms on 2 threads instead of 0.15 ms on one). Here a run
//! is published as a new epoch; every thread, the caller included, claims images from one
//! atomic counter tagged with the epoch, and the caller, once no image is left to claim, waits
//! only for the images the workers claimed. A worker that wakes late finds none left and goes
//! back to waiting. Each image runs whole on one thread's arena, so the results are the same
//! bits whichever thread runs it.

use super::network::KernelFn;
use super::pool::{spawn_workers, ScheduledKernel};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The run in progress as one word: its epoch in the high half, the next image to claim in
/// the low half. A claim is a compare-and-swap of the whole word, so a thread holding a stale
/// epoch can never claim an image of a later run (whose tables may differ).
const EPOCH_SHIFT: u32 = 32;
const IMAGE_MASK: u64 = (1 << EPOCH_SHIFT) - 1;

struct Shared {
    kernels: Vec<ScheduledKernel>,
    state: AtomicU64,
    /// Images in the current run; written before the epoch that publishes it.
    batch: AtomicUsize,
    /// One table per thread (thread 0 is the caller's), written before the epoch.
    tables: AtomicUsize,
    /// Images of the current run finished by the workers.
    done: AtomicUsize,
    /// Workers parked (or about to park) on `wake`.
    sleepers: AtomicUsize,
    stop: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
    /// How long a worker spins for the next run before it parks.
    spin: Duration,
}

impl Shared {
    /// Claims and runs images of run `epoch` with table `thread` until none is left; returns
    /// how many this thread ran.
    ///
    /// # Safety
    /// While run `epoch` is in progress, its tables must satisfy the contract of
    /// `CompiledNetwork::execute`, one per thread with distinct arenas.
    unsafe fn run_images(&self, epoch: u64, thread: usize) -> usize {
        let mut ran = 0;
        loop {
            let state = self.state.load(Ordering::Acquire);
            let image = state & IMAGE_MASK;
            if state >> EPOCH_SHIFT != epoch || image >= self.batch.load(Ordering::Acquire) as u64 {
                return ran;
            }
            if self
                .state
                .compare_exchange_weak(state, state + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // The claim succeeded, so run `epoch` is still in progress: the caller does not
            // return (nor publish another run) until this image is done.
            let tables = self.tables.load(Ordering::Acquire) as *const *const usize;
            // SAFETY: the caller published one table per thread for this run.
            let table = unsafe { *tables.add(thread) };
            for kernel in &self.kernels {
                let function: KernelFn = kernel.function;
                // SAFETY: as the caller guarantees; this thread alone uses its arena, and
                // distinct images write distinct elements of the output.
                unsafe { function(table, image as i64, 0, kernel.parts as i64) };
            }
            ran += 1;
        }
    }

    /// Waits until the epoch differs from `seen` or the pool stops; returns the epoch.
    fn wait_for_run(&self, seen: u64) -> u64 {
        let epoch = || self.state.load(Ordering::Acquire) >> EPOCH_SHIFT;
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if epoch() != seen || self.stop.load(Ordering::Acquire) {
                return epoch();
            }
            std::hint::spin_loop();
            spins += 1;
            if spins.is_multiple_of(64) && start.elapsed() >= self.spin {
                break;
            }
        }
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        // Counted before the last look at the epoch: the caller publishes the epoch and then
        // reads this count (both sequentially consistent), so either this thread sees the new
        // epoch or the caller sees a sleeper and takes the lock to wake it.
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        while self.state.load(Ordering::SeqCst) >> EPOCH_SHIFT == seen
            && !self.stop.load(Ordering::SeqCst)
        {
            guard = self
                .wake
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
        epoch()
    }

    fn wake_sleepers(&self) {
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.wake.notify_all();
        }
    }
}

/// Workers that, with the calling thread, share out a batch's images.
pub(super) struct ImagePool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl ImagePool {
    /// Starts up to `threads - 1` workers (fewer if the system refuses to start more), which
    /// spin for up to `spin` waiting for a run before they park.
    pub fn start(kernels: Vec<ScheduledKernel>, threads: usize, spin: Duration) -> ImagePool {
        let shared = Arc::new(Shared {
            kernels,
            state: AtomicU64::new(0),
            batch: AtomicUsize::new(0),
            tables: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            spin,
        });
        let workers = spawn_workers(&shared, threads, work);
        ImagePool { shared, workers }
    }

    /// The threads that run the network, this one included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs every kernel for each of `batch` images, each image whole on one thread (this
    /// one or a worker) with that thread's table; returns when all of them are done.
    ///
    /// # Safety
    /// There must be one table per thread ([`threads`](Self::threads)), each satisfying the
    /// contract of `CompiledNetwork::execute`, with distinct arenas.
    pub unsafe fn run(&mut self, tables: &[*const usize], batch: usize) {
        let shared = &self.shared;
        let epoch = (shared.state.load(Ordering::Relaxed) >> EPOCH_SHIFT) + 1;
        shared.done.store(0, Ordering::Relaxed);
        shared.batch.store(batch, Ordering::Relaxed);
        shared
            .tables
            .store(tables.as_ptr() as usize, Ordering::Relaxed);
        // Publishes the run: everything stored above is visible to a thread that sees it.
        shared.state.store(epoch << EPOCH_SHIFT, Ordering::SeqCst);
        shared.wake_sleepers();
        // SAFETY: as the caller guarantees.
        let mine = unsafe { shared.run_images(epoch, 0) };
        // Every image is claimed; wait for those the workers took.
        let theirs = batch - mine;
        let mut spins = 0u32;
        while shared.done.load(Ordering::Acquire) < theirs {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// A worker's life: wait for a run, claim its images until none is left, until told to stop.
fn work(shared: &Shared, thread: usize) {
    let mut seen = 0;
    loop {
        let epoch = shared.wait_for_run(seen);
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        seen = epoch;
        // SAFETY: `ImagePool::run` published tables valid until every image it counted is
        // done, and a claim succeeds only while the run is in progress.
        let ran = unsafe { shared.run_images(epoch, thread) };
        shared.done.fetch_add(ran, Ordering::Release);
    }
}

impl Drop for ImagePool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _guard = self
            .shared
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.shared.wake.notify_all();
        drop(_guard);
        for worker in self.workers.drain(..) {
            // A worker runs no code that can panic; if one did, there is nothing to add.
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Per image: how many times it ran, and the tag of the table it ran with.
    struct Recorder {
        runs: Vec<AtomicU32>,
        tags: Vec<AtomicUsize>,
    }

    /// A kernel that records its image in the `Recorder` whose address is the table's first
    /// slot (the second is the table's tag), after a short wait that gives the other threads
    /// time to claim images. It must not panic: it is called as native code.
    extern "C" fn fake_kernel(table: *const usize, image: i64, _begin: i64, _end: i64) {
        // SAFETY: the test passes tables whose first slot is a live `Recorder` and whose
        // second is a tag.
        let (recorder, tag) = unsafe { (&*(*table as *const Recorder), *table.add(1)) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_micros(20) {
            std::hint::spin_loop();
        }
        if let (Some(runs), Some(tags)) = (
            recorder.runs.get(image as usize),
            recorder.tags.get(image as usize),
        ) {
            runs.fetch_add(1, Ordering::Relaxed);
            tags.store(tag, Ordering::Relaxed);
        }
    }

    /// Every image of every run runs exactly once, whole, with one thread's table, and is done
    /// when `run` returns, on 2 to 4 threads, run after run (the workers spinning between
    /// runs, or parked after a pause), for batches smaller and larger than the threads.
    #[test]
    fn every_image_runs_once_before_the_run_returns() {
        for threads in 2..=4 {
            for spin in [Duration::from_millis(1), Duration::ZERO] {
                let kernels = vec![ScheduledKernel {
                    function: fake_kernel,
                    parts: 1,
                }];
                let mut pool = ImagePool::start(kernels, threads, spin);
                assert_eq!(pool.threads(), threads);
                let mut by_workers = 0;
                for (run, batch) in [1, 2, 3, 8, 5, 16, 2, 9, 31, 4].into_iter().enumerate() {
                    let recorder = Recorder {
                        runs: (0..batch).map(|_| AtomicU32::new(0)).collect(),
                        tags: (0..batch).map(|_| AtomicUsize::new(usize::MAX)).collect(),
                    };
                    let address = &recorder as *const Recorder as usize;
                    let tables: Vec<[usize; 2]> = (0..threads).map(|tag| [address, tag]).collect();
                    let pointers: Vec<*const usize> =
                        tables.iter().map(|table| table.as_ptr()).collect();
                    if run % 3 == 2 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    // SAFETY: the fake kernel reads only the recorder, which outlives the run.
                    unsafe { pool.run(&pointers, batch) };
                    for image in 0..batch {
                        let what = format!("{threads} threads, run {run}, image {image}");
                        assert_eq!(recorder.runs[image].load(Ordering::Relaxed), 1, "{what}");
                        let tag = recorder.tags[image].load(Ordering::Relaxed);
                        assert!(tag < threads, "{what}: tag {tag}");
                        by_workers += usize::from(tag > 0);
                    }
                }
                // Not asserted (a loaded machine may give the workers no time), but shown.
                eprintln!("{threads} threads, spin {spin:?}: {by_workers} images by workers");
            }
        }
    }
}
