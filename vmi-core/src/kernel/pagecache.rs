//! Files read from the guest's page cache: what `cat PATH` and `ls DIR` would show, as
//! far as the kernel holds it in memory, without logging into the guest.
//!
//! A path is looked up the way the dcache holds it: from a process's root
//! (`task->fs->root`, a `struct path`) down through each directory dentry's children
//! (`dentry.d_subdirs` of `d_child` links before 6.8, the hlist `d_children` of
//! `d_sib` links from 6.8), by name, crossing into the file system mounted on a
//! dentry (a mount of the root's namespace whose `mnt_parent` and `mnt_mountpoint`
//! are the current mount and dentry; the last such mount, the one on top). A name the
//! dcache does not hold (the guest never looked it up, or the dentry was reclaimed) is
//! [`Lookup::NotCached`], a negative dentry (a name looked up and not found)
//! [`Lookup::Negative`]: neither says whether the file exists on disk.
//!
//! A file's data is its inode's `i_mapping->i_pages`, an XArray of the cached folios
//! by page index (`pidns::xarray_entries`' bounded, cycle-checked walk). A folio's
//! `struct page` gives its frame (`(page - vmemmap_base) / sizeof(struct page)`), read
//! by physical address. A large folio fills one slot per page index with sibling
//! entries, which the walk skips: an index with no entry of its own is resident when
//! the `struct page` at that offset into the folio before it names that folio as its
//! head (`compound_head`, the head's address + 1; 7.x's `compound_info`, bit 0 set and
//! either that or a mask that gives the head from the tail's address), within 512 pages (the largest page
//! cache folio on x86-64, a PMD). Every other page up to `i_size` is not resident
//! (never read, evicted, or swapped out: a value entry) and is said to be, never
//! guessed. A folio whose `mapping` is not the file's is not taken as the file's.
//!
//! Bounded: at most [`MAX_WALK`] path components and mount crossings, at most the
//! caller's entries per directory, at most the caller's bytes per file (and
//! [`MAX_CACHED_PAGES`] XArray entries).
//!
//! Fields used ([`PageCacheLayout`]): `task_struct.fs`, `fs_struct.root`,
//! `dentry.d_subdirs`/`d_child` or `dentry.d_children`/`d_sib`, `address_space.i_pages`,
//! `address_space.nrpages`, `xarray.xa_head`, `page.mapping`, `page.compound_head`,
//! the size of `struct page`; the symbol `vmemmap_base`; and the path walk's
//! (`files.rs`), the VFS walk's (`vfs.rs`) and the inode's (`openfiles.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::addr::{Pa, Va};
use crate::kernel::files::FileLayout;
use crate::kernel::objects::{is_kernel_va, read_err, walk_chain};
use crate::kernel::openfiles::{InodeInfo, OpenFileLayout};
use crate::kernel::pidns::{xarray_entries, PidLimits, XaShape};
use crate::kernel::vfs::{VfsLayout, MAX_MOUNTS};
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// Most path components walked and mounts crossed in one lookup.
pub const MAX_WALK: usize = 256;
/// Most XArray entries (cached folios) of one file read.
pub const MAX_CACHED_PAGES: usize = 1 << 20;
/// The largest page cache folio, in pages (PMD size on x86-64).
const MAX_FOLIO_PAGES: u64 = 512;
const PAGE: u64 = 4096;

/// How a dentry links its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildLinks {
    /// `dentry.d_subdirs` (a `list_head`) of `dentry.d_child` (before 6.8).
    List {
        /// `dentry.d_subdirs`
        head: u64,
        /// `dentry.d_child`
        node: u64,
    },
    /// `dentry.d_children` (an `hlist_head`) of `dentry.d_sib` (6.8 on).
    Hlist {
        /// `dentry.d_children`
        head: u64,
        /// `dentry.d_sib`
        node: u64,
    },
}

