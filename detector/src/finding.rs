//! Findings: what a check reports, with evidence, in text and JSON.
//!
//! Every string in a finding that came from the guest (process and module names) is
//! escaped with [`vmi_core::kernel::escape`] when the finding is made: only printable
//! ASCII reaches a terminal, and JSON output is valid for any name.

use std::fmt;

use serde_json::{json, Map, Value};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth a look.
    Low,
    /// Suspicious.
    Medium,
    /// Tampering or hiding.
    High,
}

impl Severity {
    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One piece of evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// A guest address (printed in hex).
    Addr(u64),
    /// A number.
    Num(u64),
    /// Text (already escaped if it came from the guest).
    Text(String),
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Evidence::Addr(a) => write!(f, "{a:#x}"),
            Evidence::Num(n) => write!(f, "{n}"),
            Evidence::Text(t) => f.write_str(t),
        }
    }
}

/// A finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The check that raised it (`hidden-process`, `syscall-table`, ...).
    pub check: &'static str,
    /// How bad.
    pub severity: Severity,
    /// One line saying what was found (printable ASCII).
    pub summary: String,
    /// Addresses, names and numbers behind it.
    pub evidence: Vec<(&'static str, Evidence)>,
    /// Identity of the finding across scans (the same hook seen twice has one key).
    pub key: String,
}

impl Finding {
    /// A finding with no evidence yet; `key` identifies it across scans.
    pub fn new(check: &'static str, severity: Severity, key: String, summary: String) -> Finding {
        Finding {
            check,
            severity,
            summary,
            evidence: Vec::new(),
            key,
        }
    }

    /// Add an address.
    pub fn addr(mut self, name: &'static str, a: u64) -> Finding {
        self.evidence.push((name, Evidence::Addr(a)));
        self
    }

    /// Add a number.
    pub fn num(mut self, name: &'static str, n: u64) -> Finding {
        self.evidence.push((name, Evidence::Num(n)));
        self
    }

    /// Add text (escape guest bytes first).
    pub fn text(mut self, name: &'static str, t: impl Into<String>) -> Finding {
        self.evidence.push((name, Evidence::Text(t.into())));
        self
    }

    /// The finding as a JSON object.
    pub fn to_json(&self) -> Value {
        let mut ev = Map::new();
        for (k, v) in &self.evidence {
            let v = match v {
                Evidence::Addr(a) => Value::String(format!("{a:#x}")),
                Evidence::Num(n) => json!(n),
                Evidence::Text(t) => Value::String(t.clone()),
            };
            ev.insert((*k).to_string(), v);
        }
        json!({
            "check": self.check,
            "severity": self.severity.name(),
            "summary": self.summary,
            "key": self.key,
            "evidence": ev,
        })
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<6} {:<17} {}",
            self.severity, self.check, self.summary
        )?;
        if !self.evidence.is_empty() {
            f.write_str(" [")?;
            for (i, (k, v)) in self.evidence.iter().enumerate() {
                if i > 0 {
                    f.write_str(" ")?;
                }
                write!(f, "{k}={v}")?;
            }
            f.write_str("]")?;
        }
        Ok(())
    }
}

/// Guest bytes made safe for a terminal and for JSON.
pub fn guest_str(bytes: &[u8]) -> String {
    vmi_core::kernel::escape(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_stay_printable_and_json_stays_valid() {
        let name = b"ev\x1b[2Jil\n\"},{\xff";
        let f = Finding::new(
            "hidden-process",
            Severity::High,
            "k".into(),
            format!("process {} is hidden", guest_str(name)),
        )
        .text("comm", guest_str(name))
        .addr("task", 0xffff_8880_0000_1000)
        .num("pid", 42);
        let line = f.to_string();
        assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)), "{line:?}");
        assert!(line.contains("ev\\x1b[2Jil\\x0a\"},{\\xff"), "{line}");
        let text = f.to_json().to_string();
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["evidence"]["comm"], "ev\\x1b[2Jil\\x0a\"},{\\xff");
        assert_eq!(back["evidence"]["task"], "0xffff888000001000");
        assert_eq!(back["evidence"]["pid"], 42);
        assert_eq!(back["severity"], "high");
    }
}
