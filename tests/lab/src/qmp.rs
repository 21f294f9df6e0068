//! A small QMP (QEMU Machine Protocol) client over a unix socket.
//!
//! Our own, not vmi-core's: the lab is the oracle vmi-core is checked against, so it
//! shares none of its code (ARCHITECTURE.md), and a QMP crate would add a second
//! protocol stack to the tests for the dozen lines this needs.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{Error, Result};

/// A connected QMP session (capabilities negotiated).
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    events: Vec<Value>,
}

fn qmp_err(command: &str, message: impl Into<String>) -> Error {
    Error::Qmp {
        command: command.to_string(),
        message: message.into(),
    }
}

impl Qmp {
    /// Connect to QEMU's QMP socket, retrying until it appears or `timeout` passes.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if start.elapsed() < timeout => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(qmp_err("connect", format!("{}: {e}", path.display()))),
            }
        };
        let writer = stream
            .try_clone()
            .map_err(|e| qmp_err("connect", e.to_string()))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
            events: Vec::new(),
        };
        let greeting = qmp.read_message("greeting", Duration::from_secs(30))?;
        if greeting.get("QMP").is_none() {
            return Err(qmp_err(
                "greeting",
                format!("unexpected greeting {greeting}"),
            ));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    fn read_message(&mut self, command: &str, timeout: Duration) -> Result<Value> {
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .map_err(|e| qmp_err(command, e.to_string()))?;
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| qmp_err(command, format!("reading the reply: {e}")))?;
        if n == 0 {
            return Err(qmp_err(command, "QEMU closed the QMP socket"));
        }
        serde_json::from_str(&line).map_err(|e| qmp_err(command, format!("bad JSON {line:?}: {e}")))
    }

    /// Run a command with the default 60 s timeout.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        self.execute_timeout(command, arguments, Duration::from_secs(60))
    }

    /// Run a command and return its `return` value; QMP errors become [`Error::Qmp`].
    /// Events that arrive meanwhile are kept (see [`Qmp::take_events`]).
    pub fn execute_timeout(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .map_err(|e| qmp_err(command, format!("sending: {e}")))?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(qmp_err(
                    command,
                    format!("no reply within {}s", timeout.as_secs()),
                ));
            }
            let reply = self.read_message(command, left)?;
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                let desc = err
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error");
                return Err(qmp_err(command, desc));
            }
            if reply.get("event").is_some() {
                self.events.push(reply);
            }
        }
    }

    /// A human-monitor command's text output.
    pub fn hmp(&mut self, command_line: &str) -> Result<String> {
        let ret = self.execute(
            "human-monitor-command",
            Some(json!({ "command-line": command_line })),
        )?;
        Ok(ret.as_str().unwrap_or_default().to_string())
    }

    /// Events received so far.
    pub fn take_events(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.events)
    }
}