crate::kernel_layout! {
    /// Offsets of the dcache lookup and the page cache read.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct PageCacheLayout(p) {
        /// `task_struct.fs`
        pub task_fs: u64 = "task_struct" ["fs"],
        /// `fs_struct.root` (a `struct path`)
        pub fs_root: u64 = "fs_struct" ["root"],
        /// `dentry.d_subdirs` (before 6.8)
        pub d_subdirs: Option<u64> = opt "dentry" ["d_subdirs"],
        /// `dentry.d_child` (before 6.8)
        pub d_child: Option<u64> = opt "dentry" ["d_child"],
        /// `dentry.d_children` (6.8 on)
        pub d_children: Option<u64> = opt "dentry" ["d_children"],
        /// `dentry.d_sib` (6.8 on)
        pub d_sib: Option<u64> = opt "dentry" ["d_sib"],
        /// `address_space.i_pages` (an XArray)
        pub i_pages: u64 = "address_space" ["i_pages"],
        /// `address_space.nrpages`
        pub nrpages: u64 = "address_space" ["nrpages"],
        /// `xarray.xa_head`
        pub xa_head: u64 = "xarray" ["xa_head"],
        /// `page.mapping`
        pub page_mapping: u64 = "page" ["mapping"],
        /// `page.compound_head` (a tail page's head + 1; 7.x: `compound_info`, which may
        /// hold a mask instead)
        pub page_head: u64 = "page" ["compound_head", "compound_info"],
    }
    computed {
        /// How children are linked.
        pub children: ChildLinks = match (d_subdirs, d_child, d_children, d_sib) {
            (Some(head), Some(node), _, _) => ChildLinks::List { head, node },
            (_, _, Some(head), Some(node)) => ChildLinks::Hlist { head, node },
            _ => return Err(KernelError::MissingField("dentry.d_subdirs".into())),
        },
        /// `sizeof(struct page)`.
        pub page_size: u64 = match p.types.get("page").map(|t| t.size) {
            Some(s) if (32..=256).contains(&s) => s,
            _ => return Err(KernelError::MissingField("the size of struct page".into())),
        },
        /// The shape of the XArray's nodes.
        pub xa: XaShape = XaShape::from_profile(p)?,
    }
    symbols [
        ["vmemmap_base"],
    ]
}

/// A dentry in a mount: where a lookup ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The `struct mount`.
    pub mount: Va,
    /// The dentry.
    pub dentry: Va,
    /// Its inode (null for a negative dentry).
    pub inode: Va,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The path's dentry, with its inode.
    Found(Entry),
    /// The dcache holds the name as not existing (a negative dentry).
    Negative,
    /// The dcache does not hold this component (the path's first `n` bytes were found).
    NotCached {
        /// The part of the path that was found.
        found: Vec<u8>,
        /// The component not found under it.
        missing: Vec<u8>,
    },
    /// A component on the way is not a directory (a file or a symbolic link, which
    /// the lookup does not follow).
    NotDirectory {
        /// The part of the path up to it.
        at: Vec<u8>,
    },
}

/// One cached entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name (guest bytes).
    pub name: Vec<u8>,
    /// The dentry.
    pub dentry: Va,
    /// Its inode, `None` for a negative dentry.
    pub inode: Option<InodeInfo>,
    /// Pages of its data in the page cache (`i_mapping->nrpages`; 0 without one).
    pub cached_pages: u64,
}

/// A file's data as the page cache holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFile {
    /// `i_size`.
    pub size: u64,
    /// The bytes `0..min(size, max)`: not resident pages are zeros.
    pub data: Vec<u8>,
    /// Byte ranges of `data` that are not resident (zeros in `data`).
    pub missing: Vec<(u64, u64)>,
    /// True when `size` was more than what was read.
    pub truncated: bool,
}

