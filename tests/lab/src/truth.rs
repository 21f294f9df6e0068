//! The guest's own report of itself (the ground truth), and its checks.
//!
//! The guest worker prints a block of records, one per line, each `kind key=value ...`
//! with values `%XX`-escaped (see `guest/labworker.c`). [`GroundTruth::parse`] reads it.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::scenario::Expectation;

/// First line of a ground-truth block.
pub const BEGIN: &str = "@@TRUTH-BEGIN 1";
/// Prefix of the last line of a block.
pub const END: &str = "@@TRUTH-END";

/// One process (thread-group leader) as `/proc/<pid>` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Thread-group id (equals `pid` for processes).
    pub tgid: u32,
    /// Real uid.
    pub uid: u32,
    /// Effective uid.
    pub euid: u32,
    /// State letter (R, S, D, Z, I, ...).
    pub state: char,
    /// Number of threads.
    pub threads: u32,
    /// Start time in clock ticks after boot.
    pub start_ticks: u64,
    /// `comm`, as bytes decoded lossily.
    pub comm: String,
    /// The executable path (empty for kernel threads).
    pub exe: String,
    /// The raw command line (arguments separated by NUL).
    pub cmdline: Vec<u8>,
}

impl Process {
    /// True for kernel threads (no executable, no command line).
    pub fn is_kernel_thread(&self) -> bool {
        self.exe.is_empty() && self.cmdline.is_empty()
    }
}

/// Can a task that one view has and the other lacks be a kernel worker that came or went
/// between the two reads of a running guest (a child of kthreadd named `kworker/...`)?
/// Every other task of a guest at rest is in both views.
pub fn kernel_worker_churn(ppid: u32, comm: &str) -> bool {
    ppid == 2 && comm.starts_with("kworker/")
}

/// One thread of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    /// Its process.
    pub tgid: u32,
    /// Thread id.
    pub tid: u32,
    /// State letter.
    pub state: char,
    /// Thread name.
    pub comm: String,
}

/// One line of `/proc/modules`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Module name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Reference count.
    pub refs: i64,
    /// `Live`, `Loading` or `Unloading`.
    pub state: String,
    /// Core load address.
    pub addr: u64,
}

/// One `/proc/kallsyms` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ksym {
    /// Address (as the guest sees it, KASLR applied).
    pub addr: u64,
    /// Type letter.
    pub kind: char,
    /// Symbol name.
    pub name: String,
    /// Owning module, if any.
    pub module: Option<String>,
}

/// Everything the guest reported about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroundTruth {
    /// `uname -r`.
    pub release: String,
    /// `uname -m`.
    pub machine: String,
    /// `/proc/version` (the banner, without the trailing newline).
    pub version: String,
    /// `/proc/cmdline`.
    pub cmdline: String,
    /// Whether the kernel runs at a randomized address.
    pub kaslr: bool,
    /// `_text` as the guest sees it.
    pub text_addr: u64,
    /// Processes, by pid order of `/proc`.
    pub processes: Vec<Process>,
    /// Threads of every process.
    pub threads: Vec<Thread>,
    /// Loaded modules.
    pub modules: Vec<Module>,
    /// Selected kallsyms lines.
    pub ksyms: Vec<Ksym>,
}

/// Decode `%XX` escapes.
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Encode bytes the way the guest does (every byte outside 0x21..0x7e, and `%`).
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &c in bytes {
        if c <= 0x20 || c >= 0x7f || c == b'%' {
            s.push_str(&format!("%{c:02X}"));
        } else {
            s.push(c as char);
        }
    }
    s
}

struct Record<'a> {
    kind: &'a str,
    fields: BTreeMap<&'a str, &'a str>,
    index: usize,
}

