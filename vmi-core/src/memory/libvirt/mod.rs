//! A libvirt domain's QEMU: found through libvirt's API, its monitor reached through
//! libvirt's pass-through (`virDomainQemuMonitorCommand`), never through the socket
//! libvirt owns (QEMU serves one client per monitor, and that client is libvirtd).
//!
//! libvirt's libraries are loaded at run time (`ffi.rs`). The QEMU process is found
//! without libvirt's help: its pid file (`/run/libvirt/qemu/NAME.pid`, for
//! `qemu:///system`), else the process whose command line carries the domain's UUID
//! (`-uuid`); either way the process must run QEMU with that UUID.

mod ffi;

use std::ffi::{c_char, c_int, CString};
use std::io::Read;
use std::path::Path;

use serde_json::{json, Value};

use crate::error::{Error, QmpError};
use crate::memory::monitor::Monitor;
use crate::memory::qemu::CommandLine;
use ffi::Api;

/// libvirt's own connection URI for the system instance.
pub const SYSTEM_URI: &str = "qemu:///system";

/// Largest `/proc/PID/cmdline` read while looking for a domain's QEMU.
const MAX_CMDLINE: u64 = 1 << 20;

/// Errors of the libvirt source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LibvirtError {
    /// libvirt's client libraries are not installed.
    #[error("cannot load libvirt's libraries ({what}: {why}); install them (Debian: libvirt0, which brings libvirt-qemu.so.0 too)")]
    Library {
        /// The library, or library and symbol.
        what: String,
        /// The loader's message.
        why: String,
    },
    /// Connecting to libvirt failed.
    #[error("connecting to libvirt at {uri}: {message}{}", connect_hint(.message))]
    Connect {
        /// The URI.
        uri: String,
        /// libvirt's message.
        message: String,
    },
    /// A libvirt call failed.
    #[error("libvirt {call} on domain {domain:?}: {message}")]
    Call {
        /// The function.
        call: &'static str,
        /// The domain.
        domain: String,
        /// libvirt's message (`virGetLastErrorMessage`).
        message: String,
    },
    /// The domain exists but does not run.
    #[error(
        "libvirt domain {domain:?} is not running (it is {state}); start it (virsh start {domain})"
    )]
    NotRunning {
        /// The domain.
        domain: String,
        /// Its state (`shut off`, `crashed`, ...).
        state: &'static str,
    },
    /// The domain's QEMU process was not found.
    #[error("the QEMU process of libvirt domain {domain:?} (uuid {uuid}): {why}")]
    NoProcess {
        /// The domain.
        domain: String,
        /// Its UUID.
        uuid: String,
        /// Why.
        why: String,
    },
}

fn connect_hint(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("permission denied") || m.contains("authentication") || m.contains("polkit") {
        "; qemu:///system needs root (or membership of the libvirt group)"
    } else if m.contains("no such file") || m.contains("connection refused") {
        "; is libvirtd (or virtqemud) running?"
    } else {
        ""
    }
}

impl From<ffi::LoadError> for LibvirtError {
    fn from(e: ffi::LoadError) -> Self {
        LibvirtError::Library {
            what: e.what,
            why: e.why,
        }
    }
}

/// A domain's state as libvirt reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainState {
    /// The vCPUs run.
    Running,
    /// Paused (by libvirt, the monitor, or for migration).
    Paused,
    /// Anything else: shut off, shutting down, crashed, suspended to RAM.
    Other(&'static str),
}

fn state_name(state: c_int) -> &'static str {
    match state {
        0 => "in no state",
        2 => "blocked",
        4 => "shutting down",
        5 => "shut off",
        6 => "crashed",
        7 => "suspended by guest power management",
        _ => "in an unknown state",
    }
}

/// A connection to libvirt.
struct Connection {
    api: &'static Api,
    ptr: ffi::Connect,
    uri: String,
}