impl<M: PhysicalMemory> Kernel<M> {
    /// Look up the absolute `path` in the dcache from the root of `task` (its
    /// `fs->root`). `.` components are skipped; `..` is looked up as a name, which no
    /// dentry has (so it is not cached): give the path without it.
    pub fn lookup_cached(&self, task: Va, path: &[u8]) -> Result<Lookup, KernelError> {
        let l = PageCacheLayout::from_profile(&self.profile)?;
        let fl = FileLayout::from_profile(&self.profile)?;
        let vl = VfsLayout::from_profile(&self.profile)?;
        let fs = self.ptr(task.0.wrapping_add(l.task_fs), "task_struct.fs")?;
        if fs == 0 {
            return Err(KernelError::BadPointer {
                what: "task_struct.fs",
                value: 0,
            });
        }
        let root = fs.wrapping_add(l.fs_root);
        let vfsmount = self.ptr(root.wrapping_add(fl.path_mnt), "fs_struct.root.mnt")?;
        let dentry = self.ptr(root.wrapping_add(fl.path_dentry), "fs_struct.root.dentry")?;
        if vfsmount == 0 || dentry == 0 {
            return Err(KernelError::BadPointer {
                what: "fs_struct.root",
                value: 0,
            });
        }
        let mounted = self.mounted_on(task, &fl, &vl)?;
        let mut at = Entry {
            mount: Va(vfsmount.wrapping_sub(fl.mount_mnt)),
            dentry: Va(dentry),
            inode: Va(0),
        };
        at = self.cross_mounts(at, &mounted, &fl)?;
        let parts: Vec<&[u8]> = path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        if parts.len() > MAX_WALK {
            return Err(KernelError::TooLong {
                what: "path components",
                max: MAX_WALK,
            });
        }
        let mut found: Vec<u8> = Vec::new();
        for part in parts {
            let inode = self.ptr(at.dentry.0.wrapping_add(vl.dentry_inode), "dentry.d_inode")?;
            if inode != 0 {
                let info =
                    self.inode_info(Va(inode), &OpenFileLayout::from_profile(&self.profile)?)?;
                if info.type_char() != 'd' {
                    return Ok(Lookup::NotDirectory { at: found });
                }
            }
            let mut child = None;
            self.children_of(at.dentry, &l, 1 << 20, |d| {
                if child.is_none() && self.dentry_name(d.0, &fl)? == part {
                    child = Some(d);
                }
                Ok(())
            })?;
            let Some(child) = child else {
                return Ok(Lookup::NotCached {
                    found,
                    missing: part.to_vec(),
                });
            };
            found.push(b'/');
            found.extend_from_slice(part);
            at = self.cross_mounts(
                Entry {
                    mount: at.mount,
                    dentry: child,
                    inode: Va(0),
                },
                &mounted,
                &fl,
            )?;
        }
        let inode = self.ptr(at.dentry.0.wrapping_add(vl.dentry_inode), "dentry.d_inode")?;
        if inode == 0 {
            return Ok(Lookup::Negative);
        }
        at.inode = Va(inode);
        Ok(Lookup::Found(at))
    }

    /// The cached entries of the directory `dir`, at most `max` (more is
    /// [`KernelError::TooLong`]), in the order the dcache links them.
    pub fn cached_children(&self, dir: &Entry, max: usize) -> Result<Vec<DirEntry>, KernelError> {
        let l = PageCacheLayout::from_profile(&self.profile)?;
        let fl = FileLayout::from_profile(&self.profile)?;
        let vl = VfsLayout::from_profile(&self.profile)?;
        let ol = OpenFileLayout::from_profile(&self.profile)?;
        let mut out = Vec::new();
        self.children_of(dir.dentry, &l, max, |d| {
            let name = self.dentry_name(d.0, &fl)?;
            let inode = self.ptr(d.0.wrapping_add(vl.dentry_inode), "dentry.d_inode")?;
            let (info, cached_pages) = if inode == 0 {
                (None, 0)
            } else {
                let mapping = self.ptr(inode.wrapping_add(vl.inode_mapping), "inode.i_mapping")?;
                let pages = if mapping == 0 {
                    0
                } else {
                    self.space
                        .read_u64(Va(mapping.wrapping_add(l.nrpages)))
                        .map_err(read_err("address_space.nrpages"))?
                };
                (Some(self.inode_info(Va(inode), &ol)?), pages)
            };
            out.push(DirEntry {
                name,
                dentry: d,
                inode: info,
                cached_pages,
            });
            Ok(())
        })?;
        Ok(out)
    }