impl<'a> Record<'a> {
    fn parse(line: &'a str, index: usize) -> Record<'a> {
        let mut words = line.split(' ');
        let kind = words.next().unwrap_or("");
        let fields = words.filter_map(|w| w.split_once('=')).collect();
        Record {
            kind,
            fields,
            index,
        }
    }

    fn err(&self, message: String) -> Error {
        Error::Truth {
            record: self.index,
            message,
        }
    }

    fn raw(&self, key: &str) -> Result<&'a str> {
        self.fields
            .get(key)
            .copied()
            .ok_or_else(|| self.err(format!("{} record has no {key}", self.kind)))
    }

    fn text(&self, key: &str) -> Result<String> {
        Ok(String::from_utf8_lossy(&unescape(self.raw(key)?)).into_owned())
    }

    fn bytes(&self, key: &str) -> Result<Vec<u8>> {
        Ok(unescape(self.raw(key)?))
    }

    fn num<T: std::str::FromStr>(&self, key: &str) -> Result<T> {
        let v = self.raw(key)?;
        v.parse()
            .map_err(|_| self.err(format!("{key}={v} is not a number")))
    }

    /// Numbers that /proc reports as -1 when unknown become 0.
    fn id(&self, key: &str) -> Result<u32> {
        let v: i64 = self.num(key)?;
        u32::try_from(v).or(Ok(0))
    }

    fn hex(&self, key: &str) -> Result<u64> {
        let v = self.raw(key)?;
        u64::from_str_radix(v.trim_start_matches("0x"), 16)
            .map_err(|_| self.err(format!("{key}={v} is not hexadecimal")))
    }

    fn ch(&self, key: &str) -> Result<char> {
        self.raw(key)?
            .chars()
            .next()
            .ok_or_else(|| self.err(format!("{key} is empty")))
    }
}

