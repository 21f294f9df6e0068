//! The service's configuration file (`/etc/vmi/detector.toml`).
//!
//! ```toml
//! [service]
//! cpu_budget = 5.0               # % of one core the scans may use (default 5)
//! metrics = "127.0.0.1:9187"     # Prometheus endpoint, loopback only (default: none)
//!
//! [output]
//! stdout = "all"                 # JSON lines: "all" events, "alerts", or "none"
//! syslog = "alerts"              # RFC 5424 to /dev/log (default "none")
//! syslog_socket = "/dev/log"
//! file = "/var/log/vmi/alerts.jsonl"   # append-only JSON lines (default: none)
//! file_events = "alerts"
//!
//! [defaults]                     # for every guest, each may override
//! interval = "1s"
//! profiles = "/var/lib/vmi/profiles"
//! policy = "/etc/vmi/policy.toml"
//! pause = false
//! checks = ["all"]
//! incremental = true             # run a check again only when what it reads changed
//! full_every = 600               # and every check in full on one scan in 600 (0: never)
//!
//! [[guest]]
//! name = "web1"
//! qemu = "/run/web1/qmp.sock"    # a QEMU guest: its QMP socket
//! mem_path = "/dev/shm/web1.ram" # and its RAM file, when not the one QEMU names
//! interval = "500ms"
//!
//! [[guest]]
//! name = "db"
//! xen = "db"                     # a Xen domain, by name or id
//!
//! [[guest]]
//! name = "mail"
//! libvirt = "mail"               # a libvirt domain (QEMU), by name
//! libvirt_uri = "qemu:///system" # (the default)
//!
//! [xen]                          # every running Xen domain but dom0 ...
//! all = true
//! exclude = ["build-*"]          # ... except these names (globs)
//!
//! [libvirt]                      # every running libvirt domain ...
//! all = true
//! uri = "qemu:///system"         # (the default)
//! exclude = ["test-*"]           # ... except these names (globs)
//! ```
//!
//! Unknown keys and wrong types are errors that name the file, the line and the column:
//! a typo must not silently turn a check off.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::checks::Check;
use crate::glob::Glob;
use crate::target::SourceSpec;

/// Largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Most guests one service watches.
pub const MAX_GUESTS: usize = 1024;

/// A configuration error: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line (0 when the error is not at a place in the file).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong and, where it helps, what to write instead.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.path.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Which events an output gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Events {
    /// None: the output is off.
    None,
    /// Findings and changes of a guest's state (attach, detach, reset, shutdown).
    Alerts,
    /// Every event, process starts and exits included.
    All,
}

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outputs {
    /// JSON lines on standard output (journald under systemd).
    pub stdout: Events,
    /// RFC 5424 messages to a local syslog socket.
    pub syslog: Events,
    /// The syslog socket.
    pub syslog_socket: PathBuf,
    /// An append-only JSON-lines file.
    pub file: Option<PathBuf>,
    /// What goes into the file.
    pub file_events: Events,
}

/// Service-wide settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Percent of one core the scans may use.
    pub cpu_budget: f64,
    /// The Prometheus endpoint.
    pub metrics: Option<SocketAddr>,
}

/// `qemu:<socket>`, `qemu-pid:<pid>`, `libvirt:<name>[@<uri>]` or `xen:<domain>`, as
/// events and `--check-config` name a source.
pub fn source_name(s: &SourceSpec) -> String {
    match s {
        SourceSpec::Qemu { socket, .. } => format!("qemu:{}", socket.display()),
        SourceSpec::QemuPid { pid, .. } => format!("qemu-pid:{pid}"),
        SourceSpec::Xen { domain } => format!("xen:{domain}"),
        SourceSpec::Libvirt { name, uri } if uri == vmi_core::memory::SYSTEM_URI => {
            format!("libvirt:{name}")
        }
        SourceSpec::Libvirt { name, uri } => format!("libvirt:{name}@{uri}"),
        SourceSpec::Dump(p) => format!("dump:{}", p.display()),
    }
}

/// How one guest is watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// Time between scans.
    pub interval: Duration,
    /// The profile directory.
    pub profiles: PathBuf,
    /// The policy file.
    pub policy: Option<PathBuf>,
    /// Pause the guest around scans.
    pub pause: bool,
    /// The checks.
    pub checks: Vec<Check>,
    /// Incremental scans (`watch`'s default; false: every check in full every scan).
    pub incremental: bool,
    /// With incremental scans, every check in full on one scan in this many (0: never).
    pub full_every: u64,
}

