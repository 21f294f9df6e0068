//! A private apt configuration for Debian's archive.
//!
//! The lab reads kernels of several Debian suites (bullseye, bookworm, trixie, sid and
//! their -updates, -backports and -security suites) while the machine's own apt sources
//! list only one. It keeps its own `sources.list`, package lists and download cache under
//! the lab cache and passes them to `apt-get`/`apt-cache` as `-o Dir::...` options, so the
//! system's apt configuration is never changed. The archive URIs are read from the
//! system's own apt sources at run time; none is written into the repository.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::cache::{write_atomic, Cache};
use crate::error::{Error, IoContext, Result};
use crate::tools::{self, APT_CACHE, APT_GET};

/// Suites read from the main archive URI.
pub const SUITES: &[&str] = &[
    "bullseye",
    "bullseye-updates",
    "bookworm",
    "bookworm-updates",
    "bookworm-backports",
    "trixie",
    "trixie-updates",
    "trixie-backports",
    "sid",
];
/// Suites read from the security archive URI.
pub const SECURITY_SUITES: &[&str] = &["bullseye-security", "bookworm-security", "trixie-security"];

/// The keyring Debian's archive is signed with (package debian-archive-keyring).
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// How old the package lists may be before they are refreshed.
const MAX_LIST_AGE: Duration = Duration::from_secs(6 * 3600);

/// The archive URIs found in the system's apt sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrors {
    /// The main archive (`.../debian`).
    pub main: String,
    /// The security archive (`.../debian-security`), when the system lists one.
    pub security: Option<String>,
}

impl Mirrors {
    /// Read the mirrors from `/etc/apt/sources.list` and `/etc/apt/sources.list.d/`.
    pub fn from_system() -> Result<Mirrors> {
        let mut texts = Vec::new();
        if let Ok(t) = fs::read_to_string("/etc/apt/sources.list") {
            texts.push((false, t));
        }
        if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
            let mut paths: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                let name = p.to_string_lossy();
                let deb822 = name.ends_with(".sources");
                if deb822 || name.ends_with(".list") {
                    if let Ok(t) = fs::read_to_string(&p) {
                        texts.push((deb822, t));
                    }
                }
            }
        }
        let mut pairs = Vec::new();
        for (deb822, text) in &texts {
            if *deb822 {
                pairs.extend(parse_deb822(text));
            } else {
                pairs.extend(parse_one_line(text));
            }
        }
        mirrors_from(&pairs).ok_or(Error::NoMirror)
    }
}

/// (uri, suite) pairs of `deb` lines in one-line format.
fn parse_one_line(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace().peekable();
        if words.next() != Some("deb") {
            continue;
        }
        if words.peek().is_some_and(|w| w.starts_with('[')) {
            // options: skip until the closing bracket
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
            out.push((uri.to_string(), suite.to_string()));
        }
    }
    out
}

/// (uri, suite) pairs of deb822 stanzas of type `deb`.
fn parse_deb822(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut types = Vec::new();
        let mut uris = Vec::new();
        let mut suites = Vec::new();
        let mut enabled = true;
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let values = value.split_whitespace().map(str::to_string);
            match key.trim().to_ascii_lowercase().as_str() {
                "types" => types.extend(values),
                "uris" => uris.extend(values),
                "suites" => suites.extend(values),
                "enabled" => enabled = value.trim() != "no",
                _ => {}
            }
        }
        if !enabled || !types.iter().any(|t| t == "deb") {
            continue;
        }
        for uri in &uris {
            for suite in &suites {
                out.push((uri.clone(), suite.clone()));
            }
        }
    }
    out
}

