//! A directory of profiles, and finding the one whose banner is in guest memory.
//!
//! Identification needs no help from the guest: for each profile, the physical address
//! of `linux_banner` can only be `(linux_banner - __START_KERNEL_map) + phys_shift` with
//! `phys_shift` a multiple of 2 MiB (`CONFIG_PHYSICAL_ALIGN`), so a few hundred probes per
//! GiB of RAM find it, instead of a scan of all memory. Only when no profile matches is
//! memory scanned, to tell the admin which banner the guest has.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::addr::Pa;
use crate::kernel::{scan_banners, KernelError, KASLR_ALIGN, START_KERNEL_MAP};
use crate::memory::PhysicalMemory;
use crate::profile::Profile;

/// Profile files read at most from a directory tree.
pub const MAX_PROFILES: usize = 4096;
/// Deepest directory level walked (`dir` is level 0).
pub const MAX_DEPTH: usize = 8;
/// Largest profile file read (a `--full` native profile is ~15 MB).
const MAX_PROFILE_BYTES: u64 = 256 << 20;

/// Profiles by banner.
#[derive(Debug, Default, Clone)]
pub struct ProfileSet {
    profiles: Vec<(PathBuf, Arc<Profile>)>,
}

/// Where a profile's banner was found.
#[derive(Debug, Clone)]
pub struct Identified {
    /// The profile.
    pub profile: Arc<Profile>,
    /// Its file (empty for profiles added in memory).
    pub path: PathBuf,
    /// The physical address of `linux_banner` in the guest.
    pub banner_pa: Pa,
}

impl ProfileSet {
    /// An empty set.
    pub fn new() -> ProfileSet {
        ProfileSet::default()
    }

    /// Add a profile.
    pub fn add(&mut self, path: PathBuf, profile: Arc<Profile>) {
        self.profiles.push((path, profile));
    }

    /// Number of profiles.
    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// The profiles and their files.
    pub fn iter(&self) -> impl Iterator<Item = (&Path, &Arc<Profile>)> + '_ {
        self.profiles.iter().map(|(p, prof)| (p.as_path(), prof))
    }

    /// Every native profile (`*.json` with a `format_version`) under `dir`, in name
    /// order, a directory's files before its subdirectories (links followed, at most
    /// [`MAX_DEPTH`] levels down). Files that are not profiles, and what cannot be read
    /// below `dir`, are skipped and named in the returned warnings; a profile of an
    /// unsupported format version is a warning too.
    pub fn load_dir(dir: &Path) -> Result<(ProfileSet, Vec<String>), KernelError> {
        let mut set = ProfileSet::new();
        let mut warnings = Vec::new();
        let walk = walkdir::WalkDir::new(dir)
            .follow_links(true)
            .max_depth(MAX_DEPTH + 1)
            .sort_by(|a, b| {
                let dir = |e: &walkdir::DirEntry| e.file_type().is_dir();
                (dir(a), a.file_name()).cmp(&(dir(b), b.file_name()))
            });
        for entry in walk {
            let entry = match entry {
                Ok(e) => e,
                Err(e) if e.depth() == 0 => {
                    return Err(KernelError::ProfileDir {
                        path: dir.to_path_buf(),
                        source: e.into(),
                    })
                }
                Err(e) => {
                    warnings.push(format!("skipped {e}"));
                    continue;
                }
            };
            let p = entry.path();
            if entry.file_type().is_dir() || p.extension().and_then(|e| e.to_str()) != Some("json")
            {
                continue;
            }
            if set.len() >= MAX_PROFILES {
                warnings.push(format!(
                    "more than {MAX_PROFILES} profiles under {}: the rest are ignored",
                    dir.display()
                ));
                return Ok((set, warnings));
            }
            match read_profile(p) {
                Ok(profile) => set.add(p.to_path_buf(), Arc::new(profile)),
                Err(e) => warnings.push(format!("skipped {}: {e}", p.display())),
            }
        }
        Ok((set, warnings))
    }

    /// Find the profile whose banner the guest holds at its kernel-image position.
    pub fn identify<M: PhysicalMemory + ?Sized>(&self, mem: &M) -> Result<Identified, KernelError> {
        for (path, profile) in &self.profiles {
            if let Some(pa) = probe_banner(mem, profile) {
                return Ok(Identified {
                    profile: profile.clone(),
                    path: path.clone(),
                    banner_pa: pa,
                });
            }
        }
        // nothing at the expected places: say what the guest runs
        let found = scan_banners(mem, 8);
        let Some((_, banner)) = found.first() else {
            return Err(KernelError::NoBanner);
        };
        let banner_text = String::from_utf8_lossy(banner).into_owned();
        Err(KernelError::NoProfile {
            banners: found
                .iter()
                .map(|(_, b)| crate::kernel::escape(b))
                .collect(),
            closest: self.closest(&banner_text, 5),
        })
    }

    /// Banners of the profiles closest to `banner` (by release string, then text).
    pub fn closest(&self, banner: &str, n: usize) -> Vec<String> {
        let release = release_of(banner);
        let mut scored: Vec<(usize, &str)> = self
            .profiles
            .iter()
            .map(|(_, p)| {
                let pb = p.kernel.banner.trim_end();
                let r = release_of(pb);
                let common = r
                    .bytes()
                    .zip(release.bytes())
                    .take_while(|(a, b)| a == b)
                    .count();
                (common, pb)
            })
            .collect();
        scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        scored.dedup_by(|a, b| a.1 == b.1);
        scored
            .into_iter()
            .take(n)
            .map(|(_, b)| crate::kernel::escape(b.as_bytes()))
            .collect()
    }
}