/// One guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    /// Its name in events and metrics.
    pub name: String,
    /// Its memory: a QEMU guest or a Xen domain (never a dump).
    pub source: SourceSpec,
    /// How it is watched.
    pub watch: Watch,
}

/// Every running libvirt domain of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtAll {
    /// libvirt's connection URI.
    pub uri: String,
    /// Domain names not to watch (globs: `*`, `?`).
    pub exclude: Vec<Glob>,
    /// How each is watched.
    pub watch: Watch,
}

/// Every running Xen domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XenAll {
    /// Domain names not to watch (globs: `*`, `?`).
    pub exclude: Vec<Glob>,
    /// How each is watched.
    pub watch: Watch,
}

/// A parsed configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// Service-wide settings.
    pub service: Service,
    /// Outputs.
    pub outputs: Outputs,
    /// Guests listed by name.
    pub guests: Vec<Guest>,
    /// Every running Xen domain, when asked for.
    pub xen_all: Option<XenAll>,
    /// Every running libvirt domain, when asked for.
    pub libvirt_all: Option<LibvirtAll>,
}

/// Parse `1s`, `500ms`, `2m` (10 ms to 24 h).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: a number and a unit (ms, s, m), e.g. 1s"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: the unit is ms, s or m")),
    };
    if !(0.01..=86_400.0).contains(&secs) {
        return Err(format!("{s:?}: between 10ms and 24h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        ConfigError {
            path: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    fn nowhere(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.path.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
        }
    }
}

type Entry<'i> = (
    &'i Spanned<toml::de::DeString<'i>>,
    &'i Spanned<DeValue<'i>>,
);

fn table<'i>(
    cx: &Ctx<'_>,
    v: &'i Spanned<DeValue<'i>>,
    what: &str,
) -> Result<&'i DeTable<'i>, ConfigError> {
    v.get_ref()
        .as_table()
        .ok_or_else(|| cx.at(v.span(), format!("{what} must be a table ([{what}])")))
}

fn string<'i>(cx: &Ctx<'_>, (k, v): Entry<'i>) -> Result<&'i str, ConfigError> {
    v.get_ref()
        .as_str()
        .ok_or_else(|| cx.at(v.span(), format!("{} must be a string", k.get_ref())))
}

fn boolean(cx: &Ctx<'_>, (k, v): Entry<'_>) -> Result<bool, ConfigError> {
    v.get_ref()
        .as_bool()
        .ok_or_else(|| cx.at(v.span(), format!("{} must be true or false", k.get_ref())))
}

fn strings(cx: &Ctx<'_>, (k, v): Entry<'_>) -> Result<Vec<String>, ConfigError> {
    let bad = || {
        cx.at(
            v.span(),
            format!("{} must be a list of strings", k.get_ref()),
        )
    };
    let arr = v.get_ref().as_array().ok_or_else(bad)?;
    arr.iter()
        .map(|x| x.get_ref().as_str().map(str::to_string).ok_or_else(bad))
        .collect()
}

fn globs(cx: &Ctx<'_>, e: Entry<'_>) -> Result<Vec<Glob>, ConfigError> {
    strings(cx, e)?
        .iter()
        .map(|g| Glob::new(g).map_err(|err| cx.at(e.1.span(), format!("{g:?}: {err}"))))
        .collect()
}

fn events(cx: &Ctx<'_>, e: Entry<'_>) -> Result<Events, ConfigError> {
    match string(cx, e)? {
        "all" => Ok(Events::All),
        "alerts" => Ok(Events::Alerts),
        "none" => Ok(Events::None),
        other => Err(cx.at(
            e.1.span(),
            format!(
                "{} = {other:?}: write \"all\", \"alerts\" or \"none\"",
                e.0.get_ref()
            ),
        )),
    }
}

fn unknown(
    cx: &Ctx<'_>,
    k: &Spanned<toml::de::DeString<'_>>,
    section: &str,
    known: &[&str],
) -> ConfigError {
    cx.at(
        k.span(),
        format!(
            "unknown key {:?} in {section} (known: {})",
            k.get_ref(),
            known.join(", ")
        ),
    )
}

