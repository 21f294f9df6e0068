//! `detector serve`: one long-running service watching every guest of a host.
//!
//! The configuration ([`config`]) lists QEMU guests (QMP socket + RAM file) and Xen
//! domains by name, or asks for every running Xen domain. Each guest has its own
//! interval, policy, checks and profile directory, and its own [`Watcher`]: the same
//! scans and events as `detector watch`. One thread runs the scans, earliest due first;
//! a guest that cannot be opened (not started yet, gone, no matching profile) is retried
//! with a growing delay and never holds up the others.
//!
//! **CPU budget.** The service measures its own CPU time (user + system) over a sliding
//! window; when the scans would use more than `cpu_budget` percent of one core, the next
//! scan waits until the window is back under it. Late scans are counted per guest
//! (`vmi_scans_late_total`) and a `cpu-budget` event says when the intervals cannot be
//! kept and when they can again.
//!
//! **Outputs** ([`output`]): JSON lines on standard output, RFC 5424 syslog, an
//! append-only file; **metrics** ([`metrics`]) on a loopback Prometheus endpoint.
//!
//! **Reload.** [`Service::reload`] (SIGHUP in the binary) reads the file again: a bad
//! file is reported and the running configuration kept; guests whose settings did not
//! change keep their watcher (processes and findings already seen), removed guests are
//! detached, new ones attached.

pub mod config;
pub mod metrics;
pub mod output;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use self::config::{Config, ConfigError, Guest, Watch};
use self::metrics::{Endpoint, Metrics};
use self::output::{ServiceEvent, Sinks};
use crate::checks::{Check, Settings};
use crate::finding::Severity;
use crate::policy::Policy;
use crate::target::{ProfileSpec, SourceSpec, Target};
use crate::watch::{Event, Tick, WatchOptions, Watcher};

/// How often the running Xen domains are listed when `[xen] all = true`.
const XEN_LIST_EVERY: Duration = Duration::from_secs(5);
/// The CPU-budget window.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// Longest wait between attempts to open a guest.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest a scan is put off for the budget at once.
const MAX_BUDGET_DELAY: Duration = Duration::from_secs(10);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An output could not be opened.
    #[error(transparent)]
    Output(#[from] output::OutputError),
    /// The metrics endpoint could not listen.
    #[error("the metrics endpoint {addr}: {source}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Check what the configuration refers to, beyond its syntax: profile directories exist,
/// policies parse. (Guests themselves may come and go.)
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    let problem = |message: String| ConfigError {
        path: config.path.clone(),
        line: 0,
        column: 0,
        message,
    };
    let mut watches: Vec<(&str, &Watch)> = config
        .guests
        .iter()
        .map(|g| (g.name.as_str(), &g.watch))
        .collect();
    if let Some(x) = &config.xen_all {
        watches.push(("[xen]", &x.watch));
    }
    for (name, w) in watches {
        if !w.profiles.is_dir() {
            return Err(problem(format!(
                "guest {name}: the profile directory {} does not exist (create it: profiles made from guest memory are written there)",
                w.profiles.display()
            )));
        }
        if let Some(p) = &w.policy {
            Policy::load(p).map_err(|e| problem(format!("guest {name}: {e}")))?;
        }
    }
    Ok(())
}

/// The CPU time of this process, in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// CPU use over a sliding window against a budget.
#[derive(Debug)]
struct Budget {
    /// Fraction of one core.
    limit: f64,
    samples: VecDeque<(Instant, f64)>,
    lagging: bool,
}

impl Budget {
    fn new(percent: f64) -> Budget {
        Budget {
            limit: percent / 100.0,
            samples: VecDeque::new(),
            lagging: false,
        }
    }

    fn sample(&mut self, now: Instant, cpu: f64) {
        self.samples.push_back((now, cpu));
        while self.samples.len() > 2 && now.duration_since(self.samples[0].0) > BUDGET_WINDOW {
            self.samples.pop_front();
        }
    }

