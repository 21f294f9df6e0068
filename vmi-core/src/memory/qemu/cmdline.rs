//! What a QEMU process's command line says about guest RAM: the machine type, the RAM
//! size, the memory backends and the monitor sockets; and from them the guest-physical
//! layout of pc (i440fx) and q35 machines as QEMU splits RAM below and above 4 GiB
//! (`hw/i386/pc_piix.c`, `pc_q35.c`), for attaching to a guest without its monitor.
//!
//! Both option syntaxes are read: `-object memory-backend-ram,id=ram,size=4G` and the
//! JSON form libvirt writes (`-object {"qom-type":"memory-backend-ram",...}`).

use serde_json::Value;

use crate::addr::Pa;

use super::RamRegion;

/// Most arguments read from a command line (QEMU's own limit is far higher; a libvirt
/// guest has a few hundred).
const MAX_ARGS: usize = 1 << 14;

/// A memory backend object (`-object memory-backend-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Its id.
    pub id: String,
    /// `memory-backend-ram`, `memory-backend-memfd` or `memory-backend-file`.
    pub qom_type: String,
    /// Its size in bytes, when given.
    pub size: Option<u64>,
    /// `mem-path` of a file backend.
    pub mem_path: Option<String>,
}

/// The parts of a QEMU command line that place guest RAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The executable (the first argument).
    pub program: String,
    /// The machine type (`pc` when not given).
    pub machine: String,
    /// `-machine memory-backend=ID`.
    pub memory_backend: Option<String>,
    /// `-machine max-ram-below-4g=SIZE`.
    pub max_ram_below_4g: Option<u64>,
    /// `-m` in bytes (QEMU's default, 128 MiB, when not given).
    pub ram_size: u64,
    /// The memory backend objects.
    pub backends: Vec<Backend>,
    /// `-numa` options were given (RAM split over several backends).
    pub numa: bool,
    /// The unix sockets of QMP monitors (`-qmp unix:PATH`, `-chardev socket,path=...`
    /// used by `-mon ...,mode=control`).
    pub qmp_sockets: Vec<String>,
    /// `-uuid` (libvirt gives every domain's), lower-case.
    pub uuid: Option<String>,
}

/// What is wrong with a command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("QEMU's command line: {0}")]
pub struct CommandLineError(pub String);

fn err(what: impl Into<String>) -> CommandLineError {
    CommandLineError(what.into())
}

/// QEMU's size syntax (`qemu_strtosz`): a number with an optional suffix B, K, M, G, T,
/// P or E (powers of 1024, either case); a number without one is in `default_unit`.
pub fn parse_size(text: &str, default_unit: u64) -> Option<u64> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" => default_unit,
        "b" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        "e" => 1 << 60,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `key=value` pairs of a QEMU option string (`a=1,b=2`; `,,` is a literal comma). An
/// item without `=` is returned with the key `""` (the implied first key, e.g. the
/// machine type of `-machine q35,accel=kvm`).
fn option_pairs(text: &str) -> Vec<(String, String)> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                cur.push(',');
            } else {
                items.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    items.push(cur);
    items
        .into_iter()
        .filter(|i| !i.is_empty())
        .map(|i| match i.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (String::new(), i),
        })
        .collect()
}