fn release_of(banner: &str) -> &str {
    banner
        .strip_prefix("Linux version ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or(banner)
}

fn read_profile(path: &Path) -> Result<Profile, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_PROFILE_BYTES {
        return Err(format!("{} bytes is too large for a profile", meta.len()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    Profile::from_json(&text).map_err(|e| e.to_string())
}

/// The physical address where `profile`'s banner sits in `mem`, probing every 2 MiB
/// aligned physical shift.
pub fn probe_banner<M: PhysicalMemory + ?Sized>(mem: &M, profile: &Profile) -> Option<Pa> {
    let va = profile.symbol("linux_banner")?;
    let banner = profile.kernel.banner.as_bytes();
    if banner.is_empty() || va < START_KERNEL_MAP {
        return None;
    }
    let image_offset = va - START_KERNEL_MAP;
    let residue = image_offset % KASLR_ALIGN;
    let mut buf = vec![0u8; banner.len()];
    for range in mem.ranges() {
        // first candidate at or after range.start with the right residue
        let (start, end) = (range.start.0, range.end.0);
        let mut pa = start - start % KASLR_ALIGN + residue;
        if pa < start {
            pa += KASLR_ALIGN;
        }
        while pa.checked_add(banner.len() as u64)? <= end {
            if mem.read_phys(Pa(pa), &mut buf).is_ok() && buf == banner {
                return Some(Pa(pa));
            }
            pa += KASLR_ALIGN;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = include_str!("../../../docs/profile.example.json");

    #[test]
    fn a_tree_of_profiles_in_name_order_files_first() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let deep = (1..=MAX_DEPTH).fold(root.join("z"), |p, i| p.join(i.to_string()));
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::create_dir_all(root.join("a")).unwrap();
        for f in ["b.json", "a/x.json", "z/1/2/3/4/5/6/7/last.json", "README"] {
            std::fs::write(root.join(f), PROFILE).unwrap();
        }
        // in a directory one level too deep; not a profile; a link back up
        std::fs::write(deep.join("deep.json"), PROFILE).unwrap();
        std::fs::write(root.join("c.json"), "{}").unwrap();
        std::os::unix::fs::symlink(root, root.join("a/up")).unwrap();
        let (set, warnings) = ProfileSet::load_dir(root).unwrap();
        let names: Vec<_> = set
            .iter()
            .map(|(p, _)| p.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["b.json", "a/x.json", "z/1/2/3/4/5/6/7/last.json"]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("c.json"), "{warnings:?}");
        assert!(warnings[1].contains("up"), "{warnings:?}");
        let e = ProfileSet::load_dir(&root.join("none")).unwrap_err();
        assert!(matches!(e, KernelError::ProfileDir { .. }), "{e}");
    }
}