    /// CPU share over the window divided by the limit.
    fn ratio(&self) -> f64 {
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else {
            return 0.0;
        };
        let wall = last.0.duration_since(first.0).as_secs_f64();
        if wall < 0.5 {
            return 0.0;
        }
        (last.1 - first.1) / wall / self.limit
    }

    /// How long to wait so that the window is back within the limit.
    fn delay(&self) -> Duration {
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else {
            return Duration::ZERO;
        };
        let wall = last.0.duration_since(first.0).as_secs_f64();
        let needed = (last.1 - first.1) / self.limit - wall;
        if needed <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(needed).min(MAX_BUDGET_DELAY)
        }
    }
}

struct GuestState {
    cfg: Guest,
    /// Added by `[xen] all`, not listed by name.
    discovered: bool,
    target: Option<Target>,
    watcher: Watcher,
    next: Instant,
    backoff: Duration,
    last_attach_error: Option<String>,
}

impl GuestState {
    fn new(cfg: Guest, discovered: bool, now: Instant) -> GuestState {
        let watcher = Watcher::new(watch_options(&cfg.watch));
        GuestState {
            cfg,
            discovered,
            target: None,
            watcher,
            next: now,
            backoff: Duration::from_secs(1),
            last_attach_error: None,
        }
    }
}

fn watch_options(w: &Watch) -> WatchOptions {
    let policy = w.policy.as_ref().and_then(|p| Policy::load(p).ok());
    let mut checks = w.checks.clone();
    if policy.is_some() && !checks.contains(&Check::Policy) {
        checks.push(Check::Policy);
    }
    WatchOptions {
        checks,
        pause: w.pause,
        settings: Settings {
            policy,
            ..Settings::default()
        },
        ..WatchOptions::default()
    }
}

fn severity(e: &Event) -> u8 {
    match e {
        Event::Finding(f) => match f.severity {
            Severity::High => 2,
            Severity::Medium => 4,
            Severity::Low => 5,
        },
        Event::Reset | Event::Shutdown { .. } | Event::ScanError { .. } => 4,
        _ => 6,
    }
}

/// The service.
pub struct Service {
    config: Config,
    guests: BTreeMap<String, GuestState>,
    sinks: Sinks,
    metrics: Arc<Mutex<Metrics>>,
    endpoint: Option<Endpoint>,
    budget: Budget,
    xen_listed: Option<Instant>,
    xen_error: Option<String>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("config", &self.config.path)
            .field("guests", &self.guests.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Open the outputs and the metrics endpoint for a checked configuration.
    pub fn new(config: Config) -> Result<Service, ServeError> {
        validate(&config)?;
        let sinks = Sinks::open(&config.outputs)?;
        let metrics = Arc::new(Mutex::new(Metrics::default()));
        let endpoint = match config.service.metrics {
            Some(addr) => Some(
                Endpoint::start(addr, metrics.clone())
                    .map_err(|source| ServeError::Metrics { addr, source })?,
            ),
            None => None,
        };
        let now = Instant::now();
        let guests = config
            .guests
            .iter()
            .map(|g| (g.name.clone(), GuestState::new(g.clone(), false, now)))
            .collect();
        Ok(Service {
            budget: Budget::new(config.service.cpu_budget),
            config,
            guests,
            sinks,
            metrics,
            endpoint,
            xen_listed: None,
            xen_error: None,
        })
    }

    /// Where the metrics endpoint listens.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.endpoint.as_ref().map(|e| e.addr)
    }

    fn emit(&mut self, guest: &str, body: Value, alert: bool, severity: u8) {
        let kind = body
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or("event")
            .to_string();
        let check = body
            .get("check")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Ok(mut m) = self.metrics.lock() {
            m.event(
                guest,
                &kind,
                if kind == "finding" {
                    check.as_deref()
                } else {
                    None
                },
            );
        }
        self.sinks.emit(&ServiceEvent {
            guest: guest.to_string(),
            body,
            alert,
            severity,
        });
    }

