//! A small QMP (QEMU Machine Protocol) client over a unix socket.
//!
//! Capabilities are negotiated on connect; every command carries an `id` and only the
//! reply with that id is taken (a late reply to a command that timed out is skipped);
//! asynchronous events are skipped. Every wait has a deadline and every reply line is
//! bounded ([`MAX_LINE`]), so a wedged or hostile QEMU cannot hang or exhaust the
//! reader. QEMU serves one client per QMP socket at a time.
//!
//! Our own rather than a crate: qapi's blocking client reads a reply with an unbounded
//! `read_line` and has no deadline per command; the qmp crate is async (tokio).

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::QmpError;

/// Longest reply line accepted (`info mtree` of a big machine is tens of KiB).
pub const MAX_LINE: usize = 16 << 20;

/// A connected QMP session.
#[derive(Debug)]
pub struct QmpClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    path: PathBuf,
    timeout: Duration,
    next_id: u64,
    greeting: Value,
    /// Set when a reply was cut off mid-line: the stream position is unknown.
    broken: bool,
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

impl QmpClient {
    /// Connect to the socket at `path` (retrying while it does not exist yet), read the
    /// greeting and negotiate capabilities, all within `timeout`; `timeout` is also the
    /// default for each command.
    pub fn connect(path: &Path, timeout: Duration) -> Result<QmpClient, QmpError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e)
                    if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::ConnectionRefused)
                        && Instant::now() + Duration::from_millis(50) < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(source) => {
                    return Err(QmpError::Connect {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            }
        };
        let io = |source| QmpError::Io {
            command: "connect".into(),
            source,
        };
        let writer = stream.try_clone().map_err(io)?;
        writer.set_write_timeout(Some(timeout)).map_err(io)?;
        let mut c = QmpClient {
            reader: BufReader::new(stream),
            writer,
            path: path.to_path_buf(),
            timeout,
            next_id: 1,
            greeting: Value::Null,
            broken: false,
        };
        let greeting = match c.read_message("greeting", deadline) {
            Ok(v) => v,
            Err(QmpError::Timeout { .. }) => {
                return Err(QmpError::NoGreeting {
                    path: path.to_path_buf(),
                    timeout,
                })
            }
            Err(e) => return Err(e),
        };
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol {
                command: "greeting".into(),
                message: format!("expected a QMP greeting, got {}", brief(&greeting)),
            });
        }
        c.greeting = greeting;
        c.execute_until("qmp_capabilities", None, deadline)?;
        Ok(c)
    }

    /// The pid of the process at the other end of the socket (`SO_PEERCRED`): QEMU's.
    pub fn peer_pid(&self) -> Result<i32, QmpError> {
        use std::os::fd::AsRawFd;
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `cred`, a live local of
        // that size; the descriptor is the connected socket this client owns.
        let rc = unsafe {
            libc::getsockopt(
                self.writer.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if rc != 0 || cred.pid <= 0 {
            return Err(QmpError::Io {
                command: "SO_PEERCRED".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(cred.pid)
    }

    /// The socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// QEMU's greeting (`{"QMP": {"version": ..., "capabilities": ...}}`).
    pub fn greeting(&self) -> &Value {
        &self.greeting
    }

    /// QEMU's version as `(major, minor, micro)`, from the greeting.
    pub fn qemu_version(&self) -> Option<(u64, u64, u64)> {
        let v = self.greeting.get("QMP")?.get("version")?.get("qemu")?;
        Some((
            v.get("major")?.as_u64()?,
            v.get("minor")?.as_u64()?,
            v.get("micro")?.as_u64()?,
        ))
    }

    /// The default timeout of a command.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        let _ = self.writer.set_write_timeout(Some(timeout));
    }

    /// Run `command` with the default timeout; returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let deadline = Instant::now() + self.timeout;
        self.execute_until(command, arguments, deadline)
    }

    /// Run `command`, waiting at most `timeout`.
    pub fn execute_timeout(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        self.execute_until(command, arguments, Instant::now() + timeout)
    }

    fn execute_until(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        deadline: Instant,
    ) -> Result<Value, QmpError> {
        if self.broken {
            return Err(QmpError::Protocol {
                command: command.into(),
                message:
                    "the session lost its place in the stream after an earlier error; reconnect"
                        .into(),
            });
        }
        let id = format!("vmi-{}", self.next_id);
        self.next_id += 1;
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut text = msg.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .map_err(|e| match is_timeout(&e) {
                true => QmpError::Timeout {
                    command: command.into(),
                    timeout: self.timeout,
                },
                false => QmpError::Io {
                    command: command.into(),
                    source: e,
                },
            })?;
        loop {
            let reply = self.read_message(command, deadline)?;
            if reply.get("event").is_some() {
                continue;
            }
            if reply.get("id").and_then(Value::as_str) != Some(id.as_str()) {
                // a late reply to an earlier command that timed out
                continue;
            }
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                let field = |k| {
                    err.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("unknown")
                        .to_string()
                };
                return Err(QmpError::Command {
                    command: command.into(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            return Err(QmpError::Protocol {
                command: command.into(),
                message: format!("reply with neither return nor error: {}", brief(&reply)),
            });
        }
    }

    /// One JSON message (one line), before `deadline`.
    fn read_message(&mut self, command: &str, deadline: Instant) -> Result<Value, QmpError> {
        let line = self.read_line(command, deadline)?;
        serde_json::from_slice(&line).map_err(|e| QmpError::Protocol {
            command: command.into(),
            message: format!(
                "not JSON ({e}): {:?}",
                String::from_utf8_lossy(&line[..line.len().min(200)])
            ),
        })
    }

    fn read_line(&mut self, command: &str, deadline: Instant) -> Result<Vec<u8>, QmpError> {
        let mut line = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.broken |= !line.is_empty();
                return Err(QmpError::Timeout {
                    command: command.into(),
                    timeout: self.timeout,
                });
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(|source| QmpError::Io {
                    command: command.into(),
                    source,
                })?;
            let buf = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => continue,
                Err(source) => {
                    self.broken = true;
                    return Err(QmpError::Io {
                        command: command.into(),
                        source,
                    });
                }
            };
            if buf.is_empty() {
                self.broken = true;
                return Err(QmpError::Closed {
                    command: command.into(),
                });
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if line.len() + take > MAX_LINE {
                self.broken = true;
                return Err(QmpError::TooLong {
                    command: command.into(),
                    limit: MAX_LINE,
                });
            }
            line.extend_from_slice(&buf[..take]);
            self.reader.consume(take);
            if done {
                line.pop();
                if line.iter().all(u8::is_ascii_whitespace) {
                    line.clear();
                    continue;
                }
                return Ok(line);
            }
        }
    }
}

/// The start of a JSON value, for error messages.
pub(crate) fn brief(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 200 {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Monitor;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    /// A fake QEMU: greets, then answers each request line with `reply(request)`.
    fn fake(
        dir: &Path,
        greet: bool,
        reply: impl Fn(&Value) -> Vec<String> + Send + 'static,
    ) -> (PathBuf, std::thread::JoinHandle<()>) {
        let path = dir.join("qmp.sock");
        let l = UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            if greet {
                writeln!(w, r#"{{"QMP": {{"version": {{"qemu": {{"micro": 22, "minor": 2, "major": 7}}, "package": ""}}, "capabilities": []}}}}"#).unwrap();
            }
            let mut r = BufReader::new(s);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let req: Value = serde_json::from_str(&line).unwrap();
                for out in reply(&req) {
                    if w.write_all(out.as_bytes()).is_err() {
                        return;
                    }
                }
                line.clear();
            }
        });
        (path, h)
    }

    fn ok(req: &Value, ret: Value) -> String {
        format!("{}\n", json!({"return": ret, "id": req["id"]}))
    }

    #[test]
    fn negotiates_skips_events_and_stale_replies() {
        let dir = tempfile::tempdir().unwrap();
        let (path, h) = fake(dir.path(), true, |req| match req["execute"].as_str() {
            Some("qmp_capabilities") => vec![ok(req, json!({}))],
            Some("query-status") => vec![
                "{\"event\": \"STOP\", \"data\": {}}\n".into(),
                format!("{}\n", json!({"return": {"running": true}, "id": "stale"})),
                ok(req, json!({"running": false, "status": "paused"})),
            ],
            Some("human-monitor-command") => vec![ok(req, json!("RAX=0\r\n"))],
            Some("bad") => vec![format!(
                "{}\n",
                json!({"error": {"class": "CommandNotFound", "desc": "The command bad has not been found"}, "id": req["id"]})
            )],
            _ => vec![],
        });
        let mut c = QmpClient::connect(&path, Duration::from_secs(10)).unwrap();
        assert_eq!(c.qemu_version(), Some((7, 2, 22)));
        let s = c.execute("query-status", None).unwrap();
        assert_eq!(s["running"], json!(false));
        assert_eq!(c.hmp("info registers", Some(0)).unwrap(), "RAX=0\r\n");
        match c.execute("bad", None) {
            Err(QmpError::Command { class, .. }) => assert_eq!(class, "CommandNotFound"),
            other => panic!("{other:?}"),
        }
        // no reply at all: a timeout, not a hang
        let e = c
            .execute_timeout("silent", None, Duration::from_millis(200))
            .unwrap_err();
        assert!(matches!(e, QmpError::Timeout { .. }), "{e}");
        drop(c);
        h.join().unwrap();
    }

    #[test]
    fn no_greeting_and_overlong_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _h) = fake(dir.path(), false, |_| vec![]);
        let e = QmpClient::connect(&path, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, QmpError::NoGreeting { .. }), "{e}");
        assert!(e.to_string().contains("another client"));

        let dir = tempfile::tempdir().unwrap();
        let (path, _h) = fake(dir.path(), true, |req| match req["execute"].as_str() {
            Some("qmp_capabilities") => vec![ok(req, json!({}))],
            _ => vec!["x".repeat(MAX_LINE + 10)],
        });
        let mut c = QmpClient::connect(&path, Duration::from_secs(10)).unwrap();
        let e = c.execute("flood", None).unwrap_err();
        assert!(matches!(e, QmpError::TooLong { .. }), "{e}");
        let e = c.execute("again", None).unwrap_err();
        assert!(matches!(e, QmpError::Protocol { .. }), "{e}");

        let missing = dir.path().join("nothing.sock");
        let e = QmpClient::connect(&missing, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, QmpError::Connect { .. }), "{e}");
    }
}