impl Connection {
    fn open(uri: &str) -> Result<Connection, LibvirtError> {
        let api = Api::get()?;
        let c_uri = CString::new(uri).map_err(|_| LibvirtError::Connect {
            uri: uri.into(),
            message: "the URI holds a NUL byte".into(),
        })?;
        // SAFETY: c_uri is a NUL-terminated string that outlives the call; libvirt
        // returns a new connection or NULL.
        let ptr = unsafe { (api.connect_open)(c_uri.as_ptr()) };
        if ptr.is_null() {
            return Err(LibvirtError::Connect {
                uri: uri.into(),
                message: api.last_error(),
            });
        }
        Ok(Connection {
            api,
            ptr,
            uri: uri.into(),
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: ptr is the live connection this value owns; it is not used after.
        unsafe { (self.api.connect_close)(self.ptr) };
    }
}

/// The names of the running (and paused) domains at `uri`.
pub fn running_domains(uri: &str) -> Result<Vec<String>, LibvirtError> {
    let conn = Connection::open(uri)?;
    let api = conn.api;
    let mut list: *mut ffi::Domain = std::ptr::null_mut();
    // SAFETY: conn.ptr is live; libvirt stores a malloc'd array of `n` new domain
    // references in `list`, each freed below with virDomainFree and the array with free.
    let n = unsafe { (api.list_all_domains)(conn.ptr, &mut list, ffi::LIST_DOMAINS_ACTIVE) };
    if n < 0 {
        return Err(LibvirtError::Call {
            call: "virConnectListAllDomains",
            domain: "*".into(),
            message: api.last_error(),
        });
    }
    let mut names = Vec::new();
    for i in 0..n as usize {
        // SAFETY: i < n, the array's length; each element is a domain reference owned
        // here: its name is copied before the reference is freed.
        unsafe {
            let dom = *list.add(i);
            if let Some(name) = ffi::string((api.domain_get_name)(dom)) {
                names.push(name);
            }
            (api.domain_free)(dom);
        }
    }
    if !list.is_null() {
        // SAFETY: the array was allocated by libvirt with malloc and is not used after.
        unsafe { libc::free(list.cast()) };
    }
    names.sort();
    Ok(names)
}

/// One libvirt domain, looked up by name.
pub struct LibvirtDomain {
    conn: Connection,
    ptr: ffi::Domain,
    name: String,
    uuid: String,
}

impl std::fmt::Debug for LibvirtDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibvirtDomain")
            .field("uri", &self.conn.uri)
            .field("name", &self.name)
            .field("uuid", &self.uuid)
            .finish()
    }
}

// SAFETY: libvirt's connection and domain objects are thread-safe (reference-counted,
// each call locks what it uses; libvirt documents concurrent use of one connection from
// several threads); this value is used by one thread at a time (&mut or a Mutex).
unsafe impl Send for LibvirtDomain {}

impl LibvirtDomain {
    /// Look up domain `name` at `uri` (e.g. [`SYSTEM_URI`]).
    pub fn open(uri: &str, name: &str) -> Result<LibvirtDomain, LibvirtError> {
        let conn = Connection::open(uri)?;
        let api = conn.api;
        let call_err = |call| LibvirtError::Call {
            call,
            domain: name.into(),
            message: api.last_error(),
        };
        let c_name = CString::new(name).map_err(|_| LibvirtError::Call {
            call: "virDomainLookupByName",
            domain: name.into(),
            message: "the name holds a NUL byte".into(),
        })?;
        // SAFETY: conn.ptr is live and c_name NUL-terminated; libvirt returns a new
        // domain reference or NULL.
        let ptr = unsafe { (api.lookup_by_name)(conn.ptr, c_name.as_ptr()) };
        if ptr.is_null() {
            return Err(call_err("virDomainLookupByName"));
        }
        let mut domain = LibvirtDomain {
            conn,
            ptr,
            name: name.into(),
            uuid: String::new(),
        };
        let mut buf = [0 as c_char; ffi::UUID_STRING_BUFLEN];
        // SAFETY: buf has VIR_UUID_STRING_BUFLEN bytes, what libvirt writes (NUL
        // included); ptr is the live domain.
        let rc = unsafe { (api.domain_get_uuid_string)(domain.ptr, buf.as_mut_ptr()) };
        if rc != 0 {
            return Err(call_err("virDomainGetUUIDString"));
        }
        buf[ffi::UUID_STRING_BUFLEN - 1] = 0;
        // SAFETY: buf is NUL-terminated (its last byte is set to 0 above).
        domain.uuid = unsafe { ffi::string(buf.as_ptr()) }.unwrap_or_default();
        Ok(domain)
    }

    /// The domain's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The domain's UUID (lower-case, with dashes).
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// The connection URI.
    pub fn uri(&self) -> &str {
        &self.conn.uri
    }

    fn call_err(&self, call: &'static str) -> LibvirtError {
        LibvirtError::Call {
            call,
            domain: self.name.clone(),
            message: self.conn.api.last_error(),
        }
    }