    fn update_gauges(&mut self) {
        let attached = self.guests.values().filter(|g| g.target.is_some()).count();
        let ratio = self.budget.ratio();
        let errors = self.sinks.errors;
        if let Ok(mut m) = self.metrics.lock() {
            m.set_guests(self.guests.len(), attached);
            m.cpu(cpu_seconds(), ratio);
            m.output_errors(errors);
        }
    }

    /// Run until `stop` says so; `reload` is polled between scans (and cleared by the
    /// caller's flag semantics: it returns true once per request).
    pub fn run(&mut self, stop: &dyn Fn() -> bool, reload: &mut dyn FnMut() -> bool) {
        let n = self.guests.len();
        self.emit(
            "-",
            json!({
                "event": "service-started",
                "config": self.config.path.display().to_string(),
                "guests": n,
                "xen_all": self.config.xen_all.is_some(),
                "version": env!("CARGO_PKG_VERSION"),
            }),
            true,
            5,
        );
        while !stop() {
            if reload() {
                self.reload();
            }
            let now = Instant::now();
            self.budget.sample(now, cpu_seconds());
            if self.config.xen_all.is_some()
                && self
                    .xen_listed
                    .is_none_or(|t| now.duration_since(t) >= XEN_LIST_EVERY)
            {
                self.xen_listed = Some(now);
                self.sync_xen(now);
            }
            self.update_gauges();
            let Some((name, due)) = self
                .guests
                .iter()
                .min_by_key(|(_, g)| g.next)
                .map(|(n, g)| (n.clone(), g.next))
            else {
                crate::watch::sleep_until(now + Duration::from_millis(200), stop);
                continue;
            };
            if due > now {
                crate::watch::sleep_until(due.min(now + Duration::from_millis(200)), stop);
                continue;
            }
            let delay = self.budget.delay();
            if !delay.is_zero() {
                if !self.budget.lagging {
                    self.budget.lagging = true;
                    let ratio = self.budget.ratio();
                    self.emit(
                        "-",
                        json!({
                            "event": "cpu-budget",
                            "over": true,
                            "budget_percent": self.config.service.cpu_budget,
                            "used_percent": ratio * self.config.service.cpu_budget,
                        }),
                        true,
                        4,
                    );
                }
                if let Some(g) = self.guests.get_mut(&name) {
                    g.next = now + delay;
                }
                if let Ok(mut m) = self.metrics.lock() {
                    m.late(&name);
                }
                continue;
            }
            if self.budget.lagging && self.budget.ratio() < 0.8 {
                self.budget.lagging = false;
                self.emit(
                    "-",
                    json!({ "event": "cpu-budget", "over": false, "budget_percent": self.config.service.cpu_budget }),
                    true,
                    5,
                );
            }
            self.step(&name, now);
        }
        self.update_gauges();
        let scans: u64 = self.guests.values().map(|g| g.watcher.scans()).sum();
        self.emit(
            "-",
            json!({ "event": "service-stopped", "scans": scans }),
            true,
            5,
        );
    }

    /// Attach, or scan, one guest that is due.
    fn step(&mut self, name: &str, now: Instant) {
        let Some(mut g) = self.guests.remove(name) else {
            return;
        };
        if g.target.is_none() {
            self.attach(&mut g, now);
        } else {
            self.scan(&mut g, now);
        }
        self.guests.insert(name.to_string(), g);
    }

