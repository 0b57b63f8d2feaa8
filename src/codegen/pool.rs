//! The worker threads a compiled network splits its kernels over, and the schedule they
//! follow.
//!
//! A run is a list of steps per image. A step is either one kernel split into chunks, taken
//! one at a time from an atomic counter by whichever thread is free (so a thread that is
//! descheduled or slowed for a while does less, instead of making the others wait for its
//! fixed half), or a group of consecutive kernels too small to split, run whole and in order
//! by the one thread that takes it. Every thread meets the others at a barrier after each
//! step, so a step starts only once the steps before it are complete: that is what orders
//! dependent kernels. Chunks are valid because a kernel's `begin..end` range may be split
//! into any sub-ranges, run in any order (`lower::ir::Kernel::parts`).
//!
//! The threads are started on the first run that needs them and live as long as the
//! network: starting a thread per run cost 77–100 µs before its first kernel. Between runs
//! they wait at the same barrier as between steps, spinning for about a millisecond and then
//! parked.

use super::barrier::{SpinBarrier, Wait};
use super::network::KernelFn;
use crate::lower::ir::{Kernel, LoopStmt};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Chunks per thread of a split kernel, at most: enough that the threads finish within a
/// small chunk of each other when one of them slows down.
const CHUNKS_PER_THREAD: usize = 4;

/// The least work (vector operations, see [`kernel_work`]) worth a chunk: a chunk costs an
/// atomic increment and a call, and a step costs a meeting of the threads (a few µs). A
/// kernel with less than two chunks' work is not split.
const MIN_CHUNK_WORK: u64 = 8_000;

/// The longest a thread waiting at the barrier spins before it parks, when each thread has a
/// core of its own.
const SPIN: Duration = Duration::from_millis(1);

/// The longest it spins when there are more threads than cores, and the thread it waits for
/// may need the core it is spinning on.
const SPIN_OVERSUBSCRIBED: Duration = Duration::from_micros(50);

/// A kernel as the schedule runs it.
#[derive(Clone, Copy)]
pub(super) struct ScheduledKernel {
    pub function: KernelFn,
    pub parts: usize,
}

/// One step of a run, followed by a meeting of every thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// One kernel, its parts split into `chunks` near-equal ranges.
    Split { kernel: usize, chunks: usize },
    /// Kernels `first..end`, run whole and in order by one thread.
    Whole { first: usize, end: usize },
}

/// The dynamic count of vector operations (assignments and stores) of a kernel over all its
/// parts: a measure of its time that needs no weights and no timing.
pub(super) fn kernel_work(kernel: &Kernel) -> u64 {
    fn work(stmts: &[LoopStmt]) -> u64 {
        stmts
            .iter()
            .map(|stmt| match stmt {
                LoopStmt::Assign(..) | LoopStmt::Store { .. } => 1,
                LoopStmt::Loop(l) => (l.count as u64).saturating_mul(work(&l.body)),
            })
            .fold(0, u64::saturating_add)
    }
    work(&kernel.body)
}

/// The steps of one image on `threads` threads, for kernels with `parts` and `work` each.
/// With `split_all` every kernel of more than one part is split, however small (checked
/// mode, so that its range checks see every split).
pub(super) fn schedule(kernels: &[(usize, u64)], threads: usize, split_all: bool) -> Vec<Step> {
    let mut steps = Vec::new();
    for (k, &(parts, work)) in kernels.iter().enumerate() {
        let by_work = if split_all {
            parts
        } else {
            usize::try_from(work / MIN_CHUNK_WORK).unwrap_or(usize::MAX)
        };
        let chunks = parts.min(CHUNKS_PER_THREAD * threads).min(by_work);
        if chunks >= 2 {
            steps.push(Step::Split { kernel: k, chunks });
            continue;
        }
        match steps.last_mut() {
            Some(Step::Whole { end, .. }) => *end = k + 1,
            _ => steps.push(Step::Whole {
                first: k,
                end: k + 1,
            }),
        }
    }
    steps
}

/// What the threads share: the schedule, the run in progress, and how they meet.
struct Shared {
    kernels: Vec<ScheduledKernel>,
    steps: Vec<Step>,
    barrier: SpinBarrier,
    /// The next chunk of the current step to hand out; reset at every meeting.
    next_chunk: AtomicUsize,
    /// The run in progress: the table's address and the number of images. Written by the
    /// calling thread before the meeting that starts the run, read by the workers after it.
    table: AtomicUsize,
    batch: AtomicUsize,
    /// Whether the calling thread times the kernels (it then runs every `Whole` step).
    profiling: AtomicBool,
    /// Set before the meeting that ends the workers.
    stop: AtomicBool,
}

impl Shared {
    fn meet(&self, kind: Wait) {
        self.barrier
            .wait(kind, || self.next_chunk.store(0, Ordering::Relaxed));
    }

