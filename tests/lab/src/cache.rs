//! The lab's cache directory: locks, staging directories and manifests.
//!
//! Layout under the root (default `$XDG_CACHE_HOME/vmi-lab`, else `~/.cache/vmi-lab`;
//! `VMI_LAB_CACHE` overrides):
//!
//! ```text
//! apt/                  private apt configuration, package lists and downloads
//! kernels/<abi>/<part>/ one directory per fetched part (image, dbg, dbg-deb, headers), with
//!                       MANIFEST
//! worker/<hash>/        the compiled guest worker
//! modules/<hash>/       built test kernel modules
//! locks/                lock files (flock), one per entry
//! staging/              work in progress; an entry appears only by renaming a complete
//!                       staging directory into place, so a failure leaves nothing half-written
//! ```

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use atomic_write_file::AtomicWriteFile;
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};

/// The name of the file that marks a complete cache entry.
pub const MANIFEST: &str = "MANIFEST";

/// The lab's cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Cache {
    /// The default cache directory: `VMI_LAB_CACHE`, else `$XDG_CACHE_HOME/vmi-lab`,
    /// else `$HOME/.cache/vmi-lab`.
    pub fn default_root() -> PathBuf {
        if let Some(dir) = std::env::var_os("VMI_LAB_CACHE") {
            return PathBuf::from(dir);
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return PathBuf::from(dir).join("vmi-lab");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
        PathBuf::from(home).join(".cache").join("vmi-lab")
    }

    /// Open (and create) the cache at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Cache> {
        let root = root.into();
        for sub in ["locks", "staging"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).ctx("creating", &dir)?;
        }
        Ok(Cache { root })
    }

    /// Open the default cache.
    pub fn open_default() -> Result<Cache> {
        Cache::open(Cache::default_root())
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Take an exclusive lock named `name` (blocks until free). Locks are per process
    /// and per open file, so two tests in one process also exclude each other.
    pub fn lock(&self, name: &str) -> Result<Lock> {
        let path = self.root.join("locks").join(sanitize(name));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx("opening lock", &path)?;
        file.lock().ctx("locking", &path)?;
        Ok(Lock { _file: file })
    }

    /// A fresh staging directory, removed on drop unless committed.
    pub fn staging(&self) -> Result<tempfile::TempDir> {
        let dir = self.root.join("staging");
        tempfile::Builder::new()
            .prefix("stage-")
            .tempdir_in(&dir)
            .ctx("creating staging directory in", &dir)
    }

    /// Move a complete staging directory to `dest` after writing its manifest. Any
    /// previous (incomplete) `dest` is removed first. Callers hold the entry's lock.
    pub fn commit(&self, staging: tempfile::TempDir, dest: &Path) -> Result<()> {
        write_manifest(staging.path())?;
        if dest.exists() {
            fs::remove_dir_all(dest).ctx("removing incomplete entry", dest)?;
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).ctx("creating", parent)?;
        }
        let src = staging.keep();
        fs::rename(&src, dest).ctx("moving staged entry to", dest)?;
        Ok(())
    }
}

/// Replace characters that do not belong in a file name.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).ctx("opening", path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).ctx("reading", path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// One file recorded in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Path relative to the entry directory.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256, lowercase hex.
    pub sha256: String,
}

/// Record every regular file under `dir` (recursively) with size and sha256.
pub fn write_manifest(dir: &Path) -> Result<()> {
    let mut entries = Vec::new();
    collect_files(dir, &mut entries)?;
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let path = dir.join(MANIFEST);
    let mut out = File::create(&path).ctx("creating", &path)?;
    for e in &entries {
        writeln!(out, "{} {} {}", e.sha256, e.size, e.path).ctx("writing", &path)?;
    }
    out.sync_all().ctx("syncing", &path)?;
    Ok(())
}

