//! The policy file: what may not run in the guest, and who may run as root.
//!
//! ```toml
//! # process names (comm, at most 15 bytes) that must not run
//! deny_names = ["nc", "xmrig"]
//! # executables that must not run: globs over the whole path, `*` any run of
//! # characters (slashes included), `?` one character
//! deny_exe = ["/tmp/*", "/dev/shm/*", "*/.*/*"]
//! # a process whose effective uid is 0 must have a real uid in this list (0: root
//! # itself); a user running a setuid-root program, or given root, is a violation
//! root_uids = [0]
//! # listening sockets allowed ("PROTO:PORT", PROTO tcp, udp or *, PORT a number or
//! # *; IPv4 and IPv6 alike); any other TCP listener or bound, unconnected UDP socket
//! # of a user process is a violation
//! allow_listen = ["tcp:22", "udp:*"]
//! # executables whose writable-and-executable or anonymous executable memory the
//! # malfind check accepts (just-in-time compilers): globs as for deny_exe
//! allow_jit = ["/usr/bin/node", "/usr/lib/jvm/*/bin/java"]
//! # executables and executable mappings the exec-location check accepts from a
//! # memfd, a deleted file or a world-writable directory: globs over the path
//! # without " (deleted)" (a memfd's is /memfd:NAME), as for deny_exe
//! allow_exec_location = ["/memfd:runc_cloned:*", "/tmp/app-runtime/*"]
//! # executables whose packet and raw sockets may have a BPF filter (the
//! # socket-filter check; replaces the default list, socket_filter::DEFAULT_ALLOWED:
//! # tcpdump, DHCP clients and servers, network managers): globs as for deny_exe
//! allow_socket_filter = ["/usr/sbin/tcpdump", "/opt/probe/bin/*"]
//! # executables that may trace other processes (the ptrace check; replaces the
//! # default list, ptrace::DEFAULT_TRACERS: gdb, gdbserver, strace, ltrace, rr,
//! # criu as Debian installs them): globs over the tracer's executable, as for
//! # deny_exe (not its comm, which any process sets)
//! allow_tracers = ["/usr/bin/gdb", "/opt/agent/bin/*"]
//! # libraries and directories the preload check accepts in LD_PRELOAD, LD_AUDIT,
//! # LD_LIBRARY_PATH and /etc/ld.so.preload: globs over each path named, as for
//! # deny_exe
//! allow_preload = ["/usr/lib/x86_64-linux-gnu/libjemalloc.so.*"]
//! # BPF program types the ebpf check reports (replaces the default list,
//! # DEFAULT_EBPF_TYPES): TYPE (any attach type) or TYPE/ATTACH_TYPE, named as
//! # `detector bpf` shows them
//! ebpf_types = ["kprobe", "tracing/modify_return", "lsm"]
//! # BPF programs allowed anyway: by name (aux->name) or by tag ("tag:" and 16 hex
//! # digits, as bpftool shows it)
//! ebpf_allow = ["my_agent_probe", "tag:0123456789abcdef"]
//! ```
//!
//! Every key is optional; unknown keys are an error (a typo must not disable a rule).
//! Kernel threads are not processes of any user and are not checked.

use std::collections::BTreeSet;
use std::path::Path;

use crate::glob::Glob;

/// Largest policy file read.
const MAX_POLICY_BYTES: u64 = 1 << 20;

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read.
    #[error("reading the policy {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML.
    #[error("the policy is not valid TOML: {0}")]
    Toml(String),
    /// A key it does not know, or a value of the wrong type.
    #[error("the policy's {key}: {what}")]
    Key {
        /// The key.
        key: String,
        /// What is wrong.
        what: String,
    },
}

