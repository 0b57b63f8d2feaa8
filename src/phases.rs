//! Wall-clock times of the compiler's phases, printed to stderr when `CNNC_PHASES` is set:
//! where a compile's time goes, without a profiler.

use std::time::Instant;

/// Times from its creation to the next [`mark`](Phases::mark); silent unless `CNNC_PHASES`
/// is set.
pub struct Phases {
    last: Option<(Instant, f64)>,
}

/// CPU seconds used by the process so far, every thread's.
fn cpu_seconds() -> f64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut time) };
    time.tv_sec as f64 + time.tv_nsec as f64 * 1e-9
}

impl Phases {
    pub fn start() -> Phases {
        Phases {
            last: std::env::var_os("CNNC_PHASES").map(|_| (Instant::now(), cpu_seconds())),
        }
    }

    /// Prints the time since the last mark as phase `name`.
    pub fn mark(&mut self, name: &str) {
        if let Some((last, last_cpu)) = self.last.as_mut() {
            let (now, cpu) = (Instant::now(), cpu_seconds());
            eprintln!(
                "phase {name}: {:.2} ms ({:.2} ms CPU)",
                (now - *last).as_secs_f64() * 1e3,
                (cpu - *last_cpu) * 1e3
            );
            (*last, *last_cpu) = (now, cpu);
        }
    }
}