fn collect_files(base: &Path, out: &mut Vec<ManifestEntry>) -> Result<()> {
    for entry in walkdir::WalkDir::new(base) {
        let entry = entry.ctx("listing", base)?;
        if !entry.file_type().is_file() {
            continue;
        }
        let path = entry.path();
        let rel = path
            .strip_prefix(base)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        if rel == MANIFEST {
            continue;
        }
        let size = entry.metadata().ctx("inspecting", path)?.len();
        out.push(ManifestEntry {
            path: rel,
            size,
            sha256: sha256_file(path)?,
        });
    }
    Ok(())
}

/// Read a manifest; `None` when the entry is missing or has no manifest.
pub fn read_manifest(dir: &Path) -> Result<Option<Vec<ManifestEntry>>> {
    let path = dir.join(MANIFEST);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).ctx("opening", &path),
    };
    let mut entries = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.ctx("reading", &path)?;
        let mut parts = line.splitn(3, ' ');
        let (Some(sha), Some(size), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Ok(None);
        };
        let Ok(size) = size.parse() else {
            return Ok(None);
        };
        entries.push(ManifestEntry {
            path: name.to_string(),
            size,
            sha256: sha.to_string(),
        });
    }
    Ok(Some(entries))
}

/// True when `dir` has a manifest and every file it lists exists with its recorded size
/// (and, with `hash`, its recorded sha256).
pub fn is_complete(dir: &Path, hash: bool) -> Result<bool> {
    let Some(entries) = read_manifest(dir)? else {
        return Ok(false);
    };
    for e in &entries {
        let path = dir.join(&e.path);
        match fs::metadata(&path) {
            Ok(m) if m.len() == e.size => {}
            _ => return Ok(false),
        }
        if hash && sha256_file(&path)? != e.sha256 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Write `data` to `path` whole or not at all (atomic-write-file: a temporary file in the
/// same directory, renamed over `path` once written).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let mut file = AtomicWriteFile::open(path).ctx("creating", path)?;
    file.write_all(data).ctx("writing", path)?;
    file.commit().ctx("renaming into", path)
}

/// Helper for errors about a cache entry that cannot be used.
pub fn incomplete(path: &Path) -> Error {
    Error::Io {
        what: "cache entry is incomplete after fetching",
        path: path.to_path_buf(),
        source: std::io::Error::other("manifest check failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_and_verify_entry() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::open(root.path()).unwrap();
        let stage = cache.staging().unwrap();
        fs::create_dir(stage.path().join("sub")).unwrap();
        fs::write(stage.path().join("sub/a"), b"hello").unwrap();
        fs::write(stage.path().join("b"), b"").unwrap();
        let dest = root.path().join("kernels/x/image");
        cache.commit(stage, &dest).unwrap();
        assert!(is_complete(&dest, true).unwrap());
        let m = read_manifest(&dest).unwrap().unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].path, "sub/a");
        assert_eq!(m[1].size, 5);
        // a truncated file makes the entry incomplete
        fs::write(dest.join("sub/a"), b"hell").unwrap();
        assert!(!is_complete(&dest, false).unwrap());
        // same size, other content: only the hash check sees it
        fs::write(dest.join("sub/a"), b"jello").unwrap();
        assert!(is_complete(&dest, false).unwrap());
        assert!(!is_complete(&dest, true).unwrap());
        // staging is empty again
        assert_eq!(
            fs::read_dir(root.path().join("staging")).unwrap().count(),
            0
        );
    }

    #[test]
    fn dropped_staging_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::open(root.path()).unwrap();
        {
            let stage = cache.staging().unwrap();
            fs::write(stage.path().join("partial"), b"x").unwrap();
        }
        assert_eq!(
            fs::read_dir(root.path().join("staging")).unwrap().count(),
            0
        );
    }

    #[test]
    fn missing_manifest_is_incomplete() {
        let root = tempfile::tempdir().unwrap();
        assert!(!is_complete(root.path(), false).unwrap());
    }

    #[test]
    fn sanitize_names() {
        assert_eq!(sanitize("6.12.117+deb12-amd64"), "6.12.117+deb12-amd64");
        assert_eq!(sanitize("a/b c"), "a_b_c");
    }
}