    /// Runs this thread's share of every step for every image of the current run, and
    /// returns after the last meeting, once every thread is done with the run. With `times`
    /// (the calling thread, profiling), adds each kernel's time to it: a split kernel's is
    /// the step's time from meeting to meeting.
    ///
    /// # Safety
    /// The table must satisfy the contract of `CompiledNetwork::execute` until every thread
    /// has returned from this call.
    unsafe fn run(&self, mut times: Option<&mut [f64]>) {
        let table = self.table.load(Ordering::Relaxed) as *const usize;
        let batch = self.batch.load(Ordering::Relaxed);
        let profiling = self.profiling.load(Ordering::Relaxed);
        let call = |kernel: &ScheduledKernel, image: usize, begin: usize, end: usize| {
            // SAFETY: as the caller guarantees; distinct chunks of one kernel are disjoint
            // sub-ranges of its parts, which write disjoint elements (checked by the
            // lowering's verifier), and the kernels it depends on finished before the last
            // meeting.
            unsafe { (kernel.function)(table, image as i64, begin as i64, end as i64) }
        };
        let mut step_start = Instant::now();
        for image in 0..batch {
            for step in &self.steps {
                match *step {
                    Step::Split { kernel, chunks } => {
                        if let Some(scheduled) = self.kernels.get(kernel) {
                            let parts = scheduled.parts;
                            loop {
                                let taken = self.next_chunk.fetch_add(1, Ordering::Relaxed);
                                if taken >= chunks {
                                    break;
                                }
                                // The last chunk first: it holds the kernel's serial part
                                // (remainder tiles, borders), larger than the others.
                                let chunk = chunks - 1 - taken;
                                let (begin, end) =
                                    (parts * chunk / chunks, parts * (chunk + 1) / chunks);
                                call(scheduled, image, begin, end);
                            }
                        }
                        self.meet(Wait::InRun);
                        if let Some(time) = times.as_deref_mut().and_then(|t| t.get_mut(kernel)) {
                            *time += step_start.elapsed().as_secs_f64();
                        }
                    }
                    Step::Whole { first, end } => {
                        let mine = match times {
                            Some(_) => true,
                            None if profiling => false,
                            None => self.next_chunk.fetch_add(1, Ordering::Relaxed) == 0,
                        };
                        if mine {
                            for (k, scheduled) in
                                self.kernels.iter().enumerate().take(end).skip(first)
                            {
                                let start = Instant::now();
                                call(scheduled, image, 0, scheduled.parts);
                                if let Some(time) = times.as_deref_mut().and_then(|t| t.get_mut(k))
                                {
                                    *time += start.elapsed().as_secs_f64();
                                }
                            }
                        }
                        self.meet(Wait::InRun);
                    }
                }
                step_start = Instant::now();
            }
        }
    }
}

