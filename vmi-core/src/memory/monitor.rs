//! QEMU's monitor, whichever way it is reached: QMP over its own socket
//! ([`QmpClient`]) or through libvirt's monitor pass-through
//! ([`LibvirtMonitor`](crate::memory::LibvirtMonitor)), for a VM whose monitor libvirt
//! owns. [`QemuLive`](crate::memory::QemuLive) reads registers, the memory map and
//! pauses the guest through this trait only.

use serde_json::{json, Value};

use crate::error::{Error, QmpError};
use crate::memory::qmp::{brief, QmpClient};

/// A QMP monitor of one QEMU process.
pub trait Monitor: Send + std::fmt::Debug {
    /// Run a QMP command; its `return` value.
    fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, Error>;

    /// The pid of the QEMU process behind the monitor.
    fn qemu_pid(&self) -> Result<i32, Error>;

    /// What the monitor is, for messages (`the QMP socket /run/vm.qmp`).
    fn describe(&self) -> String;

    /// A human-monitor command's text (`human-monitor-command`), on vCPU `cpu_index`
    /// when given (for `info registers`).
    fn hmp(&mut self, command_line: &str, cpu_index: Option<i64>) -> Result<String, Error> {
        let mut args = json!({ "command-line": command_line });
        if let Some(i) = cpu_index {
            args["cpu-index"] = json!(i);
        }
        match self.execute("human-monitor-command", Some(args))? {
            Value::String(s) => Ok(s),
            other => Err(QmpError::Protocol {
                command: format!("human-monitor-command {command_line:?}"),
                message: format!("expected text, got {}", brief(&other)),
            }
            .into()),
        }
    }

    /// Stop the vCPUs.
    fn pause(&mut self) -> Result<(), Error> {
        self.execute("stop", None).map(|_| ())
    }

    /// Resume the vCPUs.
    fn resume(&mut self) -> Result<(), Error> {
        self.execute("cont", None).map(|_| ())
    }

    /// Whether the vCPUs run (`query-status`).
    fn running(&mut self) -> Result<bool, Error> {
        let status = self.execute("query-status", None)?;
        status
            .get("running")
            .and_then(Value::as_bool)
            .ok_or_else(|| {
                Error::Qemu(format!(
                    "query-status without \"running\" from {}",
                    self.describe()
                ))
            })
    }
}

impl Monitor for QmpClient {
    fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, Error> {
        Ok(QmpClient::execute(self, command, arguments)?)
    }

    fn qemu_pid(&self) -> Result<i32, Error> {
        Ok(self.peer_pid()?)
    }

    fn describe(&self) -> String {
        format!("the QMP socket {}", self.path().display())
    }
}