/// Watch settings: the defaults, overridden by the keys of a guest or [xen] table.
/// Returns true when the key was one of them.
fn watch_key(cx: &Ctx<'_>, w: &mut Watch, e: Entry<'_>) -> Result<bool, ConfigError> {
    let (k, v) = e;
    match k.get_ref().as_ref() {
        "interval" => {
            w.interval = parse_duration(string(cx, e)?).map_err(|m| cx.at(v.span(), m))?;
        }
        "profiles" => w.profiles = PathBuf::from(string(cx, e)?),
        "policy" => {
            let p = string(cx, e)?;
            w.policy = (!p.is_empty()).then(|| PathBuf::from(p));
        }
        "pause" => w.pause = boolean(cx, e)?,
        "incremental" => w.incremental = boolean(cx, e)?,
        "full_every" => {
            w.full_every = match v.get_ref() {
                DeValue::Integer(i) => i.as_str().parse::<u64>().ok(),
                _ => None,
            }
            .ok_or_else(|| cx.at(v.span(), "full_every is a number of scans, 0 or more"))?
        }
        "checks" => {
            let names = strings(cx, e)?;
            let mut checks = Vec::new();
            for n in &names {
                if n == "all" {
                    checks.extend(Check::ALL);
                    continue;
                }
                match Check::from_name(n) {
                    Some(c) => checks.push(c),
                    None => {
                        return Err(cx.at(
                            v.span(),
                            format!(
                                "unknown check {n:?} (known: all, {}, policy, kernel-text)",
                                Check::ALL.map(Check::name).join(", ")
                            ),
                        ))
                    }
                }
            }
            checks.dedup();
            w.checks = checks;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

const WATCH_KEYS: [&str; 7] = [
    "interval",
    "profiles",
    "policy",
    "pause",
    "checks",
    "incremental",
    "full_every",
];

impl Config {
    /// Read and check a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let nowhere = |message: String| ConfigError {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| nowhere(format!("cannot read it: {e}")))?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(nowhere(format!(
                "{} bytes: a configuration is at most {MAX_CONFIG_BYTES}",
                meta.len()
            )));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| nowhere(format!("cannot read it: {e}")))?;
        Config::parse(path, &text)
    }

    /// Parse configuration text (`path` names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let cx = Ctx { path, text };
        let doc = DeTable::parse(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            cx.at(span, format!("not valid TOML: {}", e.message()))
        })?;
        let mut config = Config {
            path: path.to_path_buf(),
            service: Service {
                cpu_budget: 5.0,
                metrics: None,
            },
            outputs: Outputs {
                stdout: Events::All,
                syslog: Events::None,
                syslog_socket: PathBuf::from("/dev/log"),
                file: None,
                file_events: Events::Alerts,
            },
            guests: Vec::new(),
            xen_all: None,
            libvirt_all: None,
        };
        let mut defaults = Watch {
            interval: Duration::from_secs(1),
            profiles: PathBuf::from("/var/lib/vmi/profiles"),
            policy: None,
            pause: false,
            checks: Check::ALL.to_vec(),
            incremental: true,
            full_every: 600,
        };
        // [defaults] first: guests inherit it wherever it stands in the file
        if let Some((_, v)) = doc
            .get_ref()
            .iter()
            .find(|(k, _)| k.get_ref() == "defaults")
        {
            for e in table(&cx, v, "defaults")? {
                if !watch_key(&cx, &mut defaults, e)? {
                    return Err(unknown(&cx, e.0, "[defaults]", &WATCH_KEYS));
                }
            }
        }
        let mut guest_tables = None;
        let mut xen_table = None;
        let mut libvirt_table = None;
        for (k, v) in doc.get_ref() {
            match k.get_ref().as_ref() {
                "defaults" => {}
                "service" => {
                    for e in table(&cx, v, "service")? {
                        match e.0.get_ref().as_ref() {
                            "cpu_budget" => {
                                let n = match e.1.get_ref() {
                                    DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
                                    DeValue::Integer(i) => i.as_str().parse::<f64>().ok(),
                                    _ => None,
                                };
                                match n {
                                    Some(n) if (0.1..=100.0).contains(&n) => {
                                        config.service.cpu_budget = n
                                    }
                                    _ => {
                                        return Err(cx.at(
                                            e.1.span(),
                                            "cpu_budget is a percentage of one core, 0.1 to 100",
                                        ))
                                    }
                                }
                            }
                            "metrics" => {
                                let s = string(&cx, e)?;
                                let addr: SocketAddr = s.parse().map_err(|_| {
                                    cx.at(e.1.span(), format!("metrics = {s:?}: an address and port, e.g. \"127.0.0.1:9187\""))
                                })?;
                                if !addr.ip().is_loopback() {
                                    return Err(cx.at(
                                        e.1.span(),
                                        format!("metrics = {s:?}: the endpoint listens on loopback only (127.0.0.1 or [::1]); put a proxy in front to expose it"),
                                    ));
                                }
                                config.service.metrics = Some(addr);
                            }
                            _ => {
                                return Err(unknown(
                                    &cx,
                                    e.0,
                                    "[service]",
                                    &["cpu_budget", "metrics"],
                                ))
                            }
                        }
                    }
                }
                "output" => {
                    for e in table(&cx, v, "output")? {
                        match e.0.get_ref().as_ref() {
                            "stdout" => config.outputs.stdout = events(&cx, e)?,
                            "syslog" => config.outputs.syslog = events(&cx, e)?,
                            "syslog_socket" => {
                                config.outputs.syslog_socket = PathBuf::from(string(&cx, e)?)
                            }
                            "file" => {
                                let f = string(&cx, e)?;
                                config.outputs.file = (!f.is_empty()).then(|| PathBuf::from(f));
                            }
                            "file_events" => config.outputs.file_events = events(&cx, e)?,
                            _ => {
                                return Err(unknown(
                                    &cx,
                                    e.0,
                                    "[output]",
                                    &["stdout", "syslog", "syslog_socket", "file", "file_events"],
                                ))
                            }
                        }
                    }
                }
                "guest" => guest_tables = Some(v),
                "xen" => xen_table = Some(v),
                "libvirt" => libvirt_table = Some(v),
                _ => {
                    return Err(unknown(
                        &cx,
                        k,
                        "the file",
                        &["service", "output", "defaults", "guest", "xen", "libvirt"],
                    ))
                }
            }
        }
        if let Some(v) = guest_tables {
            let arr = v.get_ref().as_array().ok_or_else(|| {
                cx.at(
                    v.span(),
                    "guest must be an array of tables: write [[guest]]",
                )
            })?;
            for g in arr.iter() {
                if config.guests.len() >= MAX_GUESTS {
                    return Err(cx.at(g.span(), format!("more than {MAX_GUESTS} guests")));
                }
                let guest = parse_guest(&cx, g, &defaults)?;
                if config.guests.iter().any(|o| o.name == guest.name) {
                    return Err(cx.at(
                        g.span(),
                        format!(
                            "a second guest named {:?}: names must be unique",
                            guest.name
                        ),
                    ));
                }
                config.guests.push(guest);
            }
        }
        if let Some(v) = xen_table {
            let mut watch = defaults.clone();
            let mut all = false;
            let mut exclude = Vec::new();
            for e in table(&cx, v, "xen")? {
                match e.0.get_ref().as_ref() {
                    "all" => all = boolean(&cx, e)?,
                    "exclude" => exclude = globs(&cx, e)?,
                    _ => {
                        if !watch_key(&cx, &mut watch, e)? {
                            let mut known = vec!["all", "exclude"];
                            known.extend(WATCH_KEYS);
                            return Err(unknown(&cx, e.0, "[xen]", &known));
                        }
                    }
                }
            }
            if all {
                config.xen_all = Some(XenAll { exclude, watch });
            }
        }
        if let Some(v) = libvirt_table {
            let mut watch = defaults.clone();
            let mut all = false;
            let mut exclude = Vec::new();
            let mut uri = vmi_core::memory::SYSTEM_URI.to_string();
            for e in table(&cx, v, "libvirt")? {
                match e.0.get_ref().as_ref() {
                    "all" => all = boolean(&cx, e)?,
                    "exclude" => exclude = globs(&cx, e)?,
                    "uri" => uri = string(&cx, e)?.to_string(),
                    _ => {
                        if !watch_key(&cx, &mut watch, e)? {
                            let mut known = vec!["all", "exclude", "uri"];
                            known.extend(WATCH_KEYS);
                            return Err(unknown(&cx, e.0, "[libvirt]", &known));
                        }
                    }
                }
            }
            if all {
                config.libvirt_all = Some(LibvirtAll {
                    uri,
                    exclude,
                    watch,
                });
            }
        }
        if config.guests.is_empty() && config.xen_all.is_none() && config.libvirt_all.is_none() {
            return Err(cx.nowhere(
                "no guest to watch: add a [[guest]] table (name and qemu, libvirt or xen), or [libvirt] all = true, or [xen] all = true",
            ));
        }
        Ok(config)
    }
}

