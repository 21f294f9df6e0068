//! One guest's thread: attach, scan at its interval, report.
//!
//! Each guest has its own thread, so a guest whose QEMU stops answering (QMP waits up to
//! its timeout) or whose memory is slow delays only itself. The thread owns the guest's
//! `Target` and `Watcher` and sends what happens to the service's thread, which does all
//! output and counting. It waits for the service's CPU-budget gate before each scan.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Numbers the threads, so a stopped thread's last messages are told from its successor's.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::config::{self, Guest};
use crate::events::{Record, ServiceEvent};
use crate::target::{ProfileSpec, Target};
use crate::watch::{Tick, Watcher};

/// Longest wait between attempts to open a guest.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a waiting thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(100);

/// What a guest's thread tells the service.
#[derive(Debug)]
pub enum Msg {
    /// An event to emit.
    Event(Record),
    /// A scan took this long.
    Scanned {
        /// The guest.
        guest: String,
        /// What it took and did.
        figures: super::metrics::ScanFigures,
    },
    /// Opening the guest failed.
    AttachFailed {
        /// The guest.
        guest: String,
    },
    /// A scan started later than its interval asked.
    Late {
        /// The guest.
        guest: String,
    },
}

/// The CPU-budget gate: no scan starts before this many milliseconds after `base`.
#[derive(Debug)]
pub struct Gate {
    base: Instant,
    not_before_ms: AtomicU64,
}

impl Gate {
    /// An open gate.
    pub fn new() -> Gate {
        Gate {
            base: Instant::now(),
            not_before_ms: AtomicU64::new(0),
        }
    }

    /// Hold scans until `t`.
    pub fn close_until(&self, t: Instant) {
        let ms = t.saturating_duration_since(self.base).as_millis() as u64;
        self.not_before_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn open_at(&self) -> Instant {
        self.base + Duration::from_millis(self.not_before_ms.load(Ordering::Relaxed))
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

/// What a guest's thread sends: its [`Worker::id`] and the message.
pub type Tagged = (u64, Msg);

/// A running guest thread.
#[derive(Debug)]
pub struct Worker {
    /// This thread's number, on everything it sends.
    pub id: u64,
    /// The guest's settings.
    pub cfg: Guest,
    /// Added by `[xen] all`, not listed by name.
    pub discovered: bool,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Start watching `cfg`.
    pub fn start(
        cfg: Guest,
        discovered: bool,
        tx: Sender<Tagged>,
        gate: Arc<Gate>,
    ) -> std::io::Result<Worker> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread_cfg = cfg.clone();
        let handle = std::thread::Builder::new()
            .name(format!("vmi-{}", cfg.name))
            .spawn(move || run(thread_cfg, &flag, &Out { id, tx }, &gate))?;
        Ok(Worker {
            id,
            cfg,
            discovered,
            stop,
            handle: Some(handle),
        })
    }

    /// Ask the thread to stop (it finishes its current step).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Stop and wait up to `timeout` for the thread; a thread stuck in a guest's
    /// timeout is left to end on its own.
    pub fn finish(mut self, timeout: Duration) {
        self.stop();
        let deadline = Instant::now() + timeout;
        if let Some(h) = self.handle.take() {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sleep until `t` in steps; false when asked to stop.
fn wait_until(t: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= t {
            return true;
        }
        std::thread::sleep((t - now).min(POLL));
    }
}

/// The thread's end of the channel.
struct Out {
    id: u64,
    tx: Sender<Tagged>,
}

impl Out {
    fn send(&self, m: Msg) {
        let _ = self.tx.send((self.id, m));
    }
}

fn event(tx: &Out, guest: &str, e: ServiceEvent) {
    tx.send(Msg::Event(Record::service(guest, &e)));
}

fn run(cfg: Guest, stop: &AtomicBool, tx: &Out, gate: &Gate) {
    let name = cfg.name.clone();
    let mut target: Option<Target> = None;
    let mut watcher = Watcher::new(super::watch_options(&cfg.watch));
    let mut next = Instant::now();
    let mut backoff = Duration::from_secs(1);
    let mut last_error: Option<String> = None;
    while wait_until(next, stop) {
        let Some(t) = target.as_mut() else {
            match Target::open(&cfg.source, &ProfileSpec::Dir(cfg.watch.profiles.clone())) {
                Ok(t) => {
                    event(
                        tx,
                        &name,
                        ServiceEvent::Attached {
                            source: config::source_name(&cfg.source),
                            profile: t.profile_path.display().to_string(),
                            interval_ms: cfg.watch.interval.as_millis() as u64,
                        },
                    );
                    target = Some(t);
                    watcher = Watcher::new(super::watch_options(&cfg.watch));
                    backoff = Duration::from_secs(1);
                    last_error = None;
                    next = Instant::now();
                }
                Err(e) => {
                    let error = e.to_string();
                    tx.send(Msg::AttachFailed {
                        guest: name.clone(),
                    });
                    // once per distinct reason: a guest that is not up yet is not news
                    // every second
                    if last_error.as_deref() != Some(error.as_str()) {
                        event(
                            tx,
                            &name,
                            ServiceEvent::AttachFailed {
                                error: error.clone(),
                            },
                        );
                        last_error = Some(error);
                    }
                    next = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            continue;
        };
        // the CPU budget may hold the scan
        let open = gate.open_at();
        if open > Instant::now() {
            tx.send(Msg::Late {
                guest: name.clone(),
            });
            if !wait_until(open, stop) {
                break;
            }
        }
        let due = next;
        let started = Instant::now();
        let tick = watcher.tick(t);
        let stats = watcher.tick_stats().unwrap_or_default();
        tx.send(Msg::Scanned {
            guest: name.clone(),
            figures: super::metrics::ScanFigures {
                secs: started.elapsed().as_secs_f64(),
                work: watcher.last_scan().as_secs_f64(),
                kept: u64::from(stats.kept),
                ran: u64::from(stats.ran),
            },
        });
        let (events, gone) = match tick {
            Tick::Continue(e) => (e, false),
            Tick::Gone(e) => (e, true),
        };
        for e in &events {
            tx.send(Msg::Event(Record::watch(&name, e)));
        }
        if gone {
            target = None;
            backoff = Duration::from_secs(1);
            next = Instant::now() + backoff;
            event(
                tx,
                &name,
                ServiceEvent::Detached {
                    reason: "the guest is gone".into(),
                },
            );
            continue;
        }
        // the next scan one interval after this one was due; a late one starts a new
        // schedule rather than a burst
        next = due + cfg.watch.interval;
        if next < Instant::now() {
            next = Instant::now() + cfg.watch.interval;
            tx.send(Msg::Late {
                guest: name.clone(),
            });
        }
    }
}