    fn attach(&mut self, g: &mut GuestState, now: Instant) {
        match Target::open(
            &g.cfg.source,
            &ProfileSpec::Dir(g.cfg.watch.profiles.clone()),
        ) {
            Ok(target) => {
                let body = json!({
                    "event": "attached",
                    "source": config::source_name(&g.cfg.source),
                    "profile": target.profile_path.display().to_string(),
                    "interval_ms": g.cfg.watch.interval.as_millis() as u64,
                });
                g.target = Some(target);
                g.watcher = Watcher::new(watch_options(&g.cfg.watch));
                g.backoff = Duration::from_secs(1);
                g.last_attach_error = None;
                g.next = now;
                self.emit(&g.cfg.name.clone(), body, true, 5);
            }
            Err(e) => {
                let error = e.to_string();
                if let Ok(mut m) = self.metrics.lock() {
                    m.attach_failed(&g.cfg.name);
                }
                // once per distinct reason: a guest that is not up yet is not news
                // every second
                if g.last_attach_error.as_deref() != Some(error.as_str()) {
                    self.emit(
                        &g.cfg.name.clone(),
                        json!({ "event": "attach-failed", "error": error.clone() }),
                        true,
                        4,
                    );
                    g.last_attach_error = Some(error);
                }
                g.next = now + g.backoff;
                g.backoff = (g.backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    fn scan(&mut self, g: &mut GuestState, now: Instant) {
        let Some(target) = g.target.as_mut() else {
            return;
        };
        let started = Instant::now();
        let tick = g.watcher.tick(target);
        let secs = started.elapsed().as_secs_f64();
        if let Ok(mut m) = self.metrics.lock() {
            m.scan(&g.cfg.name, secs);
        }
        let (events, gone) = match tick {
            Tick::Continue(e) => (e, false),
            Tick::Gone(e) => (e, true),
        };
        let name = g.cfg.name.clone();
        for e in &events {
            self.emit(&name, e.to_json(), e.is_alert(), severity(e));
        }
        if gone {
            g.target = None;
            g.backoff = Duration::from_secs(1);
            g.next = now + g.backoff;
            self.emit(
                &name,
                json!({ "event": "detached", "reason": "the guest is gone" }),
                true,
                4,
            );
            return;
        }
        // the next scan one interval after this one was due; a late one starts a new
        // schedule rather than a burst
        let next = g.next + g.cfg.watch.interval;
        if next < Instant::now() {
            g.next = Instant::now() + g.cfg.watch.interval;
            if let Ok(mut m) = self.metrics.lock() {
                m.late(&name);
            }
        } else {
            g.next = next;
        }
    }

    /// Follow the running Xen domains (`[xen] all = true`).
    fn sync_xen(&mut self, now: Instant) {
        let Some(all) = self.config.xen_all.clone() else {
            return;
        };
        let domains = match vmi_core::memory::list_domains() {
            Ok(d) => {
                self.xen_error = None;
                d
            }
            Err(e) => {
                let error = e.to_string();
                if self.xen_error.as_deref() != Some(error.as_str()) {
                    self.emit(
                        "-",
                        json!({ "event": "xen-list-failed", "error": error.clone() }),
                        true,
                        4,
                    );
                    self.xen_error = Some(error);
                }
                return;
            }
        };
        let mut running = Vec::new();
        for d in domains {
            if d.domid == 0 || d.dying || d.shutdown {
                continue;
            }
            let name = d
                .name
                .clone()
                .unwrap_or_else(|| format!("domain-{}", d.domid));
            if all.exclude.iter().any(|p| config::glob_match(p, &name)) {
                continue;
            }
            running.push(name);
        }
        for name in &running {
            if !self.guests.contains_key(name) {
                let cfg = Guest {
                    name: name.clone(),
                    source: SourceSpec::Xen {
                        domain: name.clone(),
                    },
                    watch: all.watch.clone(),
                };
                self.guests
                    .insert(name.clone(), GuestState::new(cfg, true, now));
            }
        }
        let gone: Vec<String> = self
            .guests
            .iter()
            .filter(|(n, g)| g.discovered && !running.contains(n))
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            let was = self.guests.remove(&n).is_some_and(|g| g.target.is_some());
            if was {
                self.emit(
                    &n,
                    json!({ "event": "detached", "reason": "the domain is no longer running" }),
                    true,
                    4,
                );
            }
            if let Ok(mut m) = self.metrics.lock() {
                m.remove(&n);
            }
        }
    }

    /// A new configuration that cannot be applied: said, and the running one kept.
    fn reject(&mut self, e: &dyn std::error::Error) {
        self.emit(
            "-",
            json!({ "event": "config-rejected", "error": e.to_string() }),
            true,
            3,
        );
    }

    /// Read the configuration file again and apply it; a bad file changes nothing.
    pub fn reload(&mut self) {
        let path = self.config.path.clone();
        let new = match Config::load(&path).and_then(|c| validate(&c).map(|()| c)) {
            Ok(c) => c,
            Err(e) => return self.reject(&e),
        };
        if new.outputs != self.config.outputs {
            match Sinks::open(&new.outputs) {
                Ok(s) => self.sinks = s,
                Err(e) => return self.reject(&e),
            }
        }
        if new.service.metrics != self.config.service.metrics {
            self.endpoint = None;
            if let Some(addr) = new.service.metrics {
                match Endpoint::start(addr, self.metrics.clone()) {
                    Ok(ep) => self.endpoint = Some(ep),
                    Err(e) => self.emit(
                        "-",
                        json!({ "event": "metrics-failed", "address": addr.to_string(), "error": e.to_string() }),
                        true,
                        3,
                    ),
                }
            }
        }
        let now = Instant::now();
        let mut kept = 0;
        let mut added = Vec::new();
        let mut changed = Vec::new();
        let mut removed = Vec::new();
        let old_names: Vec<String> = self
            .guests
            .iter()
            .filter(|(_, g)| !g.discovered)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &old_names {
            if !new.guests.iter().any(|g| &g.name == n) {
                self.guests.remove(n);
                if let Ok(mut m) = self.metrics.lock() {
                    m.remove(n);
                }
                removed.push(n.clone());
            }
        }
        for g in &new.guests {
            match self.guests.get(&g.name) {
                Some(s) if s.cfg == *g && !s.discovered => kept += 1,
                Some(_) => {
                    self.guests
                        .insert(g.name.clone(), GuestState::new(g.clone(), false, now));
                    changed.push(g.name.clone());
                }
                None => {
                    self.guests
                        .insert(g.name.clone(), GuestState::new(g.clone(), false, now));
                    added.push(g.name.clone());
                }
            }
        }
        if new.xen_all.is_none() {
            self.guests.retain(|_, g| !g.discovered);
        }
        self.xen_listed = None;
        self.budget.limit = new.service.cpu_budget / 100.0;
        self.config = new;
        self.emit(
            "-",
            json!({
                "event": "config-reloaded",
                "kept": kept,
                "added": added,
                "changed": changed,
                "removed": removed,
            }),
            true,
            5,
        );
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// A summary of a configuration, for `--check-config`.
pub fn describe(config: &Config) -> String {
    let mut s = format!(
        "{}: {} guest(s){}; CPU budget {}% of one core; metrics {}\n",
        config.path.display(),
        config.guests.len(),
        if config.xen_all.is_some() {
            " and every running Xen domain"
        } else {
            ""
        },
        config.service.cpu_budget,
        config
            .service
            .metrics
            .map_or_else(|| "off".to_string(), |a| a.to_string()),
    );
    for g in &config.guests {
        let src = config::source_name(&g.source);
        s.push_str(&format!(
            "  {}: {src}, every {:?}, {} check(s){}, profiles {}\n",
            g.name,
            g.watch.interval,
            g.watch.checks.len(),
            g.watch
                .policy
                .as_ref()
                .map(|p| format!(" + policy {}", p.display()))
                .unwrap_or_default(),
            g.watch.profiles.display()
        ));
    }
    s
}

/// The default configuration file.
pub fn default_config_path() -> PathBuf {
    PathBuf::from("/etc/vmi/detector.toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_delays_when_over() {
        let mut b = Budget::new(10.0);
        let t0 = Instant::now();
        b.sample(t0, 0.0);
        b.sample(t0 + Duration::from_secs(2), 0.1); // 5 % of a core
        assert!(b.ratio() < 1.0);
        assert_eq!(b.delay(), Duration::ZERO);
        b.sample(t0 + Duration::from_secs(4), 1.0); // 25 %
        assert!(b.ratio() > 1.0);
        // 1.0 s of CPU at 10 % needs 10 s of wall time: 6 more
        let d = b.delay().as_secs_f64();
        assert!((d - 6.0).abs() < 0.01, "{d}");
    }
}
