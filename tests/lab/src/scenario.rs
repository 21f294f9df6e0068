//! Guest scenarios: what runs in the guest before it reports its ground truth.
//!
//! A scenario is a list of steps that compose: named workloads (copies of the guest
//! worker under the given name, so `comm` and the executable agree), files copied in and
//! run, kernel modules loaded with parameters, and plain shell lines. The guest's `/init`
//! (the worker) mounts `/proc`, `/sys` and `/dev`, runs the generated `/lab/boot.sh`,
//! waits until every workload is up, then reports the ground truth on the lab channel.

use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use atomic_write_file::AtomicWriteFile;

use crate::cpio::CpioWriter;
use crate::error::{Error, IoContext, Result};
use crate::tools;

/// Symbols whose `/proc/kallsyms` lines the ground truth always includes.
pub const DEFAULT_KSYMS: &[&str] = &[
    "_text",
    "_stext",
    "_etext",
    "_sdata",
    "_edata",
    "__start_rodata",
    "__end_rodata",
    "linux_banner",
    "init_task",
    "init_cred",
    "init_mm",
    "init_top_pgt",
    "swapper_pg_dir",
    "sys_call_table",
    "ia32_sys_call_table",
    "x64_sys_call",
    "idt_table",
    "modules",
    "module_kset",
    "init_pid_ns",
    "__per_cpu_offset",
    "__per_cpu_start",
    "page_offset_base",
    "vmemmap_base",
    "vmalloc_base",
    "kallsyms_token_table",
];

/// What a named workload does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadKind {
    /// Sleep forever; the arguments only lengthen the command line.
    Sleep {
        /// Extra command-line arguments.
        args: Vec<String>,
    },
    /// One process with this many threads (the main thread included).
    Threads(u32),
    /// A chain of this many processes: parent, child, grandchild, ...
    Chain(u32),
    /// Sleep as this uid and gid.
    SetUid(u32),
    /// One parent with this many sleeping children.
    Spawn(u32),
    /// Process churn: the parent forks this many short-lived children a second (named
    /// `churn-child`, each living 10-200 ms), so the tasks list changes under every scan.
    Churn(u32),
}

/// One step of a scenario.
#[derive(Debug, Clone)]
pub enum Step {
    /// Start the worker under `name`.
    Workload {
        /// The process name (at most 15 bytes, becomes `comm`).
        name: String,
        /// What it does.
        kind: WorkloadKind,
    },
    /// Copy a host file into the guest.
    File {
        /// The file on the host.
        host: PathBuf,
        /// Absolute path in the guest.
        guest: String,
        /// Permission bits.
        mode: u32,
    },
    /// Load a kernel module with parameters.
    Insmod {
        /// The .ko on the host.
        host: PathBuf,
        /// Module parameters (`name=value ...`).
        params: String,
    },
    /// A shell line, run by busybox sh in order with the other steps.
    Shell(String),
}

/// What the ground truth must show for a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// The process name.
    pub name: String,
    /// How many processes carry the name.
    pub processes: usize,
    /// How many threads each of them has.
    pub threads: usize,
    /// Their real uid.
    pub uid: u32,
    /// For chains: the processes form one parent→child line.
    pub chain: bool,
    /// The minimum length of the command line (bytes, NULs included).
    pub min_cmdline: usize,
}

/// A guest scenario.
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    steps: Vec<Step>,
    ksyms: Vec<String>,
}

impl Scenario {
    /// An empty scenario: the guest boots and reports, nothing else runs.
    pub fn new() -> Scenario {
        Scenario::default()
    }