/// A parsed policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Process names that must not run.
    pub deny_names: Vec<String>,
    /// Executable path globs that must not run.
    pub deny_exe: Vec<Glob>,
    /// Real uids allowed to run with effective uid 0 (`None`: no rule).
    pub root_uids: Option<BTreeSet<u32>>,
    /// Listeners allowed, as (protocol, port), `None` for `*` (`None`: no rule).
    pub allow_listen: Option<Vec<(Option<String>, Option<u16>)>>,
    /// Executable path globs allowed JIT memory (the malfind check skips them).
    pub allow_jit: Vec<Glob>,
    /// File path globs the exec-location check accepts anywhere.
    pub allow_exec_location: Vec<Glob>,
    /// Executable path globs allowed a packet or raw socket's filter (`None`:
    /// [`crate::checks::socket_filter::DEFAULT_ALLOWED`]).
    pub allow_socket_filter: Option<Vec<Glob>>,
    /// Executable path globs allowed to trace processes (`None`:
    /// [`crate::checks::ptrace::DEFAULT_TRACERS`]).
    pub allow_tracers: Option<Vec<Glob>>,
    /// Library and directory path globs the preload check accepts.
    pub allow_preload: Vec<Glob>,
    /// BPF program types reported (`None`: [`DEFAULT_EBPF_TYPES`]).
    pub ebpf_types: Option<Vec<String>>,
    /// BPF programs allowed, by name or `tag:HEX`.
    pub ebpf_allow: Vec<String>,
}

/// The BPF program types the `ebpf` check reports without a policy: those that run on
/// kernel functions, tracepoints and security hooks, where they observe or alter what
/// the kernel does (not `tracing/trace_iter`: an iterator runs only when read).
pub const DEFAULT_EBPF_TYPES: &[&str] = &[
    "kprobe",
    "tracepoint",
    "raw_tracepoint",
    "raw_tracepoint_writable",
    "perf_event",
    "tracing/trace_raw_tp",
    "tracing/trace_fentry",
    "tracing/trace_fexit",
    "tracing/modify_return",
    "tracing/trace_kprobe_multi",
    "lsm",
    "ext",
    "struct_ops",
];

/// One `ebpf_types` entry: a program type, or a type and an expected attach type.
fn ebpf_type(key: &str, v: &str) -> Result<String, PolicyError> {
    use vmi_core::kernel::bpf::{ATTACH_TYPES, PROG_TYPES};
    let (ty, attach) = match v.split_once('/') {
        Some((t, a)) => (t, Some(a)),
        None => (v, None),
    };
    if !PROG_TYPES.contains(&ty) || attach.is_some_and(|a| !ATTACH_TYPES.contains(&a)) {
        return Err(PolicyError::Key {
            key: key.into(),
            what: format!(
                "{v:?} is not TYPE or TYPE/ATTACH_TYPE (types: {})",
                PROG_TYPES.join(", ")
            ),
        });
    }
    Ok(v.to_string())
}

/// One `ebpf_allow` entry: a name (at most 15 bytes) or `tag:` and 16 hex digits.
fn ebpf_allowed(key: &str, v: &str) -> Result<String, PolicyError> {
    let ok = match v.strip_prefix("tag:") {
        Some(t) => t.len() == 16 && t.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !v.is_empty() && v.len() < 16,
    };
    if !ok {
        return Err(PolicyError::Key {
            key: key.into(),
            what: format!(
                "{v:?} is neither a program name (1-15 bytes) nor tag:HEX (16 hex digits)"
            ),
        });
    }
    // tags compare in lower case, names as written
    Ok(match v.strip_prefix("tag:") {
        Some(t) => format!("tag:{}", t.to_ascii_lowercase()),
        None => v.to_string(),
    })
}

