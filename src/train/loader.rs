//! Loader threads: the next batches of an epoch are built (scaled, padded, augmented,
//! normalized) in parallel with the training step, and handed over in order through bounded
//! queues.
//!
//! With N threads, thread k builds batches k, k + N, k + 2N, … and sends each into its own
//! `sync_channel`; the trainer receives from the threads in turn, so batches arrive in the
//! epoch's order and every batch is the same as [`Dataset::training_batch`] would build in
//! one thread (each image draws from its own random stream). The queues hold at most
//! [`QUEUED_BATCHES`] finished batches in all, so memory stays bounded however slow a step is.
//!
//! When the trainer stops early (an error, `--steps`), dropping the [`BatchLoader`] drops the
//! receivers: each thread's next send fails, it returns, and the drop joins it. A thread that
//! panics closes its queue; the trainer then gets a [`DataError::Loader`] rather than a hang.

use super::data::{Batch, Dataset};
use super::data_error::DataError;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// How many finished batches may wait in the queues, over all threads.
pub const QUEUED_BATCHES: usize = 4;

/// The batches of one epoch, built ahead by loader threads; an iterator in the epoch's order.
pub struct BatchLoader {
    receivers: Vec<Receiver<Batch>>,
    handles: Vec<Option<JoinHandle<()>>>,
    next: usize,
    n_batches: usize,
}

impl BatchLoader {
    /// Starts `threads` threads building the batches of `order` (positions in `data`) for
    /// epoch `epoch` of a run with `seed`, `batch_size` images each (the last holds the rest).
    pub fn start(
        data: &Dataset,
        order: &[usize],
        batch_size: usize,
        seed: u64,
        epoch: usize,
        threads: usize,
    ) -> Result<BatchLoader, DataError> {
        if batch_size == 0 {
            return Err(DataError::ZeroBatch);
        }
        let n_batches = order.len().div_ceil(batch_size);
        let n_threads = threads.clamp(1, n_batches.max(1));
        let capacity = QUEUED_BATCHES.div_ceil(n_threads).max(1);
        let data = Arc::new(data.clone());
        let order: Arc<[usize]> = order.into();
        let mut receivers = Vec::with_capacity(n_threads);
        let mut handles = Vec::with_capacity(n_threads);
        for thread_idx in 0..n_threads {
            let (sender, receiver) = sync_channel::<Batch>(capacity);
            let (data, order) = (Arc::clone(&data), Arc::clone(&order));
            let spawned = std::thread::Builder::new()
                .name(format!("cnnc-loader-{thread_idx}"))
                .spawn(move || {
                    for batch_idx in (thread_idx..n_batches).step_by(n_threads) {
                        let start = batch_idx * batch_size;
                        let end = (start + batch_size).min(order.len());
                        let batch = data.training_batch(&order[start..end], seed, epoch);
                        if sender.send(batch).is_err() {
                            return; // the trainer stopped listening
                        }
                    }
                })
                .map_err(|error| DataError::Loader {
                    reason: format!("cannot start a loader thread: {error}"),
                })?;
            receivers.push(receiver);
            handles.push(Some(spawned));
        }
        Ok(BatchLoader {
            receivers,
            handles,
            next: 0,
            n_batches,
        })
    }

    /// Why thread `thread_idx` closed its queue early: its panic's message, if any.
    fn failure(&mut self, thread_idx: usize) -> DataError {
        let reason = match self.handles[thread_idx].take().map(JoinHandle::join) {
            Some(Err(payload)) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_string());
                format!("a loader thread stopped: {message}")
            }
            _ => "a loader thread stopped before building its batches".to_string(),
        };
        DataError::Loader { reason }
    }
}

impl Iterator for BatchLoader {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.n_batches {
            return None;
        }
        let thread_idx = self.next % self.receivers.len();
        match self.receivers[thread_idx].recv() {
            Ok(batch) => {
                self.next += 1;
                Some(Ok(batch))
            }
            Err(_) => {
                self.next = self.n_batches;
                Some(Err(self.failure(thread_idx)))
            }
        }
    }
}

impl Drop for BatchLoader {
    fn drop(&mut self) {
        // Closing the queues first makes every thread's next send fail, so the joins end.
        self.receivers.clear();
        for handle in self.handles.iter_mut().filter_map(Option::take) {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
#[path = "loader_tests.rs"]
mod tests;