fn parse_guest(
    cx: &Ctx<'_>,
    v: &Spanned<DeValue<'_>>,
    defaults: &Watch,
) -> Result<Guest, ConfigError> {
    let t = table(cx, v, "guest")?;
    let mut watch = defaults.clone();
    let mut name = None;
    let mut qemu = None;
    let mut mem_path = None;
    let mut xen = None;
    let mut libvirt = None;
    let mut libvirt_uri = None;
    for e in t {
        match e.0.get_ref().as_ref() {
            "name" => name = Some(string(cx, e)?.to_string()),
            "qemu" => qemu = Some((PathBuf::from(string(cx, e)?), e.1.span())),
            "mem_path" => mem_path = Some((PathBuf::from(string(cx, e)?), e.1.span())),
            "xen" => xen = Some((string(cx, e)?.to_string(), e.1.span())),
            "libvirt" => libvirt = Some((string(cx, e)?.to_string(), e.1.span())),
            "libvirt_uri" => libvirt_uri = Some((string(cx, e)?.to_string(), e.1.span())),
            _ => {
                if !watch_key(cx, &mut watch, e)? {
                    let mut known =
                        vec!["name", "qemu", "mem_path", "xen", "libvirt", "libvirt_uri"];
                    known.extend(WATCH_KEYS);
                    return Err(unknown(cx, e.0, "[[guest]]", &known));
                }
            }
        }
    }
    let name = name.ok_or_else(|| cx.at(v.span(), "this [[guest]] has no name"))?;
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(cx.at(
            v.span(),
            format!("guest name {name:?}: 1 to 64 of A-Z a-z 0-9 - _ . (it is a metrics label)"),
        ));
    }
    if let (Some((_, span)), None) = (&libvirt_uri, &libvirt) {
        return Err(cx.at(
            span.clone(),
            format!("guest {name:?}: libvirt_uri goes with libvirt = \"<domain>\""),
        ));
    }
    if let (Some((_, span)), None) = (&mem_path, &qemu) {
        return Err(cx.at(
            span.clone(),
            format!("guest {name:?}: mem_path is for QEMU guests given by qemu = \"<QMP socket>\""),
        ));
    }
    let source = match (qemu, xen, libvirt) {
        (Some((socket, _)), None, None) => SourceSpec::Qemu {
            socket,
            mem_path: mem_path.map(|(p, _)| p),
        },
        (None, Some((domain, _)), None) => SourceSpec::Xen { domain },
        (None, None, Some((domain, _))) => SourceSpec::Libvirt {
            name: domain,
            uri: libvirt_uri.map_or_else(|| vmi_core::memory::SYSTEM_URI.into(), |(u, _)| u),
        },
        (None, None, None) => {
            return Err(cx.at(
                v.span(),
                format!(
                "guest {name:?}: say where it runs: qemu = \"<QMP socket>\", libvirt = \"<domain>\" or xen = \"<domain>\""
            ),
            ))
        }
        _ => {
            return Err(cx.at(
                v.span(),
                format!("guest {name:?}: give one of qemu, libvirt and xen"),
            ))
        }
    };
    Ok(Guest {
        name,
        source,
        watch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/vmi/detector.toml"), text)
    }

    #[test]
    fn a_full_config() {
        let c = parse(
            r#"
[service]
cpu_budget = 2
metrics = "127.0.0.1:9187"

[output]
stdout = "alerts"
syslog = "alerts"
file = "/var/log/vmi/alerts.jsonl"

[defaults]
interval = "2s"
profiles = "/srv/profiles"
checks = ["hidden-process", "idt"]

[[guest]]
name = "web1"
qemu = "/run/web1.qmp"
mem_path = "/dev/shm/web1"
interval = "500ms"

[[guest]]
name = "db"
xen = "db"
pause = true
checks = ["all"]
incremental = false
full_every = 50

[[guest]]
name = "mail"
libvirt = "mail"

[xen]
all = true
exclude = ["build-*"]

[libvirt]
all = true
uri = "qemu+ssh://h/system"
exclude = ["test-*"]
"#,
        )
        .unwrap();
        assert_eq!(c.service.cpu_budget, 2.0);
        assert_eq!(c.service.metrics.unwrap().port(), 9187);
        assert_eq!(c.outputs.stdout, Events::Alerts);
        assert_eq!(
            c.outputs.file.as_deref(),
            Some(Path::new("/var/log/vmi/alerts.jsonl"))
        );
        assert_eq!(c.guests.len(), 3);
        assert_eq!(c.guests[0].watch.interval, Duration::from_millis(500));
        assert_eq!(
            c.guests[0].watch.checks,
            vec![Check::HiddenProcess, Check::Idt]
        );
        assert_eq!(c.guests[0].watch.profiles, PathBuf::from("/srv/profiles"));
        assert!(matches!(&c.guests[1].source, SourceSpec::Xen { domain } if domain == "db"));
        assert!(matches!(&c.guests[2].source,
            SourceSpec::Libvirt { name, uri } if name == "mail" && uri == "qemu:///system"));
        let l = c.libvirt_all.clone().unwrap();
        assert_eq!(l.uri, "qemu+ssh://h/system");
        assert_eq!(l.exclude, vec!["test-*"]);
        assert!(c.guests[1].watch.pause);
        assert_eq!(c.guests[1].watch.checks, Check::ALL.to_vec());
        assert!(!c.guests[1].watch.incremental && c.guests[0].watch.incremental);
        assert_eq!(
            (c.guests[1].watch.full_every, c.guests[0].watch.full_every),
            (50, 600)
        );
        assert_eq!(c.guests[1].watch.interval, Duration::from_secs(2));
        let x = c.xen_all.unwrap();
        assert_eq!(x.exclude, vec!["build-*"]);
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = parse("[[guest]]\nname = \"a\"\nqemu = \"/q\"\nintervall = \"1s\"\n").unwrap_err();
        assert_eq!((e.line, e.column), (4, 1), "{e}");
        assert!(e.message.contains("unknown key \"intervall\""), "{e}");
        assert!(
            e.to_string().starts_with("/etc/vmi/detector.toml:4:1: "),
            "{e}"
        );

        let e = parse("[[guest]]\nname = \"a\"\nqemu = \"/q\"\ninterval = \"1h\"\n").unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("unit"), "{e}");

        let e = parse("[service]\nmetrics = \"0.0.0.0:9187\"\n[[guest]]\nname=\"a\"\nxen=\"a\"\n")
            .unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("loopback"), "{e}");

        let e = parse("[[guest]]\nname = \"a\"\n").unwrap_err();
        assert!(e.message.contains("qemu = "), "{e}");

        let e =
            parse("[[guest]]\nname = \"a\"\nxen = \"a\"\n[[guest]]\nname = \"a\"\nxen = \"b\"\n")
                .unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("unique"), "{e}");

        let e = parse("[[guest]]\nname = \"a\"\nxen = \"a\"\nchecks = [\"idt\", \"ftarce\"]\n")
            .unwrap_err();
        assert!(e.message.contains("unknown check \"ftarce\""), "{e}");

        let e =
            parse("[output]\nstdout = \"some\"\n[[guest]]\nname=\"a\"\nxen=\"a\"\n").unwrap_err();
        assert_eq!(e.line, 2);

        let e = parse("[[guest]\n").unwrap_err();
        assert_eq!(e.line, 1, "{e}");
        assert!(e.message.contains("not valid TOML"), "{e}");

        let e = parse("").unwrap_err();
        assert!(e.message.contains("no guest"), "{e}");
        assert_eq!(e.line, 0);

        let e = parse("[[guest]]\nname = \"a\"\nxen = \"a\"\nfull_every = -1\n").unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("full_every"), "{e}");

        let e = parse("[[guest]]\nname = \"a b\"\nxen = \"a\"\n").unwrap_err();
        assert!(e.message.contains("metrics label"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
