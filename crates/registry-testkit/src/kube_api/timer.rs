//! Sleeps with sub-millisecond precision for injected latency.
//!
//! Tokio's timer has millisecond ticks and rounds deadlines up, so a 5 ms
//! sleep lasts about 6–6.5 ms under load: the simulated API server would be
//! slower than configured. This timer is one thread waiting on a condition
//! variable until the earliest deadline (the OS's nanosecond sleep), then
//! waking the futures whose deadline passed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Instant;

use tokio::sync::oneshot;

struct Entry {
    deadline: Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

#[derive(Default)]
struct Timer {
    queue: Mutex<(BinaryHeap<Reverse<Entry>>, u64)>,
    changed: Condvar,
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        let timer: &'static Timer = Box::leak(Box::default());
        std::thread::Builder::new()
            .name("kube-sim-timer".into())
            .spawn(move || timer.run())
            .expect("timer thread starts");
        timer
    })
}

impl Timer {
    fn run(&self) {
        let mut guard = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = Instant::now();
            while guard.0.peek().is_some_and(|Reverse(e)| e.deadline <= now) {
                if let Some(Reverse(entry)) = guard.0.pop() {
                    let _ = entry.wake.send(());
                }
            }
            guard = match guard.0.peek().map(|Reverse(e)| e.deadline) {
                Some(deadline) => {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    self.changed
                        .wait_timeout(guard, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.changed.wait(guard).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }
}

/// Resolves at `deadline`, within tens of microseconds.
pub(crate) async fn sleep_until(deadline: Instant) {
    if deadline <= Instant::now() {
        return;
    }
    let (wake, woken) = oneshot::channel();
    {
        let timer = timer();
        let mut guard = timer.queue.lock().unwrap_or_else(|e| e.into_inner());
        guard.1 += 1;
        let seq = guard.1;
        guard.0.push(Reverse(Entry { deadline, seq, wake }));
        timer.changed.notify_one();
    }
    let _ = woken.await;
}