/// Worker threads started for one network; with the calling thread they make `threads`.
pub(super) struct WorkerPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl WorkerPool {
    /// Starts up to `threads - 1` workers (fewer if the system refuses to start more).
    pub fn start(kernels: Vec<ScheduledKernel>, steps: Vec<Step>, threads: usize) -> WorkerPool {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let spin = if threads <= cores {
            SPIN
        } else {
            SPIN_OVERSUBSCRIBED
        };
        let shared = Arc::new(Shared {
            kernels,
            steps,
            barrier: SpinBarrier::new(threads, spin),
            next_chunk: AtomicUsize::new(0),
            table: AtomicUsize::new(0),
            batch: AtomicUsize::new(0),
            profiling: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let mut workers = Vec::new();
        for thread in 1..threads {
            let worker_shared = Arc::clone(&shared);
            let started = std::thread::Builder::new()
                .name(format!("cnnc-worker-{thread}"))
                .spawn(move || work(&worker_shared));
            match started {
                Ok(handle) => workers.push(handle),
                Err(_) => break,
            }
        }
        // The workers started so far wait at the first meeting, which cannot have completed
        // without this thread.
        shared.barrier.set_threads(workers.len() + 1);
        WorkerPool { shared, workers }
    }

    /// The threads that run the network, this one included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs every step for each of `batch` images on this thread and the workers; returns
    /// when all of them are done. With `times`, adds each kernel's time to it.
    ///
    /// # Safety
    /// `table` must satisfy the contract of `CompiledNetwork::execute`.
    pub unsafe fn run(&mut self, table: &[usize], batch: usize, times: Option<&mut [f64]>) {
        let shared = &self.shared;
        shared
            .table
            .store(table.as_ptr() as usize, Ordering::Relaxed);
        shared.batch.store(batch, Ordering::Relaxed);
        shared.profiling.store(times.is_some(), Ordering::Relaxed);
        // The meeting publishes the run to the workers.
        shared.meet(Wait::ForRun);
        // SAFETY: as the caller guarantees; `Shared::run` returns after the workers' last
        // use of the table.
        unsafe { shared.run(times) };
    }
}

/// A worker's life: wait for a run, take part in it, until told to stop.
fn work(shared: &Shared) {
    loop {
        shared.meet(Wait::ForRun);
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        // SAFETY: `WorkerPool::run` published a table valid until the run's last meeting,
        // which this call takes part in.
        unsafe { shared.run(None) };
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.meet(Wait::ForRun);
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

    /// What the fake kernels record: how many times each part of each kernel ran, and
    /// whether any part ran out of order.
    struct Recorder {
        runs: Vec<Vec<AtomicU32>>,
        out_of_order: AtomicBool,
    }

    const PARTS: [usize; 5] = [37, 1, 5, 64, 2];

    /// A kernel that records its parts in the `Recorder` whose address is the table's first
    /// slot, and checks that the kernel before it completed this image and that no part of
    /// its own ran twice. It must not panic: it is called as native code.
    extern "C" fn fake_kernel<const K: usize>(
        table: *const usize,
        image: i64,
        begin: i64,
        end: i64,
    ) {
        // SAFETY: the tests below pass a table whose first slot is a live `Recorder`.
        let recorder = unsafe { &*(*table as *const Recorder) };
        let image = image as u32;
        let complete = |k: usize| {
            recorder.runs[k]
                .iter()
                .all(|part| part.load(Ordering::Relaxed) == image + 1)
        };
        if K > 0 && !complete(K - 1) {
            recorder.out_of_order.store(true, Ordering::Relaxed);
        }
        for part in begin as usize..end as usize {
            let Some(count) = recorder.runs[K].get(part) else {
                recorder.out_of_order.store(true, Ordering::Relaxed);
                continue;
            };
            if count.fetch_add(1, Ordering::Relaxed) != image {
                recorder.out_of_order.store(true, Ordering::Relaxed);
            }
        }
    }

    fn fake_kernels() -> Vec<ScheduledKernel> {
        let functions: [KernelFn; 5] = [
            fake_kernel::<0>,
            fake_kernel::<1>,
            fake_kernel::<2>,
            fake_kernel::<3>,
            fake_kernel::<4>,
        ];
        functions
            .into_iter()
            .zip(PARTS)
            .map(|(function, parts)| ScheduledKernel { function, parts })
            .collect()
    }

    /// Every part of every kernel runs exactly once per image, after the kernel before it,
    /// for schedules that split everything and that group small kernels, on 2 to 5 threads,
    /// run after run on the same workers, profiled or not.
    #[test]
    fn every_part_runs_once_and_in_order() {
        let big = MIN_CHUNK_WORK * 1_000;
        let work = [big, 1, 10, big, 1];
        let sizes: Vec<_> = PARTS.into_iter().zip(work).collect();
        for threads in 2..=5 {
            for split_all in [false, true] {
                let steps = schedule(&sizes, threads, split_all);
                let mut pool = WorkerPool::start(fake_kernels(), steps, threads);
                for (run, batch) in [1, 3, 2, 1].into_iter().enumerate() {
                    let recorder = Recorder {
                        runs: PARTS
                            .iter()
                            .map(|&n| (0..n).map(|_| AtomicU32::new(0)).collect())
                            .collect(),
                        out_of_order: AtomicBool::new(false),
                    };
                    let table = [&recorder as *const Recorder as usize];
                    let mut times = vec![0.0; PARTS.len()];
                    let profile = (run % 2 == 1).then_some(times.as_mut_slice());
                    // SAFETY: the fake kernels read only the recorder, which outlives the run.
                    unsafe { pool.run(&table, batch, profile) };
                    let what = format!("{threads} threads, split_all {split_all}, run {run}");
                    assert!(!recorder.out_of_order.load(Ordering::Relaxed), "{what}");
                    for kernel in &recorder.runs {
                        for part in kernel {
                            assert_eq!(part.load(Ordering::Relaxed), batch as u32, "{what}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn small_kernels_are_grouped_and_large_ones_split() {
        let big = MIN_CHUNK_WORK * 100;
        let kernels = [(56, big), (1, 10), (3, 10), (1, big), (9, big), (56, 100)];
        let steps = schedule(&kernels, 2, false);
        assert_eq!(
            steps,
            [
                Step::Split {
                    kernel: 0,
                    chunks: 8
                },
                Step::Whole { first: 1, end: 4 },
                Step::Split {
                    kernel: 4,
                    chunks: 8
                },
                Step::Whole { first: 5, end: 6 },
            ]
        );
        // Checked mode splits everything of more than one part.
        let steps = schedule(&kernels, 3, true);
        assert_eq!(steps[1], Step::Whole { first: 1, end: 2 });
        assert_eq!(
            steps[2],
            Step::Split {
                kernel: 2,
                chunks: 3
            }
        );
        assert_eq!(
            steps[5],
            Step::Split {
                kernel: 5,
                chunks: 12
            }
        );
    }
}
