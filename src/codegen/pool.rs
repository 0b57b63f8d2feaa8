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
//! A batch of several images is first shared out image by image: each thread takes whole
//! images from an atomic counter and runs every kernel of each on its own arena, with no
//! meeting in between, so the threads never wait for one another inside an image. Only the
//! images left when fewer remain than there are threads (or every image, when profiling)
//! are split kernel by kernel as above, on the shared arena.
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
                LoopStmt::Images(body) => work(body),
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

/// The longest a thread of a pool of `threads` spins waiting before it parks.
pub(super) fn spin_bound(threads: usize) -> Duration {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads <= cores {
        SPIN
    } else {
        SPIN_OVERSUBSCRIBED
    }
}

/// What the threads share: the schedule, the run in progress, and how they meet.
struct Shared {
    kernels: Vec<ScheduledKernel>,
    steps: Vec<Step>,
    barrier: SpinBarrier,
    /// The next chunk of the current step to hand out; reset at every meeting.
    next_chunk: AtomicUsize,
    /// The run in progress: the address of one table per thread (thread 0 is the caller's;
    /// they differ only in their arena), the number of images, and how many of the first
    /// images are run whole, one thread each. Written by the calling thread before the
    /// meeting that starts the run, read by the workers after it.
    tables: AtomicUsize,
    batch: AtomicUsize,
    whole_images: AtomicUsize,
    /// The next of the whole images to hand out.
    next_image: AtomicUsize,
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
    /// The tables must satisfy the contract of `CompiledNetwork::execute` until every thread
    /// has returned from this call, each with an arena of its own.
    unsafe fn run(&self, thread: usize, mut times: Option<&mut [f64]>) {
        let tables = self.tables.load(Ordering::Relaxed) as *const *const usize;
        // SAFETY: `WorkerPool::run` publishes one table per thread.
        let own_table = unsafe { *tables.add(thread) };
        // SAFETY: as above; thread 0's table is the one split kernels share.
        let table = unsafe { *tables };
        let batch = self.batch.load(Ordering::Relaxed);
        let whole_images = self.whole_images.load(Ordering::Relaxed);
        let profiling = self.profiling.load(Ordering::Relaxed);
        if whole_images > 0 {
            loop {
                let image = self.next_image.fetch_add(1, Ordering::Relaxed);
                if image >= whole_images {
                    break;
                }
                for kernel in &self.kernels {
                    // SAFETY: as the caller guarantees; this thread alone uses its arena,
                    // and distinct images write distinct elements of the output.
                    unsafe { (kernel.function)(own_table, image as i64, 0, kernel.parts as i64) };
                }
            }
            self.meet(Wait::InRun);
        }
        let call = |kernel: &ScheduledKernel, image: usize, begin: usize, end: usize| {
            // SAFETY: as the caller guarantees; distinct chunks of one kernel are disjoint
            // sub-ranges of its parts, which write disjoint elements (checked by the
            // lowering's verifier), and the kernels it depends on finished before the last
            // meeting.
            unsafe { (kernel.function)(table, image as i64, begin as i64, end as i64) }
        };
        let mut step_start = Instant::now();
        for image in whole_images..batch {
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
        let spin = spin_bound(threads);
        let shared = Arc::new(Shared {
            kernels,
            steps,
            barrier: SpinBarrier::new(threads, spin),
            next_chunk: AtomicUsize::new(0),
            tables: AtomicUsize::new(0),
            batch: AtomicUsize::new(0),
            whole_images: AtomicUsize::new(0),
            next_image: AtomicUsize::new(0),
            profiling: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let workers = spawn_workers(&shared, threads, work);
        // The workers started so far wait at the first meeting, which cannot have completed
        // without this thread.
        shared.barrier.set_threads(workers.len() + 1);
        WorkerPool { shared, workers }
    }

    /// The threads that run the network, this one included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs every kernel for each of `batch` images on this thread and the workers; returns
    /// when all of them are done. The first `whole_images` images are run whole, one thread
    /// each on its own table; the rest step by step on `tables[0]`, every thread taking
    /// part in each step. With `times`, adds each kernel's time to it (then no image may be
    /// run whole: the calling thread would time only its own).
    ///
    /// # Safety
    /// Every table must satisfy the contract of `CompiledNetwork::execute`; there must be
    /// one per thread ([`threads`](Self::threads)) if `whole_images > 0`, and their arenas
    /// must be distinct.
    pub unsafe fn run(
        &mut self,
        tables: &[*const usize],
        batch: usize,
        whole_images: usize,
        times: Option<&mut [f64]>,
    ) {
        let whole_images = if times.is_some() || tables.len() < self.threads() {
            0
        } else {
            whole_images.min(batch)
        };
        let shared = &self.shared;
        shared
            .tables
            .store(tables.as_ptr() as usize, Ordering::Relaxed);
        shared.batch.store(batch, Ordering::Relaxed);
        shared.whole_images.store(whole_images, Ordering::Relaxed);
        shared.next_image.store(0, Ordering::Relaxed);
        shared.profiling.store(times.is_some(), Ordering::Relaxed);
        // The meeting publishes the run to the workers.
        shared.meet(Wait::ForRun);
        // SAFETY: as the caller guarantees; `Shared::run` returns after the workers' last
        // use of the tables.
        unsafe { shared.run(0, times) };
    }
}

/// A worker's life: wait for a run, take part in it as thread `thread`, until told to stop.
/// Threads `1..threads`, each running `work(shared, its number)`; fewer if the system refuses
/// one (the caller's thread is number 0 and runs whatever the others do not).
pub(super) fn spawn_workers<S: Send + Sync + 'static>(
    shared: &Arc<S>,
    threads: usize,
    work: fn(&S, usize),
) -> Vec<JoinHandle<()>> {
    let mut workers = Vec::new();
    for thread in 1..threads {
        let worker_shared = Arc::clone(shared);
        let started = std::thread::Builder::new()
            .name(format!("cnnc-worker-{thread}"))
            .spawn(move || work(&worker_shared, thread));
        match started {
            Ok(handle) => workers.push(handle),
            Err(_) => break,
        }
    }
    workers
}

fn work(shared: &Shared, thread: usize) {
    loop {
        shared.meet(Wait::ForRun);
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        // SAFETY: `WorkerPool::run` published a table valid until the run's last meeting,
        // which this call takes part in.
        unsafe { shared.run(thread, None) };
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

    /// What the fake kernels record, per image: how many times each part of each kernel ran
    /// and the tag of the table each kernel last ran with; and whether any part ran out of
    /// order.
    struct Recorder {
        runs: Vec<Vec<Vec<AtomicU32>>>,
        tags: Vec<Vec<AtomicUsize>>,
        out_of_order: AtomicBool,
    }

    impl Recorder {
        fn new(batch: usize) -> Recorder {
            Recorder {
                runs: (0..batch)
                    .map(|_| {
                        PARTS
                            .iter()
                            .map(|&n| (0..n).map(|_| AtomicU32::new(0)).collect())
                            .collect()
                    })
                    .collect(),
                tags: (0..batch)
                    .map(|_| PARTS.iter().map(|_| AtomicUsize::new(usize::MAX)).collect())
                    .collect(),
                out_of_order: AtomicBool::new(false),
            }
        }
    }

    const PARTS: [usize; 5] = [37, 1, 5, 64, 2];

    /// A kernel that records its parts in the `Recorder` whose address is the table's first
    /// slot (the second is the table's tag), and checks that the kernel before it completed
    /// this image and that no part of its own ran twice. It must not panic: it is called as
    /// native code.
    extern "C" fn fake_kernel<const K: usize>(
        table: *const usize,
        image: i64,
        begin: i64,
        end: i64,
    ) {
        // SAFETY: the tests below pass tables whose first slot is a live `Recorder` and
        // whose second is a tag.
        let (recorder, tag) = unsafe { (&*(*table as *const Recorder), *table.add(1)) };
        let Some(runs) = recorder.runs.get(image as usize) else {
            recorder.out_of_order.store(true, Ordering::Relaxed);
            return;
        };
        let complete = |k: usize| runs[k].iter().all(|part| part.load(Ordering::Relaxed) == 1);
        if K > 0 && !complete(K - 1) {
            recorder.out_of_order.store(true, Ordering::Relaxed);
        }
        recorder.tags[image as usize][K].store(tag, Ordering::Relaxed);
        for part in begin as usize..end as usize {
            let Some(count) = runs[K].get(part) else {
                recorder.out_of_order.store(true, Ordering::Relaxed);
                continue;
            };
            if count.fetch_add(1, Ordering::Relaxed) != 0 {
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
    /// run after run on the same workers, profiled or not, with none, some or all of the
    /// images run whole. A whole image runs every kernel with one thread's table; the
    /// other images with the calling thread's (tag 0).
    #[test]
    fn every_part_runs_once_and_in_order() {
        let big = MIN_CHUNK_WORK * 1_000;
        let work = [big, 1, 10, big, 1];
        let sizes: Vec<_> = PARTS.into_iter().zip(work).collect();
        for threads in 2..=5 {
            for split_all in [false, true] {
                let steps = schedule(&sizes, threads, split_all);
                let mut pool = WorkerPool::start(fake_kernels(), steps, threads);
                let cases = [
                    (1, 0),
                    (3, 0),
                    (2, 0),
                    (1, 0),
                    (7, 6),
                    (3, 3),
                    (9, 2),
                    (4, 4),
                ];
                for (run, (batch, whole)) in cases.into_iter().enumerate() {
                    let recorder = Recorder::new(batch);
                    let address = &recorder as *const Recorder as usize;
                    let tables: Vec<[usize; 2]> = (0..threads).map(|tag| [address, tag]).collect();
                    let pointers: Vec<*const usize> =
                        tables.iter().map(|table| table.as_ptr()).collect();
                    let mut times = vec![0.0; PARTS.len()];
                    let profile = (run % 3 == 1).then_some(times.as_mut_slice());
                    let whole = if profile.is_some() { 0 } else { whole };
                    // SAFETY: the fake kernels read only the recorder, which outlives the run.
                    unsafe { pool.run(&pointers, batch, whole, profile) };
                    let what = format!(
                        "{threads} threads, split_all {split_all}, run {run}, batch {batch}"
                    );
                    assert!(!recorder.out_of_order.load(Ordering::Relaxed), "{what}");
                    for (image, kernels) in recorder.runs.iter().enumerate() {
                        for kernel in kernels {
                            for part in kernel {
                                assert_eq!(part.load(Ordering::Relaxed), 1, "{what}");
                            }
                        }
                        let tags: Vec<usize> = recorder.tags[image]
                            .iter()
                            .map(|t| t.load(Ordering::Relaxed))
                            .collect();
                        if image < whole {
                            assert!(tags.iter().all(|&t| t == tags[0]), "{what}: {tags:?}");
                            assert!(tags[0] < threads, "{what}: {tags:?}");
                        } else {
                            assert!(tags.iter().all(|&t| t == 0), "{what}: {tags:?}");
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