fn json_str(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn backend_of(value: &str) -> Option<Backend> {
    let fields: Vec<(String, String)> = if value.trim_start().starts_with('{') {
        let v: Value = serde_json::from_str(value).ok()?;
        ["qom-type", "id", "size", "mem-path"]
            .iter()
            .filter_map(|k| Some((k.to_string(), json_str(&v, k)?)))
            .collect()
    } else {
        option_pairs(value)
            .into_iter()
            .map(|(k, v)| {
                if k.is_empty() {
                    ("qom-type".into(), v)
                } else {
                    (k, v)
                }
            })
            .collect()
    };
    let get = |k: &str| {
        fields
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let qom_type = get("qom-type")?;
    if !qom_type.starts_with("memory-backend-") {
        return None;
    }
    Some(Backend {
        id: get("id")?,
        qom_type,
        size: get("size").and_then(|s| parse_size(&s, 1)),
        mem_path: get("mem-path"),
    })
}

impl CommandLine {
    /// Parse `/proc/PID/cmdline` (arguments separated by NUL bytes).
    pub fn parse(raw: &[u8]) -> Result<CommandLine, CommandLineError> {
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .take(MAX_ARGS)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let program = args.first().cloned().unwrap_or_default();
        let mut c = CommandLine {
            program,
            machine: "pc".into(),
            memory_backend: None,
            max_ram_below_4g: None,
            ram_size: 128 << 20,
            backends: Vec::new(),
            numa: false,
            qmp_sockets: Vec::new(),
            uuid: None,
        };
        // chardev id → socket path, and the chardevs of control-mode monitors
        let mut chardevs: Vec<(String, String)> = Vec::new();
        let mut control_mons: Vec<String> = Vec::new();
        let mut i = 1;
        while i < args.len() {
            let opt = args[i].trim_start_matches('-');
            let value = args.get(i + 1).map(String::as_str);
            let takes = |names: &[&str]| names.contains(&opt) && args[i].starts_with('-');
            if takes(&["m"]) {
                let v = value.ok_or_else(|| err("-m without a value"))?;
                let size = option_pairs(v)
                    .into_iter()
                    .find(|(k, _)| k.is_empty() || k == "size")
                    .map(|(_, s)| s)
                    .ok_or_else(|| err(format!("-m {v:?} names no size")))?;
                c.ram_size = parse_size(&size, 1 << 20)
                    .ok_or_else(|| err(format!("-m {v:?}: {size:?} is not a size")))?;
            } else if takes(&["machine", "M"]) {
                let v = value.ok_or_else(|| err("-machine without a value"))?;
                for (k, val) in option_pairs(v) {
                    match k.as_str() {
                        "" | "type" => c.machine = val,
                        "memory-backend" => c.memory_backend = Some(val),
                        "max-ram-below-4g" => c.max_ram_below_4g = parse_size(&val, 1),
                        _ => {}
                    }
                }
            } else if takes(&["object"]) {
                if let Some(b) = value.and_then(backend_of) {
                    c.backends.push(b);
                }
            } else if takes(&["uuid"]) {
                c.uuid = value.map(|u| u.trim().to_ascii_lowercase());
            } else if takes(&["numa"]) {
                c.numa = true;
            } else if takes(&["qmp"]) {
                if let Some(path) = value
                    .and_then(|v| v.strip_prefix("unix:"))
                    .and_then(|v| option_pairs(v).into_iter().next())
                    .map(|(_, p)| p)
                {
                    c.qmp_sockets.push(path);
                }
            } else if takes(&["chardev"]) {
                let pairs = value.map(option_pairs).unwrap_or_default();
                let get = |k: &str| {
                    pairs
                        .iter()
                        .find(|(key, _)| key == k)
                        .map(|(_, v)| v.clone())
                };
                if let (Some(id), Some(path)) = (get("id"), get("path")) {
                    chardevs.push((id, path));
                }
            } else if takes(&["mon"]) {
                let pairs = value.map(option_pairs).unwrap_or_default();
                let get = |k: &str| {
                    pairs
                        .iter()
                        .find(|(key, _)| key == k)
                        .map(|(_, v)| v.clone())
                };
                if get("mode").as_deref() == Some("control") {
                    if let Some(dev) = get("chardev") {
                        control_mons.push(dev);
                    }
                }
            } else {
                i += 1;
                continue;
            }
            i += 2;
        }
        for dev in control_mons {
            if let Some((_, path)) = chardevs.iter().find(|(id, _)| *id == dev) {
                c.qmp_sockets.push(path.clone());
            }
        }
        if let Some(b) = c
            .memory_backend
            .as_ref()
            .and_then(|id| c.backends.iter().find(|b| &b.id == id))
        {
            if let Some(size) = b.size {
                c.ram_size = size;
            }
        }
        Ok(c)
    }

    /// True when the program looks like a QEMU system emulator.
    pub fn is_qemu(&self) -> bool {
        let name = self.program.rsplit('/').next().unwrap_or_default();
        name.starts_with("qemu-system-") || name == "qemu-kvm" || name == "kvm"
    }

    /// The id of the backend that holds the machine's RAM: `-machine memory-backend=`, or
    /// QEMU's own `pc.ram` (created for `-m` alone, and what libvirt names its backend).
    pub fn ram_backend(&self) -> Result<String, CommandLineError> {
        if self.numa {
            return Err(err(
                "the guest has NUMA nodes (-numa): its RAM is split over several backends, whose layout needs QEMU's monitor",
            ));
        }
        Ok(self
            .memory_backend
            .clone()
            .unwrap_or_else(|| "pc.ram".into()))
    }

    /// The backend object of [`CommandLine::ram_backend`], when the command line has one.
    pub fn backend(&self, id: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.id == id)
    }

    /// RAM below and above 4 GiB, as QEMU 7's pc and q35 machines split it.
    pub fn split_4g(&self) -> Result<(u64, u64), CommandLineError> {
        const GIB: u64 = 1 << 30;
        let ram = self.ram_size;
        let m = self.machine.as_str();
        let lowmem = if m.contains("q35") {
            let mut lowmem: u64 = if ram >= 0xb000_0000 {
                0x8000_0000
            } else {
                0xb000_0000
            };
            if let Some(max) = self.max_ram_below_4g.filter(|&v| v > 0) {
                lowmem = lowmem.min(max);
            }
            lowmem
        } else if m == "pc" || m.starts_with("pc-i440fx") || m.starts_with("pc-") {
            let max = self
                .max_ram_below_4g
                .filter(|&v| v > 0)
                .unwrap_or(0xe000_0000);
            let mut lowmem = max;
            // gigabyte alignment: every machine type since QEMU 1.7 (pc-i440fx-1.7)
            if ram >= max && lowmem > 0xc000_0000 {
                lowmem = 0xc000_0000;
            }
            lowmem
        } else {
            return Err(err(format!(
                "machine type {m:?}: its RAM layout is known only for pc and q35 machines; give the QMP socket"
            )));
        };
        if lowmem > 4 * GIB {
            return Err(err(format!("max-ram-below-4g {lowmem:#x} is above 4 GiB")));
        }
        Ok(if ram >= lowmem {
            (lowmem, ram - lowmem)
        } else {
            (ram, 0)
        })
    }

    /// The guest-physical RAM ranges and their offsets in the RAM block: low memory
    /// below the VGA window, RAM from 1 MiB to the 4 GiB split, and RAM above 4 GiB.
    /// The BIOS and option-ROM window (0xa0000..1 MiB) is left out: what QEMU shows
    /// there depends on the chipset's shadowing, and no Linux kernel data lives there.
    pub fn layout(&self) -> Result<Vec<RamRegion>, CommandLineError> {
        let (below, above) = self.split_4g()?;
        let region = |start: u64, end: u64, off: u64| RamRegion {
            start: Pa(start),
            end: Pa(end),
            file_offset: off,
        };
        let mut out = vec![region(0, below.min(0xa0000), 0)];
        if below > 0x10_0000 {
            out.push(region(0x10_0000, below, 0x10_0000));
        }
        if above > 0 {
            out.push(region(1 << 32, (1u64 << 32) + above, below));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> CommandLine {
        CommandLine::parse(args.join("\0").as_bytes()).unwrap()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024", 1 << 20), Some(1 << 30));
        assert_eq!(parse_size("4G", 1 << 20), Some(4 << 30));
        assert_eq!(parse_size("4194304k", 1 << 20), Some(4 << 30));
        assert_eq!(parse_size("512M", 1), Some(512 << 20));
        assert_eq!(parse_size("1073741824", 1), Some(1 << 30));
        assert_eq!(parse_size("17E", 1), None);
        assert_eq!(parse_size("12x", 1), None);
        assert_eq!(parse_size("", 1), None);
    }

    #[test]
    fn plain_qemu() {
        let c = cmd(&[
            "/usr/bin/qemu-system-x86_64",
            "-m",
            "1024",
            "-qmp",
            "unix:/tmp/q.sock,server=on,wait=off",
            "-kernel",
            "bzImage",
        ]);
        assert!(c.is_qemu());
        assert_eq!((c.machine.as_str(), c.ram_size), ("pc", 1 << 30));
        assert_eq!(c.ram_backend().unwrap(), "pc.ram");
        assert_eq!(c.qmp_sockets, vec!["/tmp/q.sock".to_string()]);
        let l = c.layout().unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            (l[1].start, l[1].end, l[1].file_offset),
            (Pa(0x100000), Pa(1 << 30), 0x100000)
        );
    }

    #[test]
    fn libvirt_style_q35_with_json_backend() {
        let c = cmd(&[
            "/usr/bin/qemu-system-x86_64",
            "-name",
            "guest=vm1,debug-threads=on",
            "-machine",
            "pc-q35-7.2,usb=off,dump-guest-core=off,memory-backend=pc.ram",
            "-m",
            "size=4194304k",
            "-object",
            r#"{"qom-type":"memory-backend-memfd","id":"pc.ram","size":4294967296}"#,
            "-chardev",
            "socket,id=charmonitor,fd=33,server=on,wait=off",
            "-mon",
            "chardev=charmonitor,id=monitor,mode=control",
            "-uuid",
            "661139AD-ca74-4fea-9539-52c9e9da8dc4",
        ]);
        assert_eq!(c.ram_backend().unwrap(), "pc.ram");
        assert_eq!(
            c.uuid.as_deref(),
            Some("661139ad-ca74-4fea-9539-52c9e9da8dc4")
        );
        assert_eq!(
            c.backend("pc.ram").unwrap().qom_type,
            "memory-backend-memfd"
        );
        assert_eq!(c.ram_size, 4 << 30);
        // the monitor is a passed file descriptor, not a path
        assert!(c.qmp_sockets.is_empty());
        assert_eq!(c.split_4g().unwrap(), (2 << 30, 2 << 30));
        let l = c.layout().unwrap();
        assert_eq!(
            (l[2].start, l[2].end, l[2].file_offset),
            (Pa(1 << 32), Pa(6 << 30), 2 << 30)
        );
    }

    #[test]
    fn pc_splits_at_3g_and_q35_at_2g() {
        let pc = |m: &str| {
            cmd(&["qemu-system-x86_64", "-M", "pc", "-m", m])
                .split_4g()
                .unwrap()
        };
        assert_eq!(pc("3584M"), (3 << 30, 512 << 20));
        assert_eq!(pc("3583M"), (3583 << 20, 0));
        assert_eq!(pc("8G"), (3 << 30, 5 << 30));
        let q35 = |m: &str| {
            cmd(&["qemu-system-x86_64", "-machine", "type=q35", "-m", m])
                .split_4g()
                .unwrap()
        };
        assert_eq!(q35("2815M"), (2815 << 20, 0));
        assert_eq!(q35("2816M"), (2 << 30, 768 << 20));
        let low = cmd(&[
            "qemu-system-x86_64",
            "-machine",
            "q35,max-ram-below-4g=1G",
            "-m",
            "2G",
        ]);
        assert_eq!(low.split_4g().unwrap(), (1 << 30, 1 << 30));
    }

    #[test]
    fn odd_lines_are_errors_not_guesses() {
        let c = cmd(&["qemu-system-x86_64", "-M", "microvm", "-m", "1G"]);
        assert!(c.layout().unwrap_err().0.contains("microvm"));
        let c = cmd(&["qemu-system-x86_64", "-numa", "node,memdev=m0", "-m", "1G"]);
        assert!(c.ram_backend().is_err());
        assert!(CommandLine::parse(b"qemu-system-x86_64\0-m").is_err());
        assert!(CommandLine::parse(b"qemu-system-x86_64\0-m\0lots").is_err());
        assert!(!cmd(&["/bin/bash", "-c", "x"]).is_qemu());
        // a file backend named by -machine memory-backend= sets the size
        let c = cmd(&[
            "qemu-system-x86_64",
            "-m",
            "1G",
            "-object",
            "memory-backend-file,id=lab-ram,size=2G,mem-path=/dev/shm/r,,x,share=on",
            "-machine",
            "pc,memory-backend=lab-ram",
        ]);
        assert_eq!(c.ram_size, 2 << 30);
        assert_eq!(
            c.backend("lab-ram").unwrap().mem_path.as_deref(),
            Some("/dev/shm/r,x")
        );
    }
}