/// One `allow_listen` entry: `tcp:22`, `udp:*`, `*:53`.
fn listener(key: &str, v: &str) -> Result<(Option<String>, Option<u16>), PolicyError> {
    let bad = || PolicyError::Key {
        key: key.into(),
        what: format!("{v:?} is not PROTO:PORT (PROTO tcp, udp or *; PORT 0-65535 or *)"),
    };
    let (proto, port) = v.split_once(':').ok_or_else(bad)?;
    let proto = match proto {
        "*" => None,
        "tcp" | "udp" => Some(proto.to_string()),
        _ => return Err(bad()),
    };
    let port = match port {
        "*" => None,
        n => Some(n.parse::<u16>().map_err(|_| bad())?),
    };
    Ok((proto, port))
}

fn strings(key: &str, v: &toml::Value) -> Result<Vec<String>, PolicyError> {
    let bad = || PolicyError::Key {
        key: key.into(),
        what: "a list of strings is expected".into(),
    };
    v.as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|s| s.as_str().map(str::to_string).ok_or_else(bad))
        .collect()
}

/// A list of globs.
fn globs(key: &str, v: &toml::Value) -> Result<Vec<Glob>, PolicyError> {
    strings(key, v)?
        .iter()
        .map(|g| {
            Glob::new(g).map_err(|e| PolicyError::Key {
                key: key.into(),
                what: format!("{g:?}: {e}"),
            })
        })
        .collect()
}

