//! The JUnit XML report of `lab validate`: one `<testsuite>` per kernel, one
//! `<testcase>` per step, failures carrying their evidence. The format every CI system
//! reads (GitLab, Jenkins, GitHub actions that publish test results, ...).
//!
//! Written by hand: the format needs five elements, and the escaper must also drop the
//! characters XML 1.0 forbids (guest console text holds control bytes), which an XML
//! writer's escaping does not do.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::error::Result;

/// Evidence longer than this (characters) is cut, keeping its end (where the
/// console's last lines and the errors are).
pub const EVIDENCE_MAX: usize = 64 * 1024;

/// How a step came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Passed,
    /// It failed: a one-line message and the evidence.
    Failed {
        /// What failed, in one line.
        message: String,
        /// The evidence (differences, console lines, a tool's stderr).
        evidence: String,
    },
    /// It was not run or does not apply, and why.
    Skipped {
        /// Why.
        message: String,
    },
}

/// One step of one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// The step: `boot`, `profile`, `verify <rule>`, `ps`, `lsmod`, `shutdown`.
    pub name: String,
    /// How long it took.
    pub time: Duration,
    /// How it came out.
    pub outcome: Outcome,
    /// What it printed or found, for the reader (`<system-out>`).
    pub output: String,
}

impl Case {
    /// A step that passed.
    pub fn passed(name: &str, time: Duration, output: String) -> Case {
        Case {
            name: name.to_string(),
            time,
            outcome: Outcome::Passed,
            output,
        }
    }

    /// A step that failed.
    pub fn failed(name: &str, time: Duration, message: &str, evidence: String) -> Case {
        Case {
            name: name.to_string(),
            time,
            outcome: Outcome::Failed {
                message: message.to_string(),
                evidence,
            },
            output: String::new(),
        }
    }

    /// A step not run, and why.
    pub fn skipped(name: &str, message: &str) -> Case {
        Case {
            name: name.to_string(),
            time: Duration::ZERO,
            outcome: Outcome::Skipped {
                message: message.to_string(),
            },
            output: String::new(),
        }
    }

    /// Did it fail?
    pub fn is_failure(&self) -> bool {
        matches!(self.outcome, Outcome::Failed { .. })
    }
}

/// The steps of one kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Suite {
    /// The kernel's name.
    pub name: String,
    /// Facts about it (`vmlinuz`, `release`, ...), as `<property>`s.
    pub properties: Vec<(String, String)>,
    /// Its steps, in order.
    pub cases: Vec<Case>,
}

impl Suite {
    /// Failed steps.
    pub fn failures(&self) -> usize {
        self.cases.iter().filter(|c| c.is_failure()).count()
    }

    /// Skipped steps.
    pub fn skipped(&self) -> usize {
        self.cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Skipped { .. }))
            .count()
    }

    /// The steps' time.
    pub fn time(&self) -> Duration {
        self.cases.iter().map(|c| c.time).sum()
    }
}

