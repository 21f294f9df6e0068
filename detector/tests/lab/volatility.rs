//! Volatility 3 as an oracle on the ELF dump of a lab guest.

use super::*;

/// Volatility 3 on an ELF dump of a lab guest: the venv, an ISF by profile-gen from the
/// kernel's -dbg package (`--full`), and the guest's kernel text (relocated, to tell the
/// kernel's own callbacks from hooks).
pub(crate) struct Volatility {
    pub(crate) kernel: String,
    venv: Venv,
    dir: tempfile::TempDir,
    pub(crate) elf: PathBuf,
    pub(crate) text: std::ops::Range<u64>,
}

impl Volatility {
    pub(crate) fn new(lab: &Lab, kernel: &str, elf: &Path, d: &Detector) -> Volatility {
        let venv = Venv::ensure(lab.cache(), &[VOLATILITY]).expect("volatility venv");
        let dir = tempfile::tempdir().expect("tempdir");
        let syms = dir.path().join("symbols/linux");
        std::fs::create_dir_all(&syms).unwrap();
        std::fs::create_dir_all(dir.path().join("cache")).unwrap();
        let dbg = lab.store().debug(kernel).expect("-dbg");
        let mut out = std::io::BufWriter::new(std::fs::File::create(syms.join("k.json")).unwrap());
        profile_gen::build::generate(
            profile_gen::build::Input::Files {
                vmlinux: &dbg.vmlinux,
                system_map: Some(&dbg.system_map),
            },
            &profile_gen::build::Options {
                full: true,
                ..Default::default()
            },
            profile_gen::build::Format::Isf,
            &mut out,
            &mut |_| {},
        )
        .expect("ISF");
        drop(out);
        let map = std::fs::read_to_string(&dbg.system_map).expect("System.map");
        let sym = |n: &str| {
            map.lines()
                .find_map(|l| {
                    let mut f = l.split_whitespace();
                    let a = f.next()?;
                    (f.nth(1)? == n).then(|| u64::from_str_radix(a, 16).ok())?
                })
                .unwrap_or_else(|| panic!("{n} in System.map"))
        };
        let id = d
            .run(&["--dump", elf.to_str().unwrap()], &["--json", "identify"])
            .json();
        let shift = id["kaslr"]["virtual_shift"]
            .as_str()
            .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
            .expect("virtual shift");
        Volatility {
            kernel: kernel.to_string(),
            venv,
            dir,
            elf: elf.to_path_buf(),
            text: sym("_stext") + shift..sym("_etext") + shift,
        }
    }

    /// The rows `plugin` reports as JSON (none when it fails: the failure is printed).
    pub(crate) fn rows(&self, plugin: &str) -> Vec<Value> {
        self.rows_with(&[plugin])
    }

    /// The rows of a plugin with its arguments (`["linux.proc.Maps", "--pid", "7"]`).
    pub(crate) fn rows_with(&self, plugin_and_args: &[&str]) -> Vec<Value> {
        let plugin = plugin_and_args.join(" ");
        let t = std::time::Instant::now();
        let o = Command::new(self.venv.bin("vol"))
            .args(["-q", "-r", "json", "-s"])
            .arg(self.dir.path().join("symbols"))
            .arg("--cache-path")
            .arg(self.dir.path().join("cache"))
            .arg("-f")
            .arg(&self.elf)
            .args(plugin_and_args)
            .output()
            .expect("vol");
        let stdout = String::from_utf8_lossy(&o.stdout);
        eprintln!(
            "{}: vol {plugin} ({:.1?}):\n{stdout}\n{}",
            self.kernel,
            t.elapsed(),
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_str::<Value>(&stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }
}

/// A kernel address as Volatility prints it (without its sign extension, 48 bits).
pub(crate) fn vol_addr(v: &Value) -> Option<u64> {
    v.as_u64().map(|a| {
        if a >> 47 == 1 {
            a | 0xffff_0000_0000_0000
        } else {
            a
        }
    })
}

/// [`vol_addr`] as the detector's hex.
pub(crate) fn vol_hex(v: &Value) -> String {
    vol_addr(v).map(|a| format!("{a:#x}")).unwrap_or_default()
}
