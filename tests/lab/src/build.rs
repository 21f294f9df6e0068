//! Things the lab compiles: the guest worker (static C) and out-of-tree kernel modules.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cache::{self, Cache};
use crate::error::{Error, IoContext, Result};
use crate::store::KernelHeaders;
use crate::toolchain::{self, BuildRoot, KernelCompiler};
use crate::tools::{self, CC, MAKE};

/// The guest worker's source (PID 1 of every lab guest, and its workloads).
pub const WORKER_SOURCE: &str = include_str!("../guest/labworker.c");

pub(crate) fn digest(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(&h.finalize()[..12])
}

/// Compile (or reuse) the static guest worker.
pub fn worker(cache: &Cache) -> Result<PathBuf> {
    let cc = CC.find()?;
    let version = tools::run(std::process::Command::new(&cc).arg("--version"))?;
    let key = digest(&[WORKER_SOURCE.as_bytes(), &version.stdout]);
    let dir = cache.root().join("worker").join(&key);
    let bin = dir.join("labworker");
    if cache::is_complete(&dir, false)? {
        return Ok(bin);
    }
    let _lock = cache.lock(&format!("worker-{key}"))?;
    if cache::is_complete(&dir, false)? {
        return Ok(bin);
    }
    let stage = cache.staging()?;
    let src = stage.path().join("labworker.c");
    fs::write(&src, WORKER_SOURCE).ctx("writing", &src)?;
    let out = stage.path().join("labworker");
    let built = tools::run(
        std::process::Command::new(&cc)
            .args(["-static", "-O2", "-Wall", "-pthread", "-o"])
            .arg(&out)
            .arg(&src),
    );
    if let Err(e) = built {
        // static glibc lives in libc6-dev; say so rather than leaving a linker error
        return Err(match e {
            Error::Command { stderr, .. } if stderr.contains("cannot find -lc") => {
                Error::MissingTool {
                    program: "static libc (libc.a)".into(),
                    package: "libc6-dev",
                }
            }
            other => other,
        });
    }
    fs::remove_file(&src).ctx("removing", &src)?;
    cache.commit(stage, &dir)?;
    Ok(bin)
}

/// An out-of-tree C kernel module to build.
#[derive(Debug, Clone)]
pub struct ModuleSource {
    /// The module name (the .ko is `<name>.ko`).
    pub name: String,
    /// Source files: (file name, content). A Kbuild file is generated from the `.c` names.
    pub files: Vec<(String, String)>,
}

impl ModuleSource {
    /// A module made of one C file.
    pub fn single(name: &str, c_source: &str) -> ModuleSource {
        ModuleSource {
            name: name.to_string(),
            files: vec![(format!("{name}_main.c"), c_source.to_string())],
        }
    }

    /// Read every `.c` and `.h` file of a directory.
    pub fn from_dir(name: &str, dir: &Path) -> Result<ModuleSource> {
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).ctx("listing", dir)? {
            let entry = entry.ctx("listing", dir)?;
            let fname = entry.file_name().to_string_lossy().into_owned();
            if fname.ends_with(".c") || fname.ends_with(".h") {
                let text = fs::read_to_string(entry.path()).ctx("reading", entry.path())?;
                files.push((fname, text));
            }
        }
        files.sort();
        Ok(ModuleSource {
            name: name.to_string(),
            files,
        })
    }
}

/// Build a module against a kernel's headers (cached by source and kernel). Returns the
/// `.ko` path.
pub fn kernel_module(
    cache: &Cache,
    headers: &KernelHeaders,
    src: &ModuleSource,
) -> Result<PathBuf> {
    if src.name.is_empty()
        || !src
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(Error::Scenario(format!(
            "module name {:?}: use [A-Za-z0-9_]",
            src.name
        )));
    }
    let objs: Vec<String> = src
        .files
        .iter()
        .filter(|(n, _)| n.ends_with(".c"))
        .map(|(n, _)| n.trim_end_matches(".c").to_string() + ".o")
        .collect();
    if objs.is_empty() {
        return Err(Error::Scenario(format!(
            "module {} has no .c file",
            src.name
        )));
    }
    let mut parts: Vec<&[u8]> = vec![headers.abi.as_bytes(), src.name.as_bytes()];
    for (n, t) in &src.files {
        parts.push(n.as_bytes());
        parts.push(t.as_bytes());
    }
    let key = digest(&parts);
    let dir = cache
        .root()
        .join("modules")
        .join(format!("{}-{key}", src.name));
    let ko = dir.join(format!("{}.ko", src.name));
    if cache::is_complete(&dir, false)? && ko.exists() {
        return Ok(ko);
    }
    let _lock = cache.lock(&format!("module-{}-{key}", src.name))?;
    if cache::is_complete(&dir, false)? && ko.exists() {
        return Ok(ko);
    }
    let build = cache.staging()?;
    for (n, t) in &src.files {
        let p = build.path().join(n);
        fs::write(&p, t).ctx("writing", &p)?;
    }
    let kbuild = if objs.len() == 1 && objs[0] == format!("{}.o", src.name) {
        format!("obj-m := {}.o\n", src.name)
    } else {
        format!(
            "obj-m := {}.o\n{}-y := {}\n",
            src.name,
            src.name,
            objs.join(" ")
        )
    };
    fs::write(build.path().join("Kbuild"), kbuild).ctx("writing Kbuild in", build.path())?;
    // the kernel's own compiler: the host's, or that of a Debian root of its suite
    let compiler = KernelCompiler::of_kdir(&headers.kdir)?;
    match compiler.gcc_major {
        Some(major) if major != toolchain::host_gcc_major()? => {
            BuildRoot::for_kernel(cache, &headers.abi, major)?
                .make_modules(&headers.abi, build.path())?;
        }
        _ => {
            tools::run(
                MAKE.command()?
                    .arg("-C")
                    .arg(&headers.kdir)
                    .arg(format!("M={}", build.path().display()))
                    .arg("modules"),
            )?;
        }
    }
    let built = build.path().join(format!("{}.ko", src.name));
    if !built.exists() {
        return Err(Error::Command {
            command: format!("make -C {} M=... modules", headers.kdir.display()),
            status: "exit status 0".into(),
            stderr: format!("no {}.ko was produced", src.name),
        });
    }
    let stage = cache.staging()?;
    fs::copy(&built, stage.path().join(format!("{}.ko", src.name))).ctx("copying", &built)?;
    cache.commit(stage, &dir)?;
    Ok(ko)
}
