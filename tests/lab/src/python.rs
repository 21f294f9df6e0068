//! Python tools used as test oracles (Volatility 3), installed from PyPI into virtual
//! environments cached by the lab: one venv per exact set of pinned requirements, made
//! once and reused by every later run.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::cache::Cache;
use crate::error::{Error, IoContext, Result};
use crate::tools;

/// Volatility 3, pinned: the ISF tests are checked against this release.
pub const VOLATILITY: &str = "volatility3==2.28.2";
/// JSON Schema validation of ISF files against Volatility's own schema.
pub const JSONSCHEMA: &str = "jsonschema==4.23.0";

/// A virtual environment with pinned packages.
#[derive(Debug, Clone)]
pub struct Venv {
    root: PathBuf,
}

/// The file written last when a venv is complete.
const DONE: &str = "lab-complete";

impl Venv {
    /// The venv for `requirements` (exact pins, `name==version`), made on first use.
    pub fn ensure(cache: &Cache, requirements: &[&str]) -> Result<Venv> {
        for r in requirements {
            if !r.contains("==") {
                return Err(Error::Scenario(format!(
                    "python requirement `{r}` is not pinned (name==version)"
                )));
            }
        }
        let mut h = Sha256::new();
        for r in requirements {
            h.update(r.as_bytes());
            h.update(b"\n");
        }
        let key = &hex::encode(h.finalize())[..16];
        let root = cache.root().join("python").join(key);
        let _lock = cache.lock(&format!("python-{key}"))?;
        if root.join(DONE).exists() {
            return Ok(Venv { root });
        }
        if root.exists() {
            std::fs::remove_dir_all(&root).ctx("removing incomplete venv", &root)?;
        }
        let python = tools::which("python3").ok_or(Error::MissingTool {
            program: "python3".into(),
            package: "python3-venv",
        })?;
        std::fs::create_dir_all(root.parent().unwrap_or(Path::new(".")))
            .ctx("creating", root.parent().unwrap_or(Path::new(".")))?;
        run(Command::new(&python).arg("-m").arg("venv").arg(&root))?;
        let pip = root.join("bin/pip");
        run(Command::new(&pip)
            .args([
                "install",
                "--quiet",
                "--no-input",
                "--disable-pip-version-check",
            ])
            .args(requirements))?;
        std::fs::write(root.join(DONE), requirements.join("\n")).ctx("writing", root.join(DONE))?;
        Ok(Venv { root })
    }

    /// A program installed in the venv (`vol`, `python`, ...).
    pub fn bin(&self, program: &str) -> PathBuf {
        self.root.join("bin").join(program)
    }

    /// The venv's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of an installed package (`site-packages/<name>`).
    pub fn package_dir(&self, package: &str) -> Option<PathBuf> {
        let lib = self.root.join("lib");
        let entries = std::fs::read_dir(&lib).ok()?;
        for e in entries.flatten() {
            let candidate = e.path().join("site-packages").join(package);
            if candidate.is_dir() {
                return Some(candidate);
            }
        }
        None
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .ctx("running", PathBuf::from(cmd.get_program()))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("{cmd:?}"),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}