impl Policy {
    /// Parse a policy from TOML text.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| PolicyError::Toml(e.to_string()))?;
        let mut p = Policy::default();
        for (key, v) in &table {
            match key.as_str() {
                "deny_names" => p.deny_names = strings(key, v)?,
                "deny_exe" => p.deny_exe = globs(key, v)?,
                "root_uids" => {
                    let bad = || PolicyError::Key {
                        key: key.clone(),
                        what: "a list of uids (0 to 4294967294) is expected".into(),
                    };
                    let uids = v
                        .as_array()
                        .ok_or_else(bad)?
                        .iter()
                        .map(|u| {
                            u.as_integer()
                                .and_then(|i| u32::try_from(i).ok())
                                .filter(|&i| i != u32::MAX)
                                .ok_or_else(bad)
                        })
                        .collect::<Result<BTreeSet<u32>, _>>()?;
                    p.root_uids = Some(uids);
                }
                "allow_listen" => {
                    p.allow_listen = Some(
                        strings(key, v)?
                            .iter()
                            .map(|e| listener(key, e))
                            .collect::<Result<_, _>>()?,
                    )
                }
                "ebpf_types" => {
                    p.ebpf_types = Some(
                        strings(key, v)?
                            .iter()
                            .map(|e| ebpf_type(key, e))
                            .collect::<Result<_, _>>()?,
                    )
                }
                "ebpf_allow" => {
                    p.ebpf_allow = strings(key, v)?
                        .iter()
                        .map(|e| ebpf_allowed(key, e))
                        .collect::<Result<_, _>>()?
                }
                "allow_jit" => p.allow_jit = globs(key, v)?,
                "allow_exec_location" => p.allow_exec_location = globs(key, v)?,
                "allow_socket_filter" => p.allow_socket_filter = Some(globs(key, v)?),
                "allow_tracers" => p.allow_tracers = Some(globs(key, v)?),
                "allow_preload" => p.allow_preload = globs(key, v)?,
                other => return Err(PolicyError::Key {
                    key: other.into(),
                    what: "unknown key (the keys are deny_names, deny_exe, root_uids, allow_listen, ebpf_types, ebpf_allow, allow_jit, allow_exec_location, allow_socket_filter, allow_tracers, allow_preload)"
                        .into(),
                }),
            }
        }
        Ok(p)
    }

    /// Read and parse a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let io = |source| PolicyError::Io {
            path: path.display().to_string(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_POLICY_BYTES {
            return Err(PolicyError::Toml(format!(
                "{len} bytes is too large for a policy"
            )));
        }
        Policy::parse(&std::fs::read_to_string(path).map_err(io)?)
    }

    /// True when the policy has no `allow_listen` rule or lets `proto` (`tcp`, `udp`)
    /// listen on `port`.
    pub fn listen_allowed(&self, proto: &str, port: u16) -> bool {
        self.allow_listen.as_ref().is_none_or(|rules| {
            rules.iter().any(|(p, n)| {
                p.as_deref().is_none_or(|p| p == proto) && n.is_none_or(|n| n == port)
            })
        })
    }

    /// True when BPF programs of `prog_type` with `attach_type` are reported: the
    /// type is listed alone or with that attach type (`ebpf_types`, or
    /// [`DEFAULT_EBPF_TYPES`]).
    pub fn ebpf_type_listed(&self, prog_type: &str, attach_type: &str) -> bool {
        let listed = |t: &str| {
            t == prog_type
                || t.split_once('/')
                    .is_some_and(|(ty, a)| ty == prog_type && a == attach_type)
        };
        match &self.ebpf_types {
            Some(types) => types.iter().any(|t| listed(t)),
            None => DEFAULT_EBPF_TYPES.iter().any(|t| listed(t)),
        }
    }

    /// The `ebpf_allow` entry that allows the program named `name` with tag `tag`
    /// (16 lower-case hex digits).
    pub fn ebpf_allowed(&self, name: &[u8], tag: &str) -> Option<&str> {
        self.ebpf_allow
            .iter()
            .find(|a| match a.strip_prefix("tag:") {
                Some(t) => t == tag,
                None => a.as_bytes() == name,
            })
            .map(String::as_str)
    }

    /// True when `path` (an executable's or a mapped file's, without ` (deleted)`)
    /// matches an `allow_exec_location` glob.
    pub fn exec_location_allowed(&self, path: &[u8]) -> bool {
        self.allow_exec_location.iter().any(|g| g.is_match(path))
    }

    /// True when the executable `path` (without ` (deleted)`) may filter a packet or
    /// raw socket: it matches an `allow_socket_filter` glob, or without that key one of
    /// [`crate::checks::socket_filter::DEFAULT_ALLOWED`].
    pub fn socket_filter_allowed(&self, path: &[u8]) -> bool {
        match &self.allow_socket_filter {
            Some(globs) => globs.iter().any(|g| g.is_match(path)),
            None => crate::checks::socket_filter::DEFAULT_ALLOWED
                .iter()
                .any(|d| d.as_bytes() == path),
        }
    }

    /// True when the executable `path` (without ` (deleted)`) may trace processes: it
    /// matches an `allow_tracers` glob, or without that key is one of
    /// [`crate::checks::ptrace::DEFAULT_TRACERS`].
    pub fn tracer_allowed(&self, path: &[u8]) -> bool {
        match &self.allow_tracers {
            Some(globs) => globs.iter().any(|g| g.is_match(path)),
            None => crate::checks::ptrace::known_debugger(path),
        }
    }

    /// True when `path` (a library or directory a loader variable or
    /// `/etc/ld.so.preload` names) matches an `allow_preload` glob.
    pub fn preload_allowed(&self, path: &[u8]) -> bool {
        self.allow_preload.iter().any(|g| g.is_match(path))
    }

    /// True when `path` matches an `allow_jit` glob.
    pub fn jit_allowed(&self, path: &[u8]) -> bool {
        self.allow_jit.iter().any(|g| g.is_match(path))
    }

    /// The `deny_exe` glob that `path` matches.
    pub fn denied_exe(&self, path: &[u8]) -> Option<&str> {
        self.deny_exe
            .iter()
            .find(|g| g.is_match(path))
            .map(Glob::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let p = Policy::parse(
            "deny_names = [\"nc\"]\ndeny_exe = [\"/tmp/*\"]\nroot_uids = [0, 1000]\n",
        )
        .unwrap();
        assert_eq!(p.deny_names, vec!["nc"]);
        assert_eq!(p.denied_exe(b"/tmp/x"), Some("/tmp/*"));
        assert_eq!(p.denied_exe(b"/bin/sh"), None);
        assert_eq!(p.root_uids, Some([0, 1000].into_iter().collect()));
        assert_eq!(Policy::parse("").unwrap(), Policy::default());
        let e = Policy::parse("deny_name = [\"nc\"]").unwrap_err();
        assert!(e.to_string().contains("unknown key"), "{e}");
        let e = Policy::parse("root_uids = [-1]").unwrap_err();
        assert!(e.to_string().contains("root_uids"), "{e}");
        let e = Policy::parse("deny_exe = \"/tmp/*\"").unwrap_err();
        assert!(e.to_string().contains("list of strings"), "{e}");
        assert!(matches!(
            Policy::parse("deny_names = [").unwrap_err(),
            PolicyError::Toml(_)
        ));
    }

    #[test]
    fn ebpf_rules() {
        let d = Policy::default();
        assert!(d.ebpf_type_listed("kprobe", "perf_event"));
        assert!(d.ebpf_type_listed("tracing", "modify_return"));
        assert!(!d.ebpf_type_listed("tracing", "trace_iter"));
        assert!(!d.ebpf_type_listed("socket_filter", "cgroup_inet_ingress"));
        let p = Policy::parse(
            "ebpf_types = [\"socket_filter\", \"tracing/trace_iter\"]\nebpf_allow = [\"agent\", \"tag:DEADBEEF00010203\"]",
        )
        .unwrap();
        assert!(p.ebpf_type_listed("socket_filter", "cgroup_inet_ingress"));
        assert!(p.ebpf_type_listed("tracing", "trace_iter"));
        assert!(!p.ebpf_type_listed("kprobe", "perf_event"));
        assert_eq!(p.ebpf_allowed(b"agent", "0000000000000000"), Some("agent"));
        assert_eq!(
            p.ebpf_allowed(b"x", "deadbeef00010203"),
            Some("tag:deadbeef00010203")
        );
        assert_eq!(p.ebpf_allowed(b"x", "deadbeef00010204"), None);
        for bad in [
            "ebpf_types = [\"kprobes\"]",
            "ebpf_types = [\"tracing/fentry\"]",
            "ebpf_allow = [\"tag:123\"]",
            "ebpf_allow = [\"a_name_far_too_long\"]",
        ] {
            let e = Policy::parse(bad).unwrap_err();
            assert!(e.to_string().contains("ebpf_"), "{e}");
        }
    }

    #[test]
    fn jit_executables() {
        let p =
            Policy::parse("allow_jit = [\"/usr/bin/node\", \"/usr/lib/jvm/*/bin/java\"]").unwrap();
        assert!(p.jit_allowed(b"/usr/bin/node"));
        assert!(p.jit_allowed(b"/usr/lib/jvm/java-17-openjdk-amd64/bin/java"));
        assert!(!p.jit_allowed(b"/tmp/node"));
        assert!(!Policy::default().jit_allowed(b"/usr/bin/node"));
        let e = Policy::parse("allow_jit = \"/usr/bin/node\"").unwrap_err();
        assert!(e.to_string().contains("allow_jit"), "{e}");
    }

    #[test]
    fn listeners() {
        assert!(Policy::default().listen_allowed("tcp", 4444));
        let p = Policy::parse("allow_listen = [\"tcp:22\", \"udp:*\", \"*:53\"]").unwrap();
        assert!(p.listen_allowed("tcp", 22));
        assert!(p.listen_allowed("udp", 4444));
        assert!(p.listen_allowed("tcp", 53));
        assert!(!p.listen_allowed("tcp", 4444));
        assert!(!Policy::parse("allow_listen = []")
            .unwrap()
            .listen_allowed("tcp", 22));
        for bad in ["tcp", "sctp:1", "tcp:70000", "tcp:x"] {
            let e = Policy::parse(&format!("allow_listen = [\"{bad}\"]")).unwrap_err();
            assert!(e.to_string().contains("PROTO:PORT"), "{e}");
        }
    }
}