/// Pick the main archive (a URI serving a plain Debian suite) and the security archive.
fn mirrors_from(pairs: &[(String, String)]) -> Option<Mirrors> {
    const DEBIAN: &[&str] = &[
        "buster",
        "bullseye",
        "bookworm",
        "trixie",
        "forky",
        "sid",
        "unstable",
        "stable",
        "testing",
        "oldstable",
    ];
    let is_debian_suite = |s: &str| {
        let base = s.split('-').next().unwrap_or(s);
        DEBIAN.contains(&base)
    };
    let main = pairs
        .iter()
        .find(|(_, s)| is_debian_suite(s) && !s.ends_with("-security"))?
        .0
        .trim_end_matches('/')
        .to_string();
    let security = pairs
        .iter()
        .find(|(_, s)| is_debian_suite(s) && s.ends_with("-security"))
        .map(|(u, _)| u.trim_end_matches('/').to_string());
    Some(Mirrors { main, security })
}

/// The private apt configuration under the lab cache.
#[derive(Debug, Clone)]
pub struct Archive {
    dir: PathBuf,
    cache: Cache,
}

impl Archive {
    /// Set up (or reuse) the private apt configuration in `cache`.
    pub fn new(cache: &Cache) -> Result<Archive> {
        let dir = cache.root().join("apt");
        for sub in ["lists/partial", "cache/archives/partial", "debs"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).ctx("creating", &d)?;
        }
        Ok(Archive {
            dir,
            cache: cache.clone(),
        })
    }

    /// Where downloaded packages are kept.
    pub fn debs_dir(&self) -> PathBuf {
        self.dir.join("debs")
    }

    fn sources_path(&self) -> PathBuf {
        self.dir.join("sources.list")
    }

    fn options(&self) -> Vec<String> {
        let d = &self.dir;
        vec![
            format!("-oDir::Etc::SourceList={}", self.sources_path().display()),
            "-oDir::Etc::SourceParts=/dev/null".into(),
            format!("-oDir::State::Lists={}", d.join("lists").display()),
            // apt's binary caches (pkgcache.bin, srcpkgcache.bin) are kept there too:
            // without them every apt-cache and apt-get call parses the lists of all
            // suites again (3 s of CPU, 10 s on a busy machine; 0.15 s with them). apt
            // writes them atomically and rebuilds them when the lists change. Named
            // here because a system's apt.conf may switch them off (docker-clean does).
            format!("-oDir::Cache={}", d.join("cache").display()),
            "-oDir::Cache::pkgcache=pkgcache.bin".into(),
            "-oDir::Cache::srcpkgcache=srcpkgcache.bin".into(),
            "-oAPT::Architecture=amd64".into(),
            "-oAPT::Architectures::=amd64".into(),
            "-oAcquire::Languages=none".into(),
            // downloads land in the lab's own directory, which _apt may not be able to write
            "-oAPT::Sandbox::User=root".into(),
            "-qq".into(),
        ]
    }

    fn apt_get(&self) -> Result<Command> {
        let mut c = APT_GET.command()?;
        c.args(self.options());
        Ok(c)
    }

    fn apt_cache(&self) -> Result<Command> {
        let mut c = APT_CACHE.command()?;
        c.args(self.options());
        Ok(c)
    }

    /// Write the sources list from the system's mirrors; refresh the package lists when
    /// they are missing, older than six hours, or `force` is set.
    pub fn update(&self, force: bool) -> Result<()> {
        let _lock = self.cache.lock("apt")?;
        let mirrors = Mirrors::from_system()?;
        let text = sources_list(&mirrors);
        let path = self.sources_path();
        let changed = fs::read_to_string(&path).ok().as_deref() != Some(text.as_str());
        if changed {
            write_atomic(&path, text.as_bytes())?;
        }
        let stamp = self.dir.join("lists.stamp");
        let fresh = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < MAX_LIST_AGE);
        if fresh && !changed && !force {
            return Ok(());
        }
        tools::run(self.apt_get()?.arg("update"))?;
        write_atomic(&stamp, b"")?;
        Ok(())
    }

    /// Package names starting with `prefix`.
    pub fn package_names(&self, prefix: &str) -> Result<Vec<String>> {
        let out = tools::run(self.apt_cache()?.args(["pkgnames", prefix]))?;
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        names.sort();
        Ok(names)
    }

    /// The `Depends:` of the candidate version of a package (alternatives flattened,
    /// version constraints dropped).
    pub fn depends(&self, package: &str) -> Result<Vec<String>> {
        let out = tools::run(
            self.apt_cache()?
                .args(["show", "--no-all-versions", package]),
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut deps = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("Depends:") {
                for alt in rest.split([',', '|']) {
                    let name = alt.split_whitespace().next().unwrap_or("");
                    if !name.is_empty() {
                        deps.push(name.to_string());
                    }
                }
            }
        }
        Ok(deps)
    }

    /// The newest version of `package` in one of `suites` (e.g. `bookworm` with its
    /// `-security` and `-updates` suites), when the candidate of all suites is not
    /// wanted (it may come from a newer release).
    pub fn version_in(&self, package: &str, suites: &[&str]) -> Result<String> {
        let out = tools::run(self.apt_cache()?.args(["madison", package]))?;
        if let Some(v) = newest_in(&String::from_utf8_lossy(&out.stdout), package, suites) {
            return Ok(v);
        }
        Err(Error::Command {
            command: format!("apt-cache madison {package}"),
            status: "exit status 0".into(),
            stderr: format!("no version of {package} in {}", suites.join(", ")),
        })
    }

    /// The suites that have `package`, newest version first (`sid`, `trixie-backports`).
    pub fn suites_of(&self, package: &str) -> Result<Vec<String>> {
        let out = tools::run(self.apt_cache()?.args(["madison", package]))?;
        Ok(suites_in(&String::from_utf8_lossy(&out.stdout), package))
    }

    /// Download `package` (candidate version) into the lab's deb directory and return
    /// the file. A package already downloaded completely is reused. With `visible`,
    /// apt's own progress goes to the terminal.
    pub fn download(&self, package: &str, visible: bool) -> Result<PathBuf> {
        self.fetch(package, package, &format!("{package}_"), visible)
    }

    /// Download `package` at exactly `version` (see [`Archive::version_in`]), reused
    /// when that version was downloaded before.
    pub fn download_version(&self, package: &str, version: &str, visible: bool) -> Result<PathBuf> {
        // apt writes an epoch's colon as %3a in file names
        let prefix = format!("{package}_{}_", version.replace(':', "%3a"));
        self.fetch(package, &format!("{package}={version}"), &prefix, visible)
    }

    fn fetch(&self, package: &str, request: &str, prefix: &str, visible: bool) -> Result<PathBuf> {
        let _lock = self.cache.lock(&format!("deb-{package}"))?;
        let debs = self.debs_dir();
        if let Some(existing) = find_deb(&debs, prefix)? {
            return Ok(existing);
        }
        let stage = self.cache.staging()?;
        let mut cmd = self.apt_get()?;
        cmd.current_dir(stage.path()).args(["download", request]);
        if visible {
            cmd.args(["-q=0"]);
            tools::run_visible(&mut cmd)?;
        } else {
            tools::run(&mut cmd)?;
        }
        let Some(file) = find_deb(stage.path(), prefix)? else {
            return Err(Error::Command {
                command: format!("apt-get download {request}"),
                status: "exit status 0".into(),
                stderr: "no .deb file was written".into(),
            });
        };
        // check the archive is readable before keeping it
        tools::run(crate::tools::DPKG_DEB.command()?.arg("--info").arg(&file))?;
        let name = file.file_name().map(PathBuf::from).unwrap_or_default();
        let dest = debs.join(name);
        fs::rename(&file, &dest).ctx("moving download to", &dest)?;
        Ok(dest)
    }
}