    /// The data of the file whose inode is `inode` as the page cache holds it, at most
    /// `max` bytes.
    pub fn read_cached(&self, inode: Va, max: u64) -> Result<CachedFile, KernelError> {
        let l = PageCacheLayout::from_profile(&self.profile)?;
        let vl = VfsLayout::from_profile(&self.profile)?;
        let ol = OpenFileLayout::from_profile(&self.profile)?;
        let info = self.inode_info(inode, &ol)?;
        let size = u64::try_from(info.size).map_err(|_| KernelError::Corrupt {
            what: format!("inode.i_size {}", info.size),
            at: inode,
        })?;
        let len = size.min(max);
        let mut data = vec![0u8; usize::try_from(len).unwrap_or(0)];
        let mut missing: Vec<(u64, u64)> = Vec::new();
        let mut miss = |from: u64, to: u64| match missing.last_mut() {
            Some(last) if last.1 == from => last.1 = to,
            _ => missing.push((from, to)),
        };
        let mapping = self.ptr(inode.0.wrapping_add(vl.inode_mapping), "inode.i_mapping")?;
        let entries: BTreeMap<u64, u64> = if mapping == 0 || len == 0 {
            BTreeMap::new()
        } else {
            let head = self
                .space
                .read_u64(Va(mapping.wrapping_add(l.i_pages + l.xa_head)))
                .map_err(read_err("address_space.i_pages"))?;
            let limits = PidLimits {
                max_pids: MAX_CACHED_PAGES,
                max_nodes: MAX_CACHED_PAGES / 8,
            };
            xarray_entries(&self.space, head, &l.xa, &limits, "address_space.i_pages")?
                .0
                .into_iter()
                .collect()
        };
        let vmemmap = self
            .space
            .read_u64(self.symbol("vmemmap_base")?)
            .map_err(read_err("vmemmap_base"))?;
        for index in 0..len.div_ceil(PAGE) {
            let from = index * PAGE;
            let to = (from + PAGE).min(len);
            let frame = self.cached_frame(index, mapping, &entries, vmemmap, &l)?;
            let Some(frame) = frame else {
                miss(from, to);
                continue;
            };
            let buf = &mut data[from as usize..to as usize];
            if self
                .space
                .memory()
                .read_phys(Pa(frame * PAGE), buf)
                .is_err()
            {
                buf.fill(0);
                miss(from, to);
            }
        }
        Ok(CachedFile {
            size,
            data,
            missing,
            truncated: size > max,
        })
    }

    /// The frame holding page `index` of `mapping`, when it is resident.
    fn cached_frame(
        &self,
        index: u64,
        mapping: u64,
        entries: &BTreeMap<u64, u64>,
        vmemmap: u64,
        l: &PageCacheLayout,
    ) -> Result<Option<u64>, KernelError> {
        let frame_of = |page: u64| -> Option<u64> {
            let off = page.checked_sub(vmemmap)?;
            (off % l.page_size == 0).then_some(off / l.page_size)
        };
        let word =
            |at: u64, what: &'static str| self.space.read_u64(Va(at)).map_err(read_err(what));
        // the folio at or before `index`
        let Some((&first, &folio)) = entries.range(..=index).next_back() else {
            return Ok(None);
        };
        if !is_kernel_va(folio) || index - first >= MAX_FOLIO_PAGES {
            return Ok(None);
        }
        let Some(head) = frame_of(folio) else {
            return Ok(None);
        };
        if word(folio.wrapping_add(l.page_mapping), "page.mapping")? != mapping {
            return Ok(None);
        }
        if first == index {
            return Ok(Some(head));
        }
        // a tail page of that folio names it as its head
        let tail = folio.wrapping_add((index - first) * l.page_size);
        let named = word(tail.wrapping_add(l.page_head), "page.compound_head")?;
        // bit 0 marks a tail; the rest is the head's address, or (7.x's
        // `compound_info` with a power-of-two `struct page`) a mask that gives the head
        // from the tail's own address
        let names_it = named & 1 == 1 && (named - 1 == folio || tail & named == folio);
        Ok(names_it.then_some(head + (index - first)))
    }

    /// Call `f` with each child dentry of `dentry`, at most `max`.
    fn children_of(
        &self,
        dentry: Va,
        l: &PageCacheLayout,
        max: usize,
        mut f: impl FnMut(Va) -> Result<(), KernelError>,
    ) -> Result<usize, KernelError> {
        // a list ends at its head, an hlist at null
        let (head, node, list, what) = match l.children {
            ChildLinks::List { head, node } => (head, node, true, "dentry.d_subdirs"),
            ChildLinks::Hlist { head, node } => (head, node, false, "dentry.d_children"),
        };
        let at = dentry.0.wrapping_add(head);
        let first = self.space.read_u64(Va(at)).map_err(read_err(what))?;
        let end = if list { at } else { 0 };
        walk_chain(&self.space, first, end, 0, what, max, |n| {
            f(Va(n.0.wrapping_sub(node)))
        })
    }

