//! The host end of a lab channel (the guest worker's serial port): lines, ground-truth
//! blocks, shell commands and file copies.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::ShellOutput;
use crate::error::{Error, IoContext, Result};
use crate::truth::{self, escape, unescape, GroundTruth};

enum ChanMsg {
    Line(String),
    Closed,
}

/// The host end of a lab channel: lines from the guest worker arrive on a reader thread;
/// ground-truth blocks, shell commands and file copies are framed over it. Shared by
/// [`Guest`] and the Xen rig's guests.
pub(crate) struct Channel {
    writer: UnixStream,
    rx: Receiver<ChanMsg>,
}

impl Channel {
    /// Start reading `stream` on a thread named `name`.
    pub(crate) fn spawn(stream: UnixStream, name: &str, what: &Path) -> Result<Channel> {
        let reader = stream.try_clone().ctx("cloning", what)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut r = BufReader::new(reader);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match r.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => {
                            let _ = tx.send(ChanMsg::Closed);
                            return;
                        }
                        Ok(_) => {
                            let line = String::from_utf8_lossy(&buf)
                                .trim_end_matches(['\n', '\r'])
                                .to_string();
                            if tx.send(ChanMsg::Line(line)).is_err() {
                                return;
                            }
                        }
                    }
                }
            })
            .ctx("starting channel reader for", what)?;
        Ok(Channel { writer: stream, rx })
    }

    pub(crate) fn send(&mut self, line: &str) -> Result<()> {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| Error::Channel(format!("sending {line:?}: {e}")))
    }

    /// Drop the lines received so far (what a previous user of the channel left).
    pub(crate) fn drain(&mut self) {
        while let Ok(ChanMsg::Line(_)) = self.rx.try_recv() {}
    }

    fn next_line(&mut self, deadline: Instant) -> Result<Option<String>> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(ChanMsg::Line(l)) => Ok(Some(l)),
            Ok(ChanMsg::Closed) | Err(RecvTimeoutError::Disconnected) => {
                Err(Error::Channel("the guest closed the lab channel".into()))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
        }
    }

    /// Read one ground-truth block (and, with `ready`, the READY line after it) by
    /// `deadline`. Every half second `alive` may report that the guest is gone; a timeout
    /// becomes the error `timed_out` makes. Lines outside a block (console text when the
    /// channel is a console) are passed to `other`.
    pub(crate) fn read_truth(
        &mut self,
        deadline: Instant,
        ready: bool,
        alive: &mut dyn FnMut() -> Option<Error>,
        timed_out: &dyn Fn() -> Error,
        other: &mut dyn FnMut(&str),
    ) -> Result<GroundTruth> {
        let mut block = String::new();
        let mut inside = false;
        let mut done = false;
        loop {
            let line =
                match self.next_line(deadline.min(Instant::now() + Duration::from_millis(500))) {
                    Ok(Some(l)) => l,
                    Ok(None) => {
                        if let Some(e) = alive() {
                            return Err(e);
                        }
                        if Instant::now() >= deadline {
                            return Err(timed_out());
                        }
                        continue;
                    }
                    Err(e) => {
                        return Err(alive().unwrap_or(e));
                    }
                };
            if line == truth::BEGIN {
                inside = true;
                block.clear();
            }
            if inside {
                block.push_str(&line);
                block.push('\n');
                if line.starts_with(truth::END) {
                    inside = false;
                    done = true;
                    if !ready {
                        break;
                    }
                }
            } else if done && line == "@@READY" {
                break;
            } else {
                other(&line);
            }
        }
        GroundTruth::parse(&block)
    }

    /// Run a shell command in the guest and wait for its output and status.
    pub(crate) fn sh_timeout(&mut self, command: &str, timeout: Duration) -> Result<ShellOutput> {
        self.send(&format!("sh {}", escape(command.as_bytes())))?;
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            let Some(line) = self.next_line(deadline)? else {
                return Err(Error::Channel(format!(
                    "no reply to {command:?} within {}s",
                    timeout.as_secs()
                )));
            };
            if let Some(out) = line.strip_prefix("@@OUT ") {
                lines.push(String::from_utf8_lossy(&unescape(out)).into_owned());
            } else if let Some(status) = line.strip_prefix("@@EXIT ") {
                let status = status
                    .trim()
                    .parse()
                    .map_err(|_| Error::Channel(format!("bad exit line {line:?}")))?;
                return Ok(ShellOutput { status, lines });
            }
        }
    }

    /// Copy a file out of the guest (gzip + base64 over the channel). The gzip CRC
    /// checks what arrived; a damaged copy is read again, up to three times in all (one
    /// copy of a 5 MB BTF file in a few hundred CI runs arrived with a base64 character
    /// changed, on a machine loaded with other guests).
    pub(crate) fn read_file(&mut self, path: &str) -> Result<Vec<u8>> {
        let mut last = None;
        for _ in 0..3 {
            match self.read_file_once(path) {
                Ok(data) => return Ok(data),
                Err(e @ Error::Channel(_)) if e.to_string().contains("the guest sent a bad") => {
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Channel(format!("{path}: no copy arrived intact"))))
    }

    fn read_file_once(&mut self, path: &str) -> Result<Vec<u8>> {
        let out = self.sh_timeout(
            &format!("gzip -c {} | base64", quote(path)?),
            Duration::from_secs(300),
        )?;
        if out.status != 0 {
            return Err(Error::Channel(format!(
                "reading {path} in the guest failed (status {}): {}",
                out.status,
                out.lines.join(" / ")
            )));
        }
        let packed = base64_decode(&out.lines.concat())
            .ok_or_else(|| Error::Channel(format!("{path}: the guest sent bad base64")))?;
        let mut data = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut data)
            .map_err(|e| {
                Error::Channel(format!("{path}: the guest sent a bad gzip stream: {e}"))
            })?;
        Ok(data)
    }
}

/// `word` quoted for a guest's (or dom0's) shell, for a command built with `format!`.
pub fn quote(word: &str) -> Result<std::borrow::Cow<'_, str>> {
    shlex::try_quote(word)
        .map_err(|e| Error::Channel(format!("{word:?} cannot be given to a shell: {e}")))
}

/// Decode standard base64 (RFC 4648, padding optional; whitespace is not allowed).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::engine::{general_purpose, DecodePaddingMode, Engine as _, GeneralPurpose};
    const STANDARD_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        general_purpose::PAD.with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    STANDARD_ANY_PADDING.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_words_reach_the_shell_as_one_word() {
        let word = "/tmp/a b;$(reboot)'\"`x`";
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("printf %s {}", quote(word).unwrap())])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), word);
        assert!(quote("a\0b").is_err());
    }

    #[test]
    fn base64_decodes_rfc4648_vectors() {
        for (text, want) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYmFy", "foobar"),
        ] {
            assert_eq!(base64_decode(text).unwrap(), want.as_bytes(), "{text}");
        }
        assert!(base64_decode("Zm9v YmFy").is_none());
    }
}