    /// The domain's state now.
    pub fn state(&self) -> Result<DomainState, LibvirtError> {
        let (mut state, mut reason) = (0 as c_int, 0 as c_int);
        // SAFETY: ptr is the live domain; libvirt writes two ints into the locals.
        let rc = unsafe { (self.conn.api.domain_get_state)(self.ptr, &mut state, &mut reason, 0) };
        if rc != 0 {
            return Err(self.call_err("virDomainGetState"));
        }
        Ok(match state {
            ffi::STATE_RUNNING => DomainState::Running,
            ffi::STATE_PAUSED => DomainState::Paused,
            other => DomainState::Other(state_name(other)),
        })
    }

    /// An error unless the domain runs or is paused (its QEMU process exists).
    pub fn require_active(&self) -> Result<(), LibvirtError> {
        match self.state()? {
            DomainState::Running | DomainState::Paused => Ok(()),
            DomainState::Other(state) => Err(LibvirtError::NotRunning {
                domain: self.name.clone(),
                state,
            }),
        }
    }

    /// Suspend the domain (`virDomainSuspend`): libvirt stops the vCPUs and knows it.
    pub fn suspend(&self) -> Result<(), LibvirtError> {
        // SAFETY: ptr is the live domain.
        match unsafe { (self.conn.api.domain_suspend)(self.ptr) } {
            0 => Ok(()),
            _ => Err(self.call_err("virDomainSuspend")),
        }
    }

    /// Resume the domain (`virDomainResume`).
    pub fn resume(&self) -> Result<(), LibvirtError> {
        // SAFETY: ptr is the live domain.
        match unsafe { (self.conn.api.domain_resume)(self.ptr) } {
            0 => Ok(()),
            _ => Err(self.call_err("virDomainResume")),
        }
    }

    /// Send one QMP command (JSON text) through libvirt's monitor pass-through
    /// (`virDomainQemuMonitorCommand`); QEMU's reply as text.
    pub fn monitor_command(&self, command: &str) -> Result<String, LibvirtError> {
        let c_cmd = CString::new(command).map_err(|_| LibvirtError::Call {
            call: "virDomainQemuMonitorCommand",
            domain: self.name.clone(),
            message: "the command holds a NUL byte".into(),
        })?;
        let mut reply: *mut c_char = std::ptr::null_mut();
        // SAFETY: ptr is the live domain, c_cmd NUL-terminated; on success libvirt
        // stores a malloc'd NUL-terminated reply in `reply`, copied and freed here.
        let rc =
            unsafe { (self.conn.api.monitor_command)(self.ptr, c_cmd.as_ptr(), &mut reply, 0) };
        if rc != 0 {
            return Err(self.call_err("virDomainQemuMonitorCommand"));
        }
        // SAFETY: see above; reply is not used after free.
        let text = unsafe {
            let text = ffi::string(reply);
            libc::free(reply.cast());
            text
        };
        text.ok_or_else(|| LibvirtError::Call {
            call: "virDomainQemuMonitorCommand",
            domain: self.name.clone(),
            message: "no reply".into(),
        })
    }

    /// The pid of the domain's QEMU process: the one in libvirt's pid file when the
    /// URI is the system instance's and that process runs QEMU with the domain's UUID,
    /// else the one QEMU process whose command line has `-uuid UUID`.
    pub fn qemu_pid(&self) -> Result<i32, LibvirtError> {
        self.require_active()?;
        let no_process = |why: String| LibvirtError::NoProcess {
            domain: self.name.clone(),
            uuid: self.uuid.clone(),
            why,
        };
        if self.conn.uri == SYSTEM_URI {
            let file = Path::new("/run/libvirt/qemu").join(format!("{}.pid", self.name));
            if let Some(pid) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                if qemu_uuid(pid).as_deref() == Some(self.uuid.as_str()) {
                    return Ok(pid);
                }
            }
        }
        let dir = std::fs::read_dir("/proc").map_err(|e| no_process(format!("/proc: {e}")))?;
        let mut found: Vec<i32> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| qemu_uuid(pid).as_deref() == Some(self.uuid.as_str()))
            .collect();
        found.sort_unstable();
        match found.as_slice() {
            [pid] => Ok(*pid),
            [] => Err(no_process(
                "no QEMU process with this -uuid is visible in /proc (is libvirtd on another host, or in another pid namespace?)"
                    .into(),
            )),
            many => Err(no_process(format!(
                "{} QEMU processes carry this -uuid: {many:?}",
                many.len()
            ))),
        }
    }
}