/// The (package, version, suite) rows of `apt-cache madison` output ("pkg | version |
/// uri suite/component arch Packages" lines), in order; other lines are skipped.
fn madison_rows(madison: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    madison.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        let [name, version, origin] = fields[..] else {
            return None;
        };
        let suite = origin.split_whitespace().nth(1)?.split('/').next()?;
        Some((name, version, suite))
    })
}

/// The first (newest) version of `package` in madison output that comes from one of
/// `suites`.
fn newest_in(madison: &str, package: &str, suites: &[&str]) -> Option<String> {
    madison_rows(madison)
        .find(|(name, _, suite)| *name == package && suites.contains(suite))
        .map(|(_, version, _)| version.to_string())
}

/// The suites of `package`'s rows in madison output, in order, once each.
fn suites_in(madison: &str, package: &str) -> Vec<String> {
    let mut suites: Vec<String> = Vec::new();
    for (_, _, suite) in madison_rows(madison).filter(|(name, _, _)| *name == package) {
        if !suites.iter().any(|s| s == suite) {
            suites.push(suite.to_string());
        }
    }
    suites
}

fn find_deb(dir: &Path, prefix: &str) -> Result<Option<PathBuf>> {
    for entry in fs::read_dir(dir).ctx("listing", dir)? {
        let entry = entry.ctx("listing", dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(".deb") {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

/// The private sources list for the given mirrors.
pub fn sources_list(m: &Mirrors) -> String {
    let mut s = String::from("# written by the vmi lab from the system's apt sources\n");
    for suite in SUITES {
        s.push_str(&format!(
            "deb [signed-by={KEYRING}] {} {suite} main\n",
            m.main
        ));
    }
    if let Some(sec) = &m.security {
        for suite in SECURITY_SUITES {
            s.push_str(&format!("deb [signed-by={KEYRING}] {sec} {suite} main\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_deb822_and_one_line() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\nTypes: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n";
        let pairs = parse_deb822(deb822);
        assert_eq!(pairs.len(), 3);
        let m = mirrors_from(&pairs).unwrap();
        assert_eq!(m.main, "http://mirror.example/debian");
        assert_eq!(
            m.security.as_deref(),
            Some("http://mirror.example/debian-security")
        );

        let one = "# comment\ndeb [arch=amd64 signed-by=/x.gpg] http://m.example/debian/ bullseye main\ndeb http://other.example/cloud-sdk cloud-sdk main\n";
        let pairs = parse_one_line(one);
        assert_eq!(pairs.len(), 2);
        let m = mirrors_from(&pairs).unwrap();
        assert_eq!(m.main, "http://m.example/debian");
        assert_eq!(m.security, None);
    }

    #[test]
    fn disabled_and_foreign_sources_are_ignored() {
        let text = "Types: deb\nURIs: http://a.example/debian\nSuites: bookworm\nEnabled: no\n\nTypes: deb\nURIs: http://b.example/node\nSuites: nodistro\n";
        assert!(mirrors_from(&parse_deb822(text)).is_none());
    }

    #[test]
    fn newest_version_of_a_release() {
        let madison = "     libc6 |     2.43-7 | http://m.example/debian sid/main amd64 Packages\n     libc6 | 2.36-9+deb12u14 | http://m.example/debian bookworm/main amd64 Packages\n     libc6 | 2.36-9+deb12u7 | http://m.example/debian-security bookworm-security/main amd64 Packages\n";
        let bookworm = ["bookworm", "bookworm-security"];
        assert_eq!(
            newest_in(madison, "libc6", &bookworm).as_deref(),
            Some("2.36-9+deb12u14")
        );
        assert_eq!(newest_in(madison, "libc6", &["trixie"]), None);
        assert_eq!(newest_in(madison, "libc", &bookworm), None);
        assert_eq!(newest_in("garbage\n| |\n", "libc6", &bookworm), None);
        assert_eq!(
            suites_in(madison, "libc6"),
            ["sid", "bookworm", "bookworm-security"]
        );
        assert!(suites_in(madison, "libc").is_empty());
    }

    #[test]
    fn sources_list_names_all_suites() {
        let m = Mirrors {
            main: "http://m.example/debian".into(),
            security: Some("http://m.example/debian-security".into()),
        };
        let s = sources_list(&m);
        assert!(s.contains("http://m.example/debian sid main"));
        assert!(s.contains("http://m.example/debian-security bookworm-security main"));
        assert_eq!(s.lines().filter(|l| l.starts_with("deb ")).count(), 12);
    }
}