/// `s` as XML character data or, with `attribute`, as an attribute value (whose tabs and
/// line ends are written as references, or a parser would turn them into spaces).
/// Characters XML 1.0 cannot hold at all (control characters, U+FFFE, U+FFFF) become
/// visible escapes such as `\u{1b}`.
pub fn escape(s: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\'' if attribute => out.push_str("&apos;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' if attribute => out.push_str("&#9;"),
            '\n' | '\t' => out.push(c),
            c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// `s` cut to its last [`EVIDENCE_MAX`] characters.
fn bounded(s: &str) -> String {
    let n = s.chars().count();
    if n <= EVIDENCE_MAX {
        return s.to_string();
    }
    let tail: String = s.chars().skip(n - EVIDENCE_MAX).collect();
    format!("[... {} characters cut ...]\n{tail}", n - EVIDENCE_MAX)
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// The report of `suites` as a JUnit XML document.
pub fn to_xml(suites: &[Suite]) -> String {
    let tests: usize = suites.iter().map(|s| s.cases.len()).sum();
    let failures: usize = suites.iter().map(Suite::failures).sum();
    let skipped: usize = suites.iter().map(Suite::skipped).sum();
    let time: Duration = suites.iter().map(Suite::time).sum();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"lab validate\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{}\">",
        secs(time)
    );
    for s in suites {
        let name = escape(&s.name, true);
        let _ = writeln!(
            x,
            "  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{}\">",
            s.cases.len(),
            s.failures(),
            s.skipped(),
            secs(s.time())
        );
        if !s.properties.is_empty() {
            x.push_str("    <properties>\n");
            for (k, v) in &s.properties {
                let _ = writeln!(
                    x,
                    "      <property name=\"{}\" value=\"{}\"/>",
                    escape(k, true),
                    escape(v, true)
                );
            }
            x.push_str("    </properties>\n");
        }
        for c in &s.cases {
            let _ = write!(
                x,
                "    <testcase name=\"{}\" classname=\"{name}\" time=\"{}\">",
                escape(&c.name, true),
                secs(c.time)
            );
            match &c.outcome {
                Outcome::Passed => {}
                Outcome::Failed { message, evidence } => {
                    let _ = write!(
                        x,
                        "\n      <failure message=\"{}\">{}</failure>",
                        escape(message, true),
                        escape(&bounded(evidence), false)
                    );
                }
                Outcome::Skipped { message } => {
                    let _ = write!(
                        x,
                        "\n      <skipped message=\"{}\"/>",
                        escape(message, true)
                    );
                }
            }
            if !c.output.is_empty() {
                let _ = write!(
                    x,
                    "\n      <system-out>{}</system-out>",
                    escape(&bounded(&c.output), false)
                );
            }
            if c.outcome != Outcome::Passed || !c.output.is_empty() {
                x.push_str("\n    ");
            }
            x.push_str("</testcase>\n");
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// Write the report to `path` whole or not at all (a temporary file beside it, renamed
/// over it).
pub fn write(path: &Path, suites: &[Suite]) -> Result<()> {
    crate::cache::write_atomic(path, to_xml(suites).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_quotes_and_forbidden_characters() {
        assert_eq!(escape("a<b>&c", false), "a&lt;b&gt;&amp;c");
        assert_eq!(escape("\"x\" 'y'", false), "\"x\" 'y'");
        assert_eq!(escape("\"x\" 'y'", true), "&quot;x&quot; &apos;y&apos;");
        assert_eq!(escape("l1\nl2\tt", false), "l1\nl2\tt");
        assert_eq!(escape("l1\nl2\tt\r", true), "l1&#10;l2&#9;t&#13;");
        assert_eq!(
            escape("\x1b[0m\0\u{ffff}é", false),
            "\\u{1b}[0m\\u{0}\\u{ffff}é"
        );
    }

    fn suites() -> Vec<Suite> {
        vec![
            Suite {
                name: "6.1.0-56-amd64".into(),
                properties: vec![("vmlinuz".into(), "/k/vmlinuz-6.1.0-56-amd64".into())],
                cases: vec![
                    Case::passed("boot", Duration::from_millis(12_500), "ready".into()),
                    Case::failed(
                        "ps",
                        Duration::from_millis(250),
                        "ps differs from the guest",
                        "only in memory [(7, \"<evil>&\")]\x07".into(),
                    ),
                    Case::skipped("verify kthreads", "n/a: no struct kthread"),
                ],
            },
            Suite {
                name: "custom \"rust\" <6.12>".into(),
                properties: Vec::new(),
                cases: vec![Case::passed("boot", Duration::from_secs(1), String::new())],
            },
        ]
    }

    #[test]
    fn counts_and_structure() {
        let s = suites();
        assert_eq!((s[0].failures(), s[0].skipped()), (1, 1));
        assert_eq!(s[0].time(), Duration::from_millis(12_750));
        let x = to_xml(&s);
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"lab validate\" tests=\"4\" failures=\"1\" errors=\"0\" skipped=\"1\" time=\"13.750\">"), "{x}");
        assert!(x.contains("<testsuite name=\"6.1.0-56-amd64\" tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\" time=\"12.750\">"), "{x}");
        assert!(x.contains("<failure message=\"ps differs from the guest\">only in memory [(7, \"&lt;evil&gt;&amp;\")]\\u{7}</failure>"), "{x}");
        assert!(
            x.contains("<skipped message=\"n/a: no struct kthread\"/>"),
            "{x}"
        );
        assert!(
            x.contains("<testsuite name=\"custom &quot;rust&quot; &lt;6.12&gt;\""),
            "{x}"
        );
        assert!(x.contains("<testcase name=\"boot\" classname=\"custom &quot;rust&quot; &lt;6.12&gt;\" time=\"1.000\"></testcase>"), "{x}");
        assert!(x.contains("<property name=\"vmlinuz\" value=\"/k/vmlinuz-6.1.0-56-amd64\"/>"));
        assert!(x.ends_with("</testsuites>\n"));
        // no character XML 1.0 forbids
        assert!(!x
            .chars()
            .any(|c| c < ' ' && !matches!(c, '\n' | '\t' | '\r')));
    }

    #[test]
    fn long_evidence_keeps_its_end() {
        let long = format!("{}END", "x".repeat(EVIDENCE_MAX + 10));
        let b = bounded(&long);
        assert!(
            b.starts_with("[... 13 characters cut ...]\n"),
            "{}",
            &b[..40]
        );
        assert!(b.ends_with("END"));
    }

    #[test]
    fn written_whole() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("report.xml");
        write(&path, &suites()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), to_xml(&suites()));
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "a temporary file was left: {names:?}");
    }
}