impl Drop for LibvirtDomain {
    fn drop(&mut self) {
        // SAFETY: ptr is the live domain reference this value owns (freed before its
        // connection, which `conn` closes after this).
        unsafe { (self.conn.api.domain_free)(self.ptr) };
    }
}

/// The `-uuid` of process `pid` when it is QEMU.
fn qemu_uuid(pid: i32) -> Option<String> {
    let mut raw = Vec::new();
    std::fs::File::open(format!("/proc/{pid}/cmdline"))
        .and_then(|f| f.take(MAX_CMDLINE).read_to_end(&mut raw))
        .ok()?;
    let cmd = CommandLine::parse(&raw).ok()?;
    if !cmd.is_qemu() {
        return None;
    }
    cmd.uuid
}

/// The `return` value of QMP reply `text` to `command`, or its error.
fn qmp_reply(command: &str, text: &str) -> Result<Value, Error> {
    let protocol = |message: String| QmpError::Protocol {
        command: command.into(),
        message,
    };
    let mut reply: Value =
        serde_json::from_str(text).map_err(|e| protocol(format!("reply is not JSON: {e}")))?;
    if let Some(ret) = reply.get_mut("return") {
        return Ok(ret.take());
    }
    if let Some(err) = reply.get("error") {
        let field = |k: &str| err.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        return Err(QmpError::Command {
            command: command.into(),
            class: field("class"),
            desc: field("desc"),
        }
        .into());
    }
    Err(protocol("reply with neither return nor error".into()).into())
}

/// QEMU's monitor through libvirt: QMP commands go through
/// `virDomainQemuMonitorCommand` (libvirt marks the domain tainted `custom-monitor`),
/// pause and resume through `virDomainSuspend`/`virDomainResume` so libvirt's idea of
/// the domain's state stays right, the state from `virDomainGetState`.
#[derive(Debug)]
pub struct LibvirtMonitor {
    domain: LibvirtDomain,
    pid: i32,
}

impl LibvirtMonitor {
    /// The monitor of `domain`, whose QEMU process is `pid`.
    pub fn new(domain: LibvirtDomain, pid: i32) -> LibvirtMonitor {
        LibvirtMonitor { domain, pid }
    }

    /// The domain.
    pub fn domain(&self) -> &LibvirtDomain {
        &self.domain
    }
}

impl Monitor for LibvirtMonitor {
    fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, Error> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let text = self.domain.monitor_command(&msg.to_string())?;
        qmp_reply(command, &text)
    }

    fn qemu_pid(&self) -> Result<i32, Error> {
        Ok(self.pid)
    }

    fn describe(&self) -> String {
        format!(
            "libvirt domain {:?} at {}",
            self.domain.name(),
            self.domain.uri()
        )
    }

    fn pause(&mut self) -> Result<(), Error> {
        Ok(self.domain.suspend()?)
    }

    fn resume(&mut self) -> Result<(), Error> {
        Ok(self.domain.resume()?)
    }

    fn running(&mut self) -> Result<bool, Error> {
        match self.domain.state()? {
            DomainState::Running => Ok(true),
            DomainState::Paused => Ok(false),
            DomainState::Other(state) => Err(LibvirtError::NotRunning {
                domain: self.domain.name().into(),
                state,
            }
            .into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_relayed_by_libvirt() {
        let ok = r#"{"return":{"status":"running","running":true},"id":"libvirt-414"}"#;
        assert_eq!(qmp_reply("query-status", ok).unwrap()["running"], true);
        let failed = r#"{"id":"libvirt-9","error":{"class":"CommandNotFound","desc":"no such"}}"#;
        let e = qmp_reply("nope", failed).unwrap_err().to_string();
        assert!(e.contains("CommandNotFound") && e.contains("nope"), "{e}");
        assert!(qmp_reply("x", "{}").is_err());
        assert!(qmp_reply("x", "not json").is_err());
    }

    #[test]
    fn connection_errors_say_what_to_do() {
        let e = LibvirtError::Connect {
            uri: SYSTEM_URI.into(),
            message: "Failed to connect socket to '/run/libvirt/libvirt-sock': Permission denied"
                .into(),
        };
        assert!(e.to_string().contains("needs root"), "{e}");
        let e = LibvirtError::NotRunning {
            domain: "vm1".into(),
            state: state_name(5),
        };
        assert!(e.to_string().contains("shut off") && e.to_string().contains("virsh start vm1"));
    }
}
