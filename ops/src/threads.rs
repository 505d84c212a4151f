//! Background threads that run until told to stop: one shared stop flag that the threads poll,
//! set and joined by [`StopThreads::stop`] or on drop (a thread that polls it late delays the
//! stop by as much). [`nothing_read`] tells, in such a thread's socket loop, a read that only
//! timed out from one that failed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Threads sharing one stop flag; dropping this stops and joins them.
#[derive(Debug, Default)]
pub struct StopThreads {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl StopThreads {
    pub fn new() -> StopThreads {
        StopThreads::default()
    }

    /// The flag the threads poll: `true` once [`StopThreads::stop`] ran.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Starts a thread named `name` running `f`.
    pub fn spawn(
        &mut self,
        name: impl Into<String>,
        f: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        let t = std::thread::Builder::new().name(name.into()).spawn(f)?;
        self.threads.push(t);
        Ok(())
    }

    /// Sets the flag and waits for every thread; again, it does nothing.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A read with a timeout that found nothing (would block, timed out, interrupted): the thread
/// checks its stop flag and reads again.
pub fn nothing_read(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

impl Drop for StopThreads {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_sets_the_flag_and_joins_every_thread() {
        let mut threads = StopThreads::new();
        let done = Arc::new(AtomicBool::new(false));
        for i in 0..2 {
            let (flag, done) = (threads.flag(), done.clone());
            threads
                .spawn(format!("t{i}"), move || {
                    while !flag.load(Ordering::Relaxed) {
                        std::thread::yield_now();
                    }
                    done.store(true, Ordering::Relaxed);
                })
                .unwrap();
        }
        threads.stop();
        assert!(done.load(Ordering::Relaxed));
        assert!(threads.flag().load(Ordering::Relaxed));
        threads.stop();
    }
}