impl GroundTruth {
    /// Parse a block: the lines between (and excluding) `@@TRUTH-BEGIN` and
    /// `@@TRUTH-END`, or the whole block with both markers. The record count in the end
    /// marker, when present, must match.
    pub fn parse(text: &str) -> Result<GroundTruth> {
        let mut t = GroundTruth::default();
        let mut count = 0usize;
        let mut expected = None;
        let mut seen_uname = false;
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() || line == BEGIN {
                continue;
            }
            if let Some(rest) = line.strip_prefix(END) {
                expected = rest
                    .trim()
                    .strip_prefix("records=")
                    .and_then(|n| n.parse::<usize>().ok());
                break;
            }
            count += 1;
            let r = Record::parse(line, count);
            match r.kind {
                "uname" => {
                    t.release = r.text("release")?;
                    t.machine = r.text("machine")?;
                    seen_uname = true;
                }
                "version" => t.version = r.text("text")?,
                "cmdline" => t.cmdline = r.text("text")?,
                "kaslr" => {
                    t.kaslr = r.raw("active")? == "1";
                    t.text_addr = r.hex("text")?;
                }
                "proc" => t.processes.push(Process {
                    pid: r.num("pid")?,
                    ppid: r.id("ppid")?,
                    tgid: r.id("tgid")?,
                    uid: r.id("uid")?,
                    euid: r.id("euid")?,
                    state: r.ch("state")?,
                    threads: r.id("threads")?,
                    start_ticks: r.num("start")?,
                    comm: r.text("comm")?,
                    exe: r.text("exe")?,
                    cmdline: r.bytes("cmdline")?,
                }),
                "thread" => t.threads.push(Thread {
                    tgid: r.num("tgid")?,
                    tid: r.num("tid")?,
                    state: r.ch("state")?,
                    comm: r.text("comm")?,
                }),
                "module" => t.modules.push(Module {
                    name: r.text("name")?,
                    size: r.num("size")?,
                    refs: r.num("refs")?,
                    state: r.text("state")?,
                    addr: r.hex("addr")?,
                }),
                "ksym" => t.ksyms.push(Ksym {
                    addr: r.hex("addr")?,
                    kind: r.ch("type")?,
                    name: r.text("name")?,
                    module: r
                        .fields
                        .get("module")
                        .map(|m| String::from_utf8_lossy(&unescape(m)).into_owned()),
                }),
                other => return Err(r.err(format!("unknown record kind {other:?}"))),
            }
        }
        if let Some(n) = expected {
            if n != count {
                return Err(Error::Truth {
                    record: count,
                    message: format!(
                        "block announces {n} records but holds {count}: it was cut or garbled"
                    ),
                });
            }
        } else {
            return Err(Error::Truth {
                record: count,
                message: format!("no {END} line: the block was cut"),
            });
        }
        if !seen_uname {
            return Err(Error::Truth {
                record: 0,
                message: "no uname record".into(),
            });
        }
        Ok(t)
    }

    /// The first kallsyms address of `name` (in the kernel, not a module).
    pub fn ksym(&self, name: &str) -> Option<u64> {
        self.ksyms
            .iter()
            .find(|k| k.name == name && k.module.is_none())
            .map(|k| k.addr)
    }

    /// Processes whose `comm` is `name`.
    pub fn by_comm<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Process> + 'a {
        self.processes.iter().filter(move |p| p.comm == name)
    }

    /// The thread ids of the process `tgid` (its main thread included), sorted.
    pub fn thread_ids(&self, tgid: u32) -> Vec<u32> {
        let mut tids: Vec<u32> = self
            .threads
            .iter()
            .filter(|t| t.tgid == tgid)
            .map(|t| t.tid)
            .collect();
        tids.sort_unstable();
        tids
    }

    /// A process by pid.
    pub fn process(&self, pid: u32) -> Option<&Process> {
        self.processes.iter().find(|p| p.pid == pid)
    }

    /// Check the ground truth against a scenario's expectations; returns every mismatch
    /// (empty when all hold).
    pub fn check(&self, expectations: &[Expectation]) -> Vec<String> {
        let mut problems = Vec::new();
        for e in expectations {
            let procs: Vec<&Process> = self.by_comm(&e.name).collect();
            if procs.len() != e.processes {
                problems.push(format!(
                    "{}: {} processes, expected {}",
                    e.name,
                    procs.len(),
                    e.processes
                ));
                continue;
            }
            for p in &procs {
                if p.threads as usize != e.threads {
                    problems.push(format!(
                        "{} (pid {}): {} threads, expected {}",
                        e.name, p.pid, p.threads, e.threads
                    ));
                }
                let listed = self.threads.iter().filter(|t| t.tgid == p.pid).count();
                if listed != e.threads {
                    problems.push(format!(
                        "{} (pid {}): {listed} thread records, expected {}",
                        e.name, p.pid, e.threads
                    ));
                }
                if p.uid != e.uid || p.euid != e.uid {
                    problems.push(format!(
                        "{} (pid {}): uid {} euid {}, expected {}",
                        e.name, p.pid, p.uid, p.euid, e.uid
                    ));
                }
                if p.cmdline.len() < e.min_cmdline {
                    problems.push(format!(
                        "{} (pid {}): command line of {} bytes, expected at least {}",
                        e.name,
                        p.pid,
                        p.cmdline.len(),
                        e.min_cmdline
                    ));
                }
                if p.tgid != p.pid {
                    problems.push(format!("{}: tgid {} != pid {}", e.name, p.tgid, p.pid));
                }
                if !p.exe.ends_with(&format!("/{}", e.name)) {
                    problems.push(format!("{}: executable is {:?}", e.name, p.exe));
                }
            }
            if e.chain {
                // exactly one member whose parent is not in the set; every other member's
                // parent is a member, and no member has two children in the set
                let pids: Vec<u32> = procs.iter().map(|p| p.pid).collect();
                let roots = procs.iter().filter(|p| !pids.contains(&p.ppid)).count();
                let mut parents: Vec<u32> = procs
                    .iter()
                    .filter(|p| pids.contains(&p.ppid))
                    .map(|p| p.ppid)
                    .collect();
                parents.sort_unstable();
                let distinct = {
                    let mut d = parents.clone();
                    d.dedup();
                    d.len()
                };
                if roots != 1 || distinct != parents.len() {
                    problems.push(format!(
                        "{}: processes do not form one parent→child chain",
                        e.name
                    ));
                }
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;

    fn sample() -> String {
        let mut s = String::from("@@TRUTH-BEGIN 1\n");
        let recs = [
            "uname release=6.1.0-56-amd64 machine=x86_64",
            "version text=Linux%20version%206.1.0-56-amd64",
            "cmdline text=console=ttyS0%20quiet",
            "ksym addr=ffffffff9a000000 type=T name=_text",
            "ksym addr=ffffffffc0001000 type=t name=foo module=lab_mod",
            "kaslr active=1 text=ffffffff9a000000",
            "module name=lab_mod size=16384 refs=0 state=Live addr=ffffffffc0000000 deps=-",
            "proc pid=1 ppid=0 tgid=1 uid=0 euid=0 state=S threads=1 start=5 comm=init exe=/init cmdline=/init",
            "thread tgid=1 tid=1 state=S comm=init",
            "proc pid=2 ppid=0 tgid=2 uid=0 euid=0 state=S threads=1 start=5 comm=kthreadd exe= cmdline=",
            "thread tgid=2 tid=2 state=S comm=kthreadd",
            "proc pid=50 ppid=1 tgid=50 uid=0 euid=0 state=S threads=1 start=90 comm=lab-chain exe=/bin/lab-chain cmdline=/bin/lab-chain%00chain%003",
            "thread tgid=50 tid=50 state=S comm=lab-chain",
            "proc pid=51 ppid=50 tgid=51 uid=0 euid=0 state=S threads=1 start=90 comm=lab-chain exe=/bin/lab-chain cmdline=/bin/lab-chain%00chain%003",
            "thread tgid=51 tid=51 state=S comm=lab-chain",
        ];
        for r in recs {
            s.push_str(r);
            s.push('\n');
        }
        s.push_str(&format!("@@TRUTH-END records={}\n", recs.len()));
        s
    }

    #[test]
    fn parses_a_block() {
        let t = GroundTruth::parse(&sample()).unwrap();
        assert_eq!(t.release, "6.1.0-56-amd64");
        assert_eq!(t.version, "Linux version 6.1.0-56-amd64");
        assert!(t.kaslr);
        assert_eq!(t.ksym("_text"), Some(0xffffffff9a000000));
        assert_eq!(t.ksym("foo"), None, "module symbols are not kernel symbols");
        assert_eq!(t.modules[0].name, "lab_mod");
        assert_eq!(t.processes.len(), 4);
        assert!(t.process(2).unwrap().is_kernel_thread());
        assert_eq!(
            t.process(50).unwrap().cmdline,
            b"/bin/lab-chain\0chain\x003"
        );
    }

    #[test]
    fn cut_or_garbled_blocks_are_errors() {
        let s = sample();
        let cut: String = s.lines().take(5).collect::<Vec<_>>().join("\n");
        assert!(GroundTruth::parse(&cut).is_err());
        let dropped = s.replace("thread tgid=1 tid=1 state=S comm=init\n", "");
        let e = GroundTruth::parse(&dropped).unwrap_err().to_string();
        assert!(e.contains("announces"), "{e}");
        let bad = s.replace("pid=50 ", "pid=x ");
        assert!(GroundTruth::parse(&bad).is_err());
    }

    #[test]
    fn checks_a_chain() {
        let t = GroundTruth::parse(&sample()).unwrap();
        let chain2 = Scenario::new().chain("lab-chain", 2).expectations();
        assert!(t.check(&chain2).is_empty(), "{:?}", t.check(&chain2));
        let chain3 = Scenario::new().chain("lab-chain", 3).expectations();
        assert_eq!(t.check(&chain3).len(), 1);
        let threads = Scenario::new().threads("init", 2).expectations();
        assert!(!t.check(&threads).is_empty());
    }

    #[test]
    fn escape_round_trip() {
        let raw = b"a b%c\x00\xff\n";
        assert_eq!(unescape(&escape(raw)), raw);
        assert_eq!(unescape("%4"), b"%4");
        assert_eq!(unescape("%zz"), b"%zz");
    }
}