    /// The mounts of `task`'s mount namespace by (parent mount, mount point dentry),
    /// the last mounted on top.
    fn mounted_on(
        &self,
        task: Va,
        fl: &FileLayout,
        vl: &VfsLayout,
    ) -> Result<HashMap<(u64, u64), u64>, KernelError> {
        let nsproxy = self.ptr(task.0.wrapping_add(vl.task_nsproxy), "task_struct.nsproxy")?;
        let mut out = HashMap::new();
        if nsproxy == 0 {
            return Ok(out);
        }
        let ns = self.ptr(nsproxy.wrapping_add(vl.nsproxy_mnt_ns), "nsproxy.mnt_ns")?;
        if ns == 0 {
            return Ok(out);
        }
        for m in self.mounts(Va(ns), MAX_MOUNTS)? {
            let parent = self.ptr(m.0.wrapping_add(fl.mount_parent), "mount.mnt_parent")?;
            let point = self.ptr(
                m.0.wrapping_add(fl.mount_mountpoint),
                "mount.mnt_mountpoint",
            )?;
            if parent != m.0 && parent != 0 {
                out.insert((parent, point), m.0);
            }
        }
        Ok(out)
    }

    /// `at`, or the root of what is mounted on it (on top), across stacked mounts.
    fn cross_mounts(
        &self,
        mut at: Entry,
        mounted: &HashMap<(u64, u64), u64>,
        fl: &FileLayout,
    ) -> Result<Entry, KernelError> {
        let mut seen = HashSet::new();
        while let Some(&child) = mounted.get(&(at.mount.0, at.dentry.0)) {
            if !seen.insert(child) || seen.len() > MAX_WALK {
                return Err(KernelError::Cycle {
                    what: "mounts stacked on a dentry",
                    at: Va(child),
                    after: seen.len(),
                });
            }
            let root = self.ptr(
                child.wrapping_add(fl.mount_mnt + fl.vfsmount_root),
                "vfsmount.mnt_root",
            )?;
            at = Entry {
                mount: Va(child),
                dentry: Va(root),
                inode: Va(0),
            };
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{PageState, SynthTask, SyntheticKernel};
    use PageState::{Head, Missing, Tail};

    fn content(pages: usize) -> Vec<u8> {
        (0..pages * 4096 - 100)
            .map(|i| (i / 4096) as u8 + b'a')
            .collect()
    }

    fn kernel_with(
        path: &[u8],
        data: &[u8],
        pages: &[PageState],
    ) -> (SyntheticKernel, SynthTask, Va) {
        let mut sk = SyntheticKernel::clean();
        let t = sk.add_process(1, b"init", 0);
        sk.set_fs_root(&t);
        let inode = sk.cache_file(path, data, pages);
        (sk, t, inode)
    }

    #[test]
    fn a_cached_file_is_found_and_read_with_its_holes_said() {
        let data = content(5);
        let (mut sk, t, inode) = kernel_with(
            b"/etc/ld.so.preload",
            &data,
            &[Head, Missing, Head, Tail, Tail],
        );
        sk.dentry(b"/etc/cron.d");
        let etc = sk.dentry(b"/etc");
        let dir = sk.alloc_type("inode");
        sk.set(dir, "inode", "i_mode", 0o040_755);
        sk.set(etc, "dentry", "d_inode", dir.0);
        let k = sk.discover().unwrap();
        let found = k.lookup_cached(t.task, b"/etc//./ld.so.preload").unwrap();
        let Lookup::Found(e) = found else {
            panic!("{found:?}");
        };
        assert_eq!(e.inode, inode);
        let f = k.read_cached(e.inode, 1 << 20).unwrap();
        assert_eq!(f.size, data.len() as u64);
        assert!(!f.truncated);
        assert_eq!(f.missing, vec![(4096, 8192)]);
        assert_eq!(&f.data[..4096], &data[..4096]);
        assert!(f.data[4096..8192].iter().all(|&b| b == 0));
        // a large folio's tail pages are resident through their head
        assert_eq!(&f.data[8192..], &data[8192..]);
        // the directory lists what the dcache holds
        let Lookup::Found(etc) = k.lookup_cached(t.task, b"/etc").unwrap() else {
            panic!("no /etc");
        };
        let names: Vec<(Vec<u8>, u64)> = k
            .cached_children(&etc, 100)
            .unwrap()
            .into_iter()
            .map(|d| (d.name, d.cached_pages))
            .collect();
        assert_eq!(
            names,
            vec![(b"ld.so.preload".to_vec(), 4), (b"cron.d".to_vec(), 0)]
        );
        assert_eq!(
            k.lookup_cached(t.task, b"/etc/shadow").unwrap(),
            Lookup::NotCached {
                found: b"/etc".to_vec(),
                missing: b"shadow".to_vec()
            }
        );
        assert!(matches!(
            k.lookup_cached(t.task, b"/etc/cron.d").unwrap(),
            Lookup::Negative
        ));
        assert_eq!(
            k.lookup_cached(t.task, b"/etc/ld.so.preload/x").unwrap(),
            Lookup::NotDirectory {
                at: b"/etc/ld.so.preload".to_vec()
            }
        );
    }

    #[test]
    fn reads_stop_at_the_cap_and_a_huge_size_allocates_nothing_more() {
        let data = content(3);
        let (sk, _, inode) = kernel_with(b"/root/.ssh/authorized_keys", &data, &[Head, Head, Head]);
        let k = sk.discover().unwrap();
        let f = k.read_cached(inode, 5000).unwrap();
        assert!(f.truncated);
        assert_eq!(f.data, data[..5000].to_vec());
        assert!(f.missing.is_empty());
        // i_size 2^62: read up to the cap, the pages beyond the file's three missing
        let (mut sk, _, inode) = kernel_with(b"/x", &data, &[Head, Head, Head]);
        sk.set(inode, "inode", "i_size", 1 << 62);
        let k = sk.discover().unwrap();
        let f = k.read_cached(inode, 5 * 4096).unwrap();
        assert_eq!(
            (f.data.len(), f.missing.clone()),
            (5 * 4096, vec![(3 * 4096, 5 * 4096)])
        );
        // a negative size is corrupt
        let (mut sk, _, inode) = kernel_with(b"/x", &data, &[Head]);
        sk.set(inode, "inode", "i_size", u64::MAX);
        let k = sk.discover().unwrap();
        assert!(matches!(
            k.read_cached(inode, 4096),
            Err(KernelError::Corrupt { .. })
        ));
    }

    #[test]
    fn pages_that_are_not_the_files_are_not_read_as_its() {
        let data = content(3);
        let (sk, _, inode) = kernel_with(b"/x", &data, &[Head, Tail, Head]);
        let k = sk.discover().unwrap();
        assert!(k.read_cached(inode, 1 << 20).unwrap().missing.is_empty());
        // the tail names another head; the third page's folio another mapping
        let (mut sk, _, inode) = kernel_with(b"/x", &data, &[Head, Tail, Head]);
        let pages = page_structs(&sk, inode);
        sk.set(Va(pages[1]), "page", "compound_head", 0x1234 + 1);
        sk.set(Va(pages[2]), "page", "mapping", 0xffff_8880_dead_0000);
        let k = sk.discover().unwrap();
        let f = k.read_cached(inode, 1 << 20).unwrap();
        assert_eq!(f.missing, vec![(4096, data.len() as u64)]);
    }

    /// The `struct page` of each page of `inode`'s file (heads from the XArray, tails
    /// after them).
    fn page_structs(sk: &SyntheticKernel, inode: Va) -> Vec<u64> {
        let mapping = sk.get(inode, "inode", "i_mapping");
        let head = sk.read_u64(Va(mapping
            + sk.offset("address_space", "i_pages")
            + sk.offset("xarray", "xa_head")));
        let slots = sk.offset("xa_node", "slots");
        let leaf = sk.read_u64(Va(head - 2 + slots));
        let first = sk.read_u64(Va(leaf - 2 + slots));
        let psize = sk.size_of("page");
        (0..3).map(|i| first + i * psize).collect()
    }

    #[test]
    fn a_looping_directory_is_a_cycle_not_a_hang() {
        let data = content(1);
        let (mut sk, t, _) = kernel_with(b"/etc/passwd", &data, &[Head]);
        let etc = sk.dentry(b"/etc");
        let passwd = sk.dentry(b"/etc/passwd");
        let other = sk.dentry(b"/etc/group");
        // group's next points back at passwd: a loop that never reaches the head
        let child = sk.offset("dentry", "d_child");
        sk.write_u64(Va(other.0 + child), passwd.0 + child);
        let _ = etc;
        let k = sk.discover().unwrap();
        let r = k.lookup_cached(t.task, b"/etc/shadow");
        assert!(matches!(r, Err(KernelError::Cycle { .. })), "{r:?}");
    }
}
