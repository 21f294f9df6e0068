//! `detector serve`: one long-running service watching every guest of a host.
//!
//! The configuration ([`config`]) lists QEMU guests (QMP socket + RAM file), libvirt
//! and Xen domains by name, or asks for every running libvirt or Xen domain (listed
//! every 5 s: domains started later are picked up). Each guest has its own
//! interval, policy, checks and profile directory, and its own thread ([`worker`]) with
//! its own `Watcher`: the same scans and events as `detector watch`. A guest that cannot
//! be opened (not started yet, gone, no matching profile) is retried with a growing
//! delay; one that hangs (a stopped QEMU answers QMP only after its timeout) holds up
//! only its own thread. The service's thread does all output and counting.
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
pub mod worker;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use self::config::{Config, ConfigError, Guest, Watch};
use self::metrics::{Endpoint, Metrics};
use self::output::Sinks;
use self::worker::{Gate, Msg, Tagged, Worker};
use crate::checks::{Check, Settings};
use crate::events::{Record, ServiceEvent};
use crate::policy::Policy;
use crate::target::SourceSpec;
use crate::watch::WatchOptions;

/// How often the running domains are listed when `[xen] all` or `[libvirt] all` is true.
const LIST_EVERY: Duration = Duration::from_secs(5);

/// True (and `listed` set to now) when the domains are due to be listed again.
fn due(listed: &mut Option<Instant>, now: Instant) -> bool {
    if listed.is_some_and(|t| now.duration_since(t) < LIST_EVERY) {
        return false;
    }
    *listed = Some(now);
    true
}
/// The CPU-budget window.
const BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// Longest a scan is put off for the budget at once.
const MAX_BUDGET_DELAY: Duration = Duration::from_secs(10);
/// How long stopping waits for a guest's thread.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An output could not be opened.
    #[error(transparent)]
    Output(#[from] crate::events::OutputError),
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
    if let Some(l) = &config.libvirt_all {
        watches.push(("[libvirt]", &l.watch));
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

pub(crate) fn watch_options(w: &Watch) -> WatchOptions {
    let policy = w.policy.as_ref().and_then(|p| Policy::load(p).ok());
    let mut checks = w.checks.clone();
    if policy.is_some() && !checks.contains(&Check::Policy) {
        checks.push(Check::Policy);
    }
    WatchOptions {
        checks,
        pause: w.pause,
        incremental: w.incremental,
        full_every: w.full_every,
        settings: Settings {
            policy,
            ..Settings::default()
        },
        ..WatchOptions::default()
    }
}

/// The service.
pub struct Service {
    config: Config,
    workers: BTreeMap<String, Worker>,
    tx: Sender<Tagged>,
    rx: Receiver<Tagged>,
    gate: Arc<Gate>,
    sinks: Sinks,
    metrics: Arc<Mutex<Metrics>>,
    endpoint: Option<Endpoint>,
    budget: Budget,
    attached: BTreeSet<String>,
    scans: u64,
    xen_listed: Option<Instant>,
    libvirt_listed: Option<Instant>,
    /// The last listing error of each kind of domain, said once until it changes.
    list_errors: BTreeMap<&'static str, String>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("config", &self.config.path)
            .field("guests", &self.workers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Open the outputs and the metrics endpoint for a checked configuration. The
    /// guests' threads start with [`Service::run`].
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
        let (tx, rx) = channel();
        Ok(Service {
            budget: Budget::new(config.service.cpu_budget),
            config,
            workers: BTreeMap::new(),
            tx,
            rx,
            gate: Arc::new(Gate::new()),
            sinks,
            metrics,
            endpoint,
            attached: BTreeSet::new(),
            scans: 0,
            xen_listed: None,
            libvirt_listed: None,
            list_errors: BTreeMap::new(),
        })
    }

    /// Where the metrics endpoint listens.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.endpoint.as_ref().map(|e| e.addr)
    }

    fn emit(&mut self, rec: Record) {
        let kind = rec.kind();
        match kind {
            "attached" => {
                self.attached.insert(rec.guest.clone());
            }
            "detached" => {
                self.attached.remove(&rec.guest);
            }
            _ => {}
        }
        let check = match kind {
            "finding" => rec.body.get("check").and_then(serde_json::Value::as_str),
            _ => None,
        };
        if let Ok(mut m) = self.metrics.lock() {
            m.event(&rec.guest, kind, check);
        }
        self.sinks.emit(&rec);
    }

    /// One of the service's own events (`guest` `-`) or a guest's attachment.
    fn say(&mut self, guest: &str, e: ServiceEvent) {
        self.emit(Record::service(guest, &e));
    }

    fn handle(&mut self, (id, msg): Tagged) {
        // a thread stopped by a reload may still report: only the current threads count
        let current = |guest: &str| self.workers.get(guest).is_some_and(|w| w.id == id);
        let guest = match &msg {
            Msg::Event(Record { guest, .. })
            | Msg::Scanned { guest, .. }
            | Msg::AttachFailed { guest }
            | Msg::Late { guest } => guest,
        };
        if !current(guest) {
            return;
        }
        match msg {
            Msg::Event(rec) => self.emit(rec),
            Msg::Scanned { guest, figures } => {
                self.scans += 1;
                if let Ok(mut m) = self.metrics.lock() {
                    m.scan(&guest, figures);
                }
            }
            Msg::AttachFailed { guest } => {
                if let Ok(mut m) = self.metrics.lock() {
                    m.attach_failed(&guest);
                }
            }
            Msg::Late { guest } => {
                if let Ok(mut m) = self.metrics.lock() {
                    m.late(&guest);
                }
            }
        }
    }

    fn update_gauges(&mut self) {
        let ratio = self.budget.ratio();
        let errors = self.sinks.errors;
        let (configured, attached) = (self.workers.len(), self.attached.len());
        if let Ok(mut m) = self.metrics.lock() {
            m.set_guests(configured, attached);
            m.cpu(cpu_seconds(), ratio);
            m.output_errors(errors);
        }
    }

    /// Start a guest's thread.
    fn start(&mut self, cfg: Guest, discovered: bool) {
        let name = cfg.name.clone();
        match Worker::start(cfg, discovered, self.tx.clone(), self.gate.clone()) {
            Ok(w) => {
                self.workers.insert(name, w);
            }
            Err(e) => {
                let e = ServiceEvent::AttachFailed {
                    error: format!("starting its thread: {e}"),
                };
                // the service's own failure, not the guest's: an error
                self.emit(Record {
                    severity: 3,
                    ..Record::service(&name, &e)
                });
            }
        }
    }

    /// Stop a guest's thread; `why` goes into a `detached` event when it was attached.
    fn drop_guest(&mut self, name: &str, why: &str) {
        if let Some(w) = self.workers.remove(name) {
            w.finish(Duration::ZERO);
        }
        if self.attached.contains(name) {
            self.say(
                name,
                ServiceEvent::Detached {
                    reason: why.to_string(),
                },
            );
        }
        if let Ok(mut m) = self.metrics.lock() {
            m.remove(name);
        }
    }

    /// Run until `stop` says so; `reload` is polled between messages and returns true
    /// once per reload request.
    pub fn run(&mut self, stop: &dyn Fn() -> bool, reload: &mut dyn FnMut() -> bool) {
        let n = self.config.guests.len();
        self.say(
            "-",
            ServiceEvent::Started {
                config: self.config.path.display().to_string(),
                guests: n,
                xen_all: self.config.xen_all.is_some(),
            },
        );
        for g in self.config.guests.clone() {
            self.start(g, false);
        }
        while !stop() {
            if reload() {
                self.reload();
            }
            let now = Instant::now();
            self.budget.sample(now, cpu_seconds());
            if self.config.xen_all.is_some() && due(&mut self.xen_listed, now) {
                self.sync_xen();
            }
            if self.config.libvirt_all.is_some() && due(&mut self.libvirt_listed, now) {
                self.sync_libvirt();
            }
            self.check_budget(now);
            self.update_gauges();
            match self.rx.recv_timeout(Duration::from_millis(200)) {
                Ok(msg) => {
                    self.handle(msg);
                    while let Ok(msg) = self.rx.try_recv() {
                        self.handle(msg);
                    }
                }
                Err(_) => continue,
            }
        }
        let workers = std::mem::take(&mut self.workers);
        for w in workers.values() {
            w.stop();
        }
        for (_, w) in workers {
            w.finish(STOP_WAIT);
        }
        while let Ok((_, msg)) = self.rx.try_recv() {
            if let Msg::Scanned { .. } = msg {
                self.scans += 1;
            }
        }
        self.update_gauges();
        let scans = self.scans;
        self.say("-", ServiceEvent::Stopped { scans });
    }

    /// Close the gate while the window is over the budget; say when that starts and ends.
    fn check_budget(&mut self, now: Instant) {
        let delay = self.budget.delay();
        if !delay.is_zero() {
            self.gate.close_until(now + delay);
            if !self.budget.lagging {
                self.budget.lagging = true;
                let ratio = self.budget.ratio();
                let budget_percent = self.config.service.cpu_budget;
                self.say(
                    "-",
                    ServiceEvent::CpuBudget {
                        over: true,
                        budget_percent,
                        used_percent: Some(ratio * budget_percent),
                    },
                );
            }
        } else if self.budget.lagging && self.budget.ratio() < 0.8 {
            self.budget.lagging = false;
            let budget_percent = self.config.service.cpu_budget;
            self.say(
                "-",
                ServiceEvent::CpuBudget {
                    over: false,
                    budget_percent,
                    used_percent: None,
                },
            );
        }
    }

    /// A listing of domains, or `None` after saying why it failed (once per new error).
    fn listed<T>(
        &mut self,
        kind: &'static str,
        result: Result<T, String>,
        event: impl FnOnce(String) -> ServiceEvent,
    ) -> Option<T> {
        match result {
            Ok(v) => {
                self.list_errors.remove(kind);
                Some(v)
            }
            Err(error) => {
                if self.list_errors.get(kind) != Some(&error) {
                    self.list_errors.insert(kind, error.clone());
                    self.say("-", event(error));
                }
                None
            }
        }
    }

    /// Follow the running Xen domains (`[xen] all = true`).
    fn sync_xen(&mut self) {
        let Some(all) = self.config.xen_all.clone() else {
            return;
        };
        let result = vmi_core::memory::list_domains().map_err(|e| e.to_string());
        let Some(domains) =
            self.listed("xen", result, |error| ServiceEvent::XenListFailed { error })
        else {
            return;
        };
        let running = domains
            .into_iter()
            .filter(|d| d.domid != 0 && !d.dying && !d.shutdown)
            .map(|d| d.name.unwrap_or_else(|| format!("domain-{}", d.domid)))
            .filter(|name| !all.exclude.iter().any(|g| g.is_match(name.as_bytes())))
            .collect();
        self.follow(running, &all.watch, |name| SourceSpec::Xen {
            domain: name.into(),
        });
    }

    /// Follow the running libvirt domains (`[libvirt] all = true`).
    fn sync_libvirt(&mut self) {
        let Some(all) = self.config.libvirt_all.clone() else {
            return;
        };
        let result = vmi_core::memory::running_domains(&all.uri).map_err(|e| e.to_string());
        let Some(domains) = self.listed("libvirt", result, |error| {
            ServiceEvent::LibvirtListFailed { error }
        }) else {
            return;
        };
        let running = domains
            .into_iter()
            .filter(|name| !all.exclude.iter().any(|g| g.is_match(name.as_bytes())))
            .collect();
        self.follow(running, &all.watch, |name| SourceSpec::Libvirt {
            name: name.into(),
            uri: all.uri.clone(),
        });
    }

    /// Start a thread for each domain in `running` not watched yet, and stop those of
    /// the same kind found earlier that no longer run.
    fn follow(
        &mut self,
        running: Vec<String>,
        watch: &config::Watch,
        source: impl Fn(&str) -> SourceSpec,
    ) {
        for name in &running {
            if !self.workers.contains_key(name) {
                let cfg = Guest {
                    name: name.clone(),
                    source: source(name),
                    watch: watch.clone(),
                };
                self.start(cfg, true);
            }
        }
        let kind = std::mem::discriminant(&source(""));
        let gone: Vec<String> = self
            .workers
            .iter()
            .filter(|(n, w)| {
                w.discovered
                    && std::mem::discriminant(&w.cfg.source) == kind
                    && !running.contains(n)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            self.drop_guest(&n, "the domain is no longer running");
        }
    }

    /// Stop the threads of the domains `[table] all` found whose source is `kind`.
    fn drop_discovered(&mut self, kind: fn(&SourceSpec) -> bool, table: &str) {
        let discovered: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| w.discovered && kind(&w.cfg.source))
            .map(|(n, _)| n.clone())
            .collect();
        for n in discovered {
            self.drop_guest(&n, &format!("the {table} settings changed"));
        }
    }

    /// A new configuration that cannot be applied: said, and the running one kept.
    fn reject(&mut self, e: &dyn std::error::Error) {
        self.say(
            "-",
            ServiceEvent::ConfigRejected {
                error: e.to_string(),
            },
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
                    Err(e) => self.say(
                        "-",
                        ServiceEvent::MetricsFailed {
                            address: addr.to_string(),
                            error: e.to_string(),
                        },
                    ),
                }
            }
        }
        let mut kept = 0;
        let mut added = Vec::new();
        let mut changed = Vec::new();
        let mut removed = Vec::new();
        let listed: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.discovered)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &listed {
            if !new.guests.iter().any(|g| &g.name == n) {
                self.drop_guest(n, "removed from the configuration");
                removed.push(n.clone());
            }
        }
        for g in &new.guests {
            let same = self
                .workers
                .get(&g.name)
                .map(|w| w.cfg == *g && !w.discovered);
            match same {
                Some(true) => kept += 1,
                Some(false) => {
                    self.drop_guest(&g.name, "its settings changed");
                    self.start(g.clone(), false);
                    changed.push(g.name.clone());
                }
                None => {
                    self.start(g.clone(), false);
                    added.push(g.name.clone());
                }
            }
        }
        if new.xen_all != self.config.xen_all {
            self.drop_discovered(|s| matches!(s, SourceSpec::Xen { .. }), "[xen]");
        }
        if new.libvirt_all != self.config.libvirt_all {
            self.drop_discovered(|s| matches!(s, SourceSpec::Libvirt { .. }), "[libvirt]");
        }
        self.xen_listed = None;
        self.libvirt_listed = None;
        self.budget.limit = new.service.cpu_budget / 100.0;
        self.config = new;
        self.say(
            "-",
            ServiceEvent::ConfigReloaded {
                kept,
                added,
                changed,
                removed,
            },
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
        match (config.xen_all.is_some(), config.libvirt_all.is_some()) {
            (true, true) => " and every running Xen and libvirt domain",
            (true, false) => " and every running Xen domain",
            (false, true) => " and every running libvirt domain",
            (false, false) => "",
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