    /// The standard scenario of the lab's tests: several distinct process names, a
    /// multi-threaded process, a three-process chain, a long command line and a process
    /// running as uid 1000.
    pub fn standard() -> Scenario {
        Scenario::new()
            .sleeper("lab-sleeper")
            .sleeper("lab-idle")
            .threads("lab-threads", 4)
            .chain("lab-chain", 3)
            .long_cmdline("lab-longcmd", 3000)
            .run_as("lab-user", 1000)
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    fn workload(mut self, name: &str, kind: WorkloadKind) -> Scenario {
        self.steps.push(Step::Workload {
            name: name.to_string(),
            kind,
        });
        self
    }

    /// A process that sleeps.
    pub fn sleeper(self, name: &str) -> Scenario {
        self.workload(name, WorkloadKind::Sleep { args: Vec::new() })
    }

    /// A process with `threads` threads.
    pub fn threads(self, name: &str, threads: u32) -> Scenario {
        self.workload(name, WorkloadKind::Threads(threads))
    }

    /// A parent→child→... chain of `depth` processes.
    pub fn chain(self, name: &str, depth: u32) -> Scenario {
        self.workload(name, WorkloadKind::Chain(depth))
    }

    /// A process running as `uid` (and gid `uid`).
    pub fn run_as(self, name: &str, uid: u32) -> Scenario {
        self.workload(name, WorkloadKind::SetUid(uid))
    }

    /// A sleeping process whose command line is at least `len` bytes long.
    pub fn long_cmdline(self, name: &str, len: usize) -> Scenario {
        let mut args = Vec::new();
        let mut total = name.len() + 1 + "sleep".len() + 1;
        let mut i = 0;
        while total < len {
            let a = format!("arg{i:05}");
            total += a.len() + 1;
            args.push(a);
            i += 1;
        }
        self.workload(name, WorkloadKind::Sleep { args })
    }

    /// A parent with `children` sleeping children (all named `name`).
    pub fn spawn(self, name: &str, children: u32) -> Scenario {
        self.workload(name, WorkloadKind::Spawn(children))
    }

    /// A parent that forks `per_sec` short-lived children a second, forever (the
    /// children are named `churn-child`, so only the parent carries `name`).
    pub fn churn(self, name: &str, per_sec: u32) -> Scenario {
        self.workload(name, WorkloadKind::Churn(per_sec))
    }

    /// Copy a host file to `guest` (absolute path) with `mode`.
    pub fn file(mut self, host: impl Into<PathBuf>, guest: &str, mode: u32) -> Scenario {
        self.steps.push(Step::File {
            host: host.into(),
            guest: guest.to_string(),
            mode,
        });
        self
    }

    /// Copy a host executable in and start it in the background with `args`.
    pub fn run_file(self, host: impl Into<PathBuf>, guest: &str, args: &str) -> Scenario {
        self.file(host, guest, 0o755)
            .shell(&format!("{guest} {args} &"))
    }

    /// Load a kernel module with parameters.
    pub fn insmod(mut self, host: impl Into<PathBuf>, params: &str) -> Scenario {
        self.steps.push(Step::Insmod {
            host: host.into(),
            params: params.to_string(),
        });
        self
    }

    /// A shell line, run in order with the other steps.
    pub fn shell(mut self, line: &str) -> Scenario {
        self.steps.push(Step::Shell(line.to_string()));
        self
    }

    /// Also report this symbol's `/proc/kallsyms` lines.
    pub fn ksym(mut self, name: &str) -> Scenario {
        self.ksyms.push(name.to_string());
        self
    }

    /// The symbols the ground truth reports.
    pub fn ksyms(&self) -> Vec<String> {
        let mut all: Vec<String> = DEFAULT_KSYMS.iter().map(|s| s.to_string()).collect();
        for k in &self.ksyms {
            if !all.contains(k) {
                all.push(k.clone());
            }
        }
        all
    }

    /// What the ground truth must show for each workload.
    pub fn expectations(&self) -> Vec<Expectation> {
        let mut out = Vec::new();
        for step in &self.steps {
            let Step::Workload { name, kind } = step else {
                continue;
            };
            let base = Expectation {
                name: name.clone(),
                processes: 1,
                threads: 1,
                uid: 0,
                chain: false,
                min_cmdline: 0,
            };
            out.push(match kind {
                WorkloadKind::Sleep { args } => Expectation {
                    min_cmdline: args.iter().map(|a| a.len() + 1).sum::<usize>(),
                    ..base
                },
                WorkloadKind::Threads(n) => Expectation {
                    threads: *n as usize,
                    ..base
                },
                WorkloadKind::Chain(n) => Expectation {
                    processes: *n as usize,
                    chain: true,
                    ..base
                },
                WorkloadKind::SetUid(uid) => Expectation { uid: *uid, ..base },
                WorkloadKind::Spawn(n) => Expectation {
                    processes: *n as usize + 1,
                    ..base
                },
                WorkloadKind::Churn(_) => base,
            });
        }
        out
    }

    fn validate(&self) -> Result<()> {
        let mut names = Vec::new();
        for step in &self.steps {
            match step {
                Step::Workload { name, .. } => {
                    let ok = !name.is_empty()
                        && name.len() <= 15
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                        && name != "init";
                    if !ok {
                        return Err(Error::Scenario(format!(
                            "workload name {name:?}: use 1-15 of [A-Za-z0-9_-] (it becomes the process's comm)"
                        )));
                    }
                    if names.contains(name) {
                        return Err(Error::Scenario(format!(
                            "workload name {name:?} is used twice"
                        )));
                    }
                    names.push(name.clone());
                }
                Step::File { host, guest, .. } => {
                    if !guest.starts_with('/') || guest.contains("..") {
                        return Err(Error::Scenario(format!(
                            "guest path {guest:?} must be absolute and without .."
                        )));
                    }
                    if !host.is_file() {
                        return Err(Error::Scenario(format!(
                            "file {} does not exist",
                            host.display()
                        )));
                    }
                }
                Step::Insmod { host, params } => {
                    if !host.is_file() {
                        return Err(Error::Scenario(format!(
                            "module {} does not exist",
                            host.display()
                        )));
                    }
                    if params.contains(['\n', ';', '&', '|', '`', '$']) {
                        return Err(Error::Scenario(format!(
                            "module parameters {params:?} contain shell syntax"
                        )));
                    }
                }
                Step::Shell(line) => {
                    if line.contains('\n') {
                        return Err(Error::Scenario("a shell step is one line".into()));
                    }
                }
            }
        }
        Ok(())
    }

    /// The generated `/lab/boot.sh`.
    pub fn boot_script(&self) -> String {
        let mut s = String::from(
            "#!/bin/sh\n# generated by the vmi lab: the scenario's steps, then a wait until every workload is up\n\
             export PATH=/bin:/sbin:/usr/bin:/usr/sbin\ncd /\n\
             [ -e /lab/kmod/qemu_fw_cfg.ko ] && { insmod /lab/kmod/qemu_fw_cfg.ko || echo 'lab: qemu_fw_cfg did not load'; }\n\
             lab_wait() { # name processes threads\n  i=0\n  while [ $i -lt 600 ]; do\n    \
             pids=$(pidof \"$1\")\n    n=$(echo $pids | wc -w)\n    if [ \"$n\" -ge \"$2\" ]; then\n      ok=1\n      \
             for p in $pids; do t=$(awk '/^Threads:/{print $2}' /proc/$p/status 2>/dev/null); [ \"$t\" = \"$3\" ] || ok=0; done\n      \
             [ $ok = 1 ] && return 0\n    fi\n    i=$((i+1)); usleep 100000\n  done\n  echo \"lab: workload $1 did not come up\"\n}\n",
        );
        let mut module_index = 0;
        for step in &self.steps {
            match step {
                Step::Workload { name, kind } => {
                    let args = match kind {
                        WorkloadKind::Sleep { args } => {
                            let mut a = String::from("sleep");
                            for x in args {
                                a.push(' ');
                                a.push_str(x);
                            }
                            a
                        }
                        WorkloadKind::Threads(n) => format!("threads {n}"),
                        WorkloadKind::Chain(n) => format!("chain {n}"),
                        WorkloadKind::SetUid(u) => format!("setuid {u}"),
                        WorkloadKind::Spawn(n) => format!("spawn {n}"),
                        WorkloadKind::Churn(n) => format!("churn {n}"),
                    };
                    s.push_str(&format!(
                        "/bin/{name} {args} </dev/null >/dev/null 2>&1 &\n"
                    ));
                }
                Step::File { .. } => {}
                Step::Insmod { host, params } => {
                    let file = module_file_name(module_index, host);
                    module_index += 1;
                    s.push_str(&format!(
                        "insmod /lab/modules/{file} {params} || echo 'lab: insmod {file} failed'\n"
                    ));
                }
                Step::Shell(line) => {
                    s.push_str(line);
                    s.push('\n');
                }
            }
        }
        for e in self.expectations() {
            s.push_str(&format!(
                "lab_wait {} {} {}\n",
                e.name, e.processes, e.threads
            ));
        }
        s
    }

    /// Write the initramfs (uncompressed newc cpio) to `out`, atomically.
    pub fn build_initramfs(
        &self,
        worker: &Path,
        busybox: &Path,
        fw_cfg_module: Option<&Path>,
        out: &Path,
    ) -> Result<()> {
        self.validate()?;
        let worker_bin = fs::read(worker).ctx("reading", worker)?;
        let busybox_bin = fs::read(busybox).ctx("reading", busybox)?;
        let applets = tools::run(std::process::Command::new(busybox).arg("--list-full"))?;
        let applets = String::from_utf8_lossy(&applets.stdout).into_owned();

        let file = AtomicWriteFile::open(out).ctx("creating", out)?;
        let mut w = CpioWriter::new(BufWriter::new(file));
        let io = |e: std::io::Error| Error::Io {
            what: "writing initramfs",
            path: out.to_path_buf(),
            source: e,
        };
        let mut dirs: Vec<String> = [
            "/bin",
            "/sbin",
            "/usr",
            "/usr/bin",
            "/usr/sbin",
            "/dev",
            "/proc",
            "/sys",
            "/tmp",
            "/etc",
            "/root",
            "/lab",
            "/lab/kmod",
            "/lab/modules",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for step in &self.steps {
            if let Step::File { guest, .. } = step {
                let chain: Vec<String> = Path::new(guest)
                    .ancestors()
                    .skip(1)
                    .map(|d| d.to_string_lossy().into_owned())
                    .filter(|d| d != "/" && !d.is_empty())
                    .collect();
                for d in chain.into_iter().rev() {
                    if !dirs.contains(&d) {
                        dirs.push(d);
                    }
                }
            }
        }
        for d in &dirs {
            w.dir(d, if d == "/tmp" { 0o1777 } else { 0o755 })
                .map_err(io)?;
        }
        w.char_device("/dev/console", 0o600, 5, 1).map_err(io)?;
        w.char_device("/dev/null", 0o666, 1, 3).map_err(io)?;
        w.char_device("/dev/ttyS0", 0o600, 4, 64).map_err(io)?;
        w.char_device("/dev/ttyS1", 0o600, 4, 65).map_err(io)?;
        w.file("/init", 0o755, &worker_bin).map_err(io)?;
        w.file("/bin/busybox", 0o755, &busybox_bin).map_err(io)?;
        for applet in applets.lines() {
            let applet = applet.trim().trim_start_matches('/');
            let Some((parent, name)) = applet.rsplit_once('/') else {
                continue;
            };
            if name == "init" || name == "linuxrc" || name == "busybox" {
                continue;
            }
            if !dirs.iter().any(|d| d.trim_start_matches('/') == parent) {
                continue;
            }
            w.symlink(&format!("/{applet}"), "/bin/busybox")
                .map_err(io)?;
        }
        w.file(
            "/etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nlab:x:1000:1000:lab:/tmp:/bin/sh\n",
        )
        .map_err(io)?;
        w.file("/etc/group", 0o644, b"root:x:0:\nlab:x:1000:\n")
            .map_err(io)?;
        if let Some(ko) = fw_cfg_module {
            let data = fs::read(ko).ctx("reading", ko)?;
            w.file("/lab/kmod/qemu_fw_cfg.ko", 0o644, &data)
                .map_err(io)?;
        }
        let mut module_index = 0;
        for step in &self.steps {
            match step {
                Step::Workload { name, .. } => {
                    w.file(&format!("/bin/{name}"), 0o755, &worker_bin)
                        .map_err(io)?;
                }
                Step::File { host, guest, mode } => {
                    let data = fs::read(host).ctx("reading", host)?;
                    w.file(guest, *mode, &data).map_err(io)?;
                }
                Step::Insmod { host, .. } => {
                    let data = fs::read(host).ctx("reading", host)?;
                    let file = module_file_name(module_index, host);
                    module_index += 1;
                    w.file(&format!("/lab/modules/{file}"), 0o644, &data)
                        .map_err(io)?;
                }
                Step::Shell(_) => {}
            }
        }
        w.file("/lab/boot.sh", 0o755, self.boot_script().as_bytes())
            .map_err(io)?;
        let mut ksyms = self.ksyms().join("\n");
        ksyms.push('\n');
        w.file("/lab/ksyms", 0o644, ksyms.as_bytes()).map_err(io)?;
        let buf = w.finish().map_err(io)?;
        buf.into_inner()
            .map_err(|e| io(e.into_error()))?
            .commit()
            .ctx("renaming into", out)
    }
}

fn module_file_name(index: usize, host: &Path) -> String {
    let stem = host
        .file_name()
        .map(|n| crate::cache::sanitize(&n.to_string_lossy()))
        .unwrap_or_else(|| "module.ko".into());
    format!("{index}-{stem}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_expectations() {
        let e = Scenario::standard().expectations();
        assert_eq!(e.len(), 6);
        let chain = e.iter().find(|x| x.name == "lab-chain").unwrap();
        assert_eq!((chain.processes, chain.chain), (3, true));
        let t = e.iter().find(|x| x.name == "lab-threads").unwrap();
        assert_eq!(t.threads, 4);
        let u = e.iter().find(|x| x.name == "lab-user").unwrap();
        assert_eq!(u.uid, 1000);
        let l = e.iter().find(|x| x.name == "lab-longcmd").unwrap();
        assert!(l.min_cmdline >= 3000 - "lab-longcmd sleep ".len());
    }

    #[test]
    fn boot_script_runs_steps_in_order_then_waits() {
        let s = Scenario::new()
            .sleeper("a")
            .shell("echo hello")
            .spawn("b", 3)
            .boot_script();
        let a = s.find("/bin/a sleep").unwrap();
        let h = s.find("echo hello").unwrap();
        let b = s.find("/bin/b spawn 3").unwrap();
        let w = s.find("lab_wait b 4 1").unwrap();
        assert!(a < h && h < b && b < w);
    }

    #[test]
    fn churn_is_one_named_process() {
        let s = Scenario::new().churn("lab-churn", 20);
        assert!(s.boot_script().contains("/bin/lab-churn churn 20 "));
        let e = s.expectations();
        assert_eq!((e[0].processes, e[0].threads), (1, 1));
    }

    #[test]
    fn rejects_bad_names() {
        for bad in ["", "init", "a name", "sixteen-chars-xx", "../x"] {
            assert!(Scenario::new().sleeper(bad).validate().is_err(), "{bad}");
        }
        assert!(Scenario::new()
            .sleeper("x")
            .sleeper("x")
            .validate()
            .is_err());
        assert!(Scenario::new().shell("a\nb").validate().is_err());
        assert!(Scenario::new()
            .file("/nonexistent/file", "/x", 0o644)
            .validate()
            .is_err());
    }

    #[test]
    fn ksyms_include_defaults_and_extras_once() {
        let k = Scenario::new().ksym("init_task").ksym("my_sym").ksyms();
        assert_eq!(k.iter().filter(|s| *s == "init_task").count(), 1);
        assert!(k.contains(&"my_sym".to_string()));
    }
}
