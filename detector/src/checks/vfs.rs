//! `vfs-ops`: the operation tables of mounted file systems and open files must be the
//! kernel's (or those of the module that implements the file system).
//!
//! Every file operation goes through a table: a file's `f_op`, an inode's `i_op` and
//! `i_fop`, a dentry's `d_op`, a super block's `s_op`, a mapping's `a_ops`. Rootkits
//! hide files and processes by pointing one of these at a copy whose `iterate_shared`
//! (`readdir`) or `lookup` filters entries (adore-ng points the `/proc` root inode's
//! `i_fop` at its own copy of `proc_root_operations`), or by replacing a member of the
//! kernel's table: Volatility 2's `linux_check_fop`. Read: the root of every mount of
//! every mount namespace and every process's open files ([`vmi_core::kernel::vfs`]).
//!
//! Each table with something wrong is one finding, naming the places that use it
//! (mount or file, and the pointer: `i_fop`, ...):
//! - the table lies outside kernel text and read-only data, and not in the listed
//!   module that implements the file system (`file_system_type.owner`) or owns the
//!   file operations (`file_operations.owner`): a copy (the owner named);
//! - members point outside kernel text and that module (each named);
//! - a procfs root whose `i_fop` or `i_op` is not the kernel's `proc_root_operations`
//!   or `proc_root_inode_operations`.
//!
//! Severity as the other hook checks: medium when everything foreign is a listed
//! module's, high otherwise, and high for a procfs root on another table.
//!
//! One table outside the kernel is the kernel's own: debugfs (before 6.13) gives each
//! open file a `file_operations` it allocates (`debugfs_full_proxy_open`) whose members
//! are all its `full_proxy_*` functions. A heap table used only as `f_op` of open
//! debugfs files, every member a `full_proxy_*` function at its entry, is not
//! reported (the functions it forwards to are the file's own table, not read here).

use std::collections::{BTreeMap, BTreeSet};

use vmi_core::kernel::syscalls::TextRange;
use vmi_core::kernel::vfs::{FsInfo, Slot, PROC_ROOT};
use vmi_core::kernel::Process;
use vmi_core::memory::PhysicalMemory;
use vmi_core::Va;

use crate::checks::{needed, reread, CheckFailure, Owner, Scan, READ_TRIES};
use crate::finding::{guest_str, Finding, Severity};

const NAME: &str = "vfs-ops";
/// Places named in a finding's summary and evidence (the count says how many more).
const NAMED: usize = 4;

/// Where a table is used.
#[derive(Debug, Clone)]
enum Place {
    /// The root of a mount.
    Mount { mount: Va, fs: String },
    /// An open file of a process.
    File {
        pid: u32,
        comm: String,
        fd: u32,
        file: Va,
    },
}

/// One use of a table.
#[derive(Debug, Clone)]
struct Use {
    place: Place,
    slot: Slot,
    /// The listed module implementing the file system, whose tables these may be.
    module: Option<String>,
    /// The kernel table this pointer must be.
    expect: Option<(&'static str, Va)>,
    /// The file system's type (`proc`, `debugfs`, ...; guest bytes).
    fs_type: Option<Vec<u8>>,
}

/// Run the check.
pub fn run<M: PhysicalMemory>(scan: &Scan<'_, M>) -> Result<Vec<Finding>, CheckFailure> {
    let kernel = scan.kernel;
    let text = kernel.text_range()?;
    let rodata = TextRange {
        start: kernel.symbol("__start_rodata")?,
        end: kernel.symbol("__end_rodata")?,
    };
    let processes = scan.processes()?;
    let modules = needed(&scan.modules, "the modules list")?;
    let module_name = |m: Va| -> Option<String> {
        modules
            .modules
            .iter()
            .find(|x| x.addr == m && m.0 != 0)
            .map(|x| x.display_name())
    };
    let proc_root: Vec<(Slot, &'static str, Va)> = PROC_ROOT
        .iter()
        .filter_map(|&(slot, sym)| kernel.symbol(sym).ok().map(|at| (slot, sym, at)))
        .collect();

    // every table, by (type, address), with its uses
    let mut tables: BTreeMap<(&'static str, Va), Vec<Use>> = BTreeMap::new();
    let mut add = |slot: Slot, at: Va, u: Use| {
        tables.entry((slot.table_type(), at)).or_default().push(u);
    };
    let tasks: Vec<Va> = processes.iter().map(|p| p.task).collect();
    let namespaces = kernel.mount_namespaces(&tasks)?;
    for m in kernel.mount_ops(&namespaces)? {
        let is_proc = m.fs.fs_type == b"proc";
        for &(slot, at) in &m.ops {
            let expect = proc_root
                .iter()
                .find(|(s, _, _)| is_proc && *s == slot)
                .map(|&(_, sym, addr)| (sym, addr));
            add(
                slot,
                at,
                Use {
                    place: Place::Mount {
                        mount: m.mount,
                        fs: guest_str(&m.fs.fs_type),
                    },
                    slot,
                    module: module_name(m.fs.owner),
                    expect,
                    fs_type: Some(m.fs.fs_type.clone()),
                },
            );
        }
    }
    let mut walk = kernel.file_walk()?;
    for p in processes {
        let files = reread(kernel, READ_TRIES, || {
            kernel.open_file_ops(&mut walk, p.task)
        })?;
        for f in files {
            let module = f.fs.as_ref().and_then(|fs: &FsInfo| module_name(fs.owner));
            let fs_type = f.fs.as_ref().map(|fs| fs.fs_type.clone());
            for &(slot, at) in &f.ops {
                add(
                    slot,
                    at,
                    Use {
                        place: file_place(p, f.fd, f.file),
                        slot,
                        module: module.clone(),
                        expect: None,
                        fs_type: fs_type.clone(),
                    },
                );
            }
        }
    }

    let mut findings = Vec::new();
    for ((ty, at), uses) in &tables {
        if let Some(f) = judge(scan, ty, *at, uses, text, rodata, &module_name)? {
            findings.push(f);
        }
    }
    Ok(findings)
}

fn file_place(p: &Process, fd: u32, file: Va) -> Place {
    Place::File {
        pid: p.pid,
        comm: p.name(),
        fd,
        file,
    }
}

/// The finding for the table of type `ty` at `at` with its `uses`, if any.
fn judge<M: PhysicalMemory>(
    scan: &Scan<'_, M>,
    ty: &str,
    at: Va,
    uses: &[Use],
    text: TextRange,
    rodata: TextRange,
    module_name: &dyn Fn(Va) -> Option<String>,
) -> Result<Option<Finding>, CheckFailure> {
    let kernel = scan.kernel;
    // the listed modules whose tables these may be: the file system's, and for file
    // operations the module that says it owns them
    let mut allowed: BTreeSet<String> = uses.iter().filter_map(|u| u.module.clone()).collect();
    let location = scan.owners.owner(at);
    let in_kernel = text.contains(at) || rodata.contains(at);
    if !in_kernel && ty == Slot::FOp.table_type() {
        if let (
            Owner::Module {
                name,
                hidden: false,
            },
            Some(owner),
        ) = (&location, module_name(kernel.fops_owner(at)?))
        {
            if *name == owner {
                allowed.insert(owner);
            }
        }
    }
    let allowed_owner =
        |o: &Owner| matches!(o, Owner::Module { name, hidden: false } if allowed.contains(name));
    let misplaced = !in_kernel && !allowed_owner(&location);
    let table = kernel.ops_table(ty, at)?;
    let foreign: Vec<(&str, Va, Owner)> = table
        .fns
        .iter()
        .filter(|(_, v)| !scan.owners.in_text(*v))
        .map(|(n, v)| (n.as_str(), *v, scan.owners.owner(*v)))
        .filter(|(_, _, o)| !allowed_owner(o))
        .collect();
    let mismatched: Vec<&(&str, Va)> = uses
        .iter()
        .filter_map(|u| u.expect.as_ref())
        .filter(|(_, want)| *want != at)
        .collect();
    if !misplaced && foreign.is_empty() && mismatched.is_empty() {
        return Ok(None);
    }
    if misplaced
        && location == Owner::Unknown
        && foreign.is_empty()
        && mismatched.is_empty()
        && ty == Slot::FOp.table_type()
    {
        let names: Vec<Option<String>> = table
            .fns
            .iter()
            .map(|(_, v)| scan.function_name(*v))
            .collect();
        if debugfs_proxy(uses, &names) {
            return Ok(None);
        }
    }

    let slots: BTreeSet<&str> = uses.iter().map(|u| u.slot.name()).collect();
    let slots: Vec<&str> = slots.into_iter().collect();
    let mut labels = Vec::new();
    for u in uses.iter().take(NAMED) {
        labels.push(format!(
            "{} of {}",
            u.slot.name(),
            place_label(scan, &u.place)?
        ));
    }
    let mut used_by = labels.join("; ");
    if uses.len() > NAMED {
        used_by.push_str(&format!(" and {} more", uses.len() - NAMED));
    }
    let owner = if misplaced {
        location.clone()
    } else {
        foreign
            .first()
            .map(|(_, _, o)| o.clone())
            .unwrap_or(Owner::KernelText)
    };
    let mut severity = if misplaced {
        location.hook_severity()
    } else {
        Severity::Low
    };
    for (_, _, o) in &foreign {
        severity = severity.max(o.hook_severity());
    }
    if !mismatched.is_empty() {
        severity = Severity::High;
    }
    let members: Vec<&str> = foreign.iter().map(|(n, _, _)| *n).collect();

    let mut what = Vec::new();
    if misplaced {
        what.push(format!("lies in {location}, not kernel read-only data"));
    }
    if let Some((sym, want)) = mismatched.first() {
        what.push(format!("is not the kernel's {sym} at {:#x}", want.0));
    }
    if let Some((_, target, o)) = foreign.first() {
        what.push(format!(
            "{} calls {:#x} in {o}, not kernel text",
            members.join(", "),
            target.0
        ));
    }
    let mut f = Finding::new(
        NAME,
        severity,
        format!("{NAME}:{ty}:{:#x}:{}", at.0, members.join(",")),
        format!(
            "the {ty} at {:#x} ({used_by}) {}: file operations can hide files and processes",
            at.0,
            what.join("; ")
        ),
    )
    .addr("table", at.0)
    .text("type", ty)
    .text("pointer", slots.join(","))
    .text("used_by", used_by)
    .num("uses", uses.len() as u64)
    .text(
        "location",
        if rodata.contains(at) {
            "kernel read-only data".to_string()
        } else {
            location.to_string()
        },
    )
    .text("owner", owner.to_string());
    if let Some((sym, want)) = mismatched.first() {
        f = f.text("expected", *sym).addr("expected_table", want.0);
    }
    if let Some((first, target, _)) = foreign.first() {
        f = f
            .text("members", members.join(","))
            .text("member", *first)
            .addr("target", target.0);
        if foreign.len() > 1 {
            let all: Vec<String> = foreign
                .iter()
                .map(|(n, v, _)| format!("{n}={:#x}", v.0))
                .collect();
            f = f.text("targets", all.join(", "));
        }
    }
    if let Some(Use {
        place: Place::Mount { fs, .. },
        ..
    }) = uses.first()
    {
        f = f.text("fs_type", fs.clone());
    }
    Ok(Some(f))
}

/// True for debugfs's own proxy table: used only as `f_op` of open files on debugfs,
/// with members (named `names`, in kernel text) that are all `full_proxy_*` functions
/// at their entry.
fn debugfs_proxy(uses: &[Use], names: &[Option<String>]) -> bool {
    !uses.is_empty()
        && uses.iter().all(|u| {
            matches!(u.place, Place::File { .. })
                && u.slot == Slot::FOp
                && u.fs_type.as_deref() == Some(b"debugfs".as_slice())
        })
        && !names.is_empty()
        && names.iter().all(|n| {
            n.as_deref()
                .and_then(|n| n.strip_suffix("+0x0"))
                .is_some_and(|f| f.starts_with("full_proxy_"))
        })
}

/// A place as a reader wants it: the mount point of a mount, the path of a file.
fn place_label<M: PhysicalMemory>(
    scan: &Scan<'_, M>,
    place: &Place,
) -> Result<String, CheckFailure> {
    Ok(match place {
        Place::Mount { mount, fs } => {
            let path = scan.kernel.mount_path(*mount)?;
            format!("the root of {fs} at {}", guest_str(&path))
        }
        Place::File {
            pid,
            comm,
            fd,
            file,
        } => {
            let path = scan
                .kernel
                .file_path(file.0)
                .ok()
                .flatten()
                .map(|p| guest_str(&p))
                .unwrap_or_else(|| "(no path)".into());
            format!("fd {fd} of pid {pid} ({comm}), {path}")
        }
    })
}

#[cfg(test)]
mod tests {
    use vmi_core::Va;

    use crate::checks::synthetic::{assert_fails, ev, ev_addr, run, single, system};
    use crate::checks::{Check, CheckFailure};
    use crate::finding::Severity;

    const CHECK: Check = Check::VfsOps;

    #[test]
    fn clean_with_open_files() {
        let mut s = system();
        let f = s.sk.new_file(b"/var/log/syslog");
        let fops = s.sk.symbol("simple_dir_operations");
        s.sk.set(f, "file", "f_op", fops.0);
        let sshd = s.sshd;
        s.sk.open_fd(&sshd, 3, f);
        assert!(run(s.sk, CHECK).is_empty());
    }

    #[test]
    fn a_proc_root_on_a_module_s_copy_is_found() {
        // adore-ng: /proc's root inode on a copy of proc_root_operations in a module,
        // its iterate_shared the module's
        let mut s = system();
        let rk = s.sk.add_module(b"adore", 0x2000);
        let copy = rk.code(0x1000);
        let kernel = s.sk.symbol("proc_root_operations");
        s.sk.copy_table(kernel, copy, "file_operations");
        let filter = rk.code(0x40);
        s.sk.set(copy, "file_operations", "iterate_shared", filter.0);
        let inode = s.sk.mount_root_inode(b"/proc");
        s.sk.set(inode, "inode", "i_fop", copy.0);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(
            f.key,
            format!("vfs-ops:file_operations:{:#x}:iterate_shared", copy.0)
        );
        assert_eq!(ev(f, "pointer"), "i_fop");
        assert_eq!(ev(f, "used_by"), "i_fop of the root of proc at /proc");
        assert_eq!(ev(f, "location"), "module adore");
        assert_eq!(ev(f, "owner"), "module adore");
        assert_eq!(ev(f, "expected"), "proc_root_operations");
        assert_eq!(ev(f, "members"), "iterate_shared");
        assert_eq!(ev_addr(f, "target"), filter.0);
        assert_eq!(ev_addr(f, "expected_table"), kernel.0);
    }

    #[test]
    fn a_kernel_table_with_a_member_in_a_hidden_module_is_found() {
        // a table in .rodata (simple_dir_operations, the root file system's and an
        // open file's) whose llseek was rewritten
        let mut s = system();
        let f = s.sk.new_file(b"/etc");
        let table = s.sk.symbol("simple_dir_operations");
        s.sk.set(f, "file", "f_op", table.0);
        let bash = s.bash;
        s.sk.open_fd(&bash, 5, f);
        let rk = s.sk.add_module(b"rk", 0x1000);
        s.sk.hide_module(&rk);
        s.sk.set(table, "file_operations", "llseek", rk.code(0x10).0);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::High);
        assert_eq!(ev(f, "location"), "kernel read-only data");
        assert_eq!(ev(f, "owner"), "hidden module rk");
        assert_eq!(ev(f, "members"), "llseek");
        assert_eq!(ev(f, "pointer"), "f_op,i_fop");
        assert_eq!(
            ev(f, "used_by"),
            "i_fop of the root of rootfs at /; f_op of fd 5 of pid 1000 (bash), /etc"
        );
    }

    #[test]
    fn a_module_s_own_file_system_is_clean_a_listed_module_s_hook_medium() {
        // a file system implemented by e1000 (its owner) on tables of its own
        let mut s = system();
        let sops = s.sk.symbol("ramfs_ops");
        let own = s.e1000.code(0x1000);
        s.sk.copy_table(sops, own, "super_operations");
        s.sk.set(own, "super_operations", "statfs", s.e1000.code(0x20).0);
        let m =
            s.sk.add_mount(b"/mnt", b"e1000fs", (own, Va(0), Va(0), Va(0)));
        let sb = {
            let mnt = s.sk.field_va(m, "mount", "mnt");
            Va(s.sk.get(mnt, "vfsmount", "mnt_sb"))
        };
        let fs_type = Va(s.sk.get(sb, "super_block", "s_type"));
        s.sk.set(fs_type, "file_system_type", "owner", s.e1000.addr.0);
        assert!(run(s.sk.clone(), CHECK).is_empty());
        // the same tables on a file system the module does not own
        s.sk.set(fs_type, "file_system_type", "owner", 0);
        let findings = run(s.sk, CHECK);
        let f = single(&findings, CHECK, Severity::Medium);
        assert_eq!(ev(f, "location"), "module e1000");
        assert_eq!(ev(f, "fs_type"), "e1000fs");
        assert_eq!(ev(f, "used_by"), "s_op of the root of e1000fs at /mnt");
    }

    #[test]
    fn a_wild_table_pointer_is_an_error() {
        let mut s = system();
        let inode = s.sk.mount_root_inode(b"/proc");
        s.sk.set(inode, "inode", "i_op", 0x4141_4141);
        assert_fails!(
            s.sk,
            CHECK,
            CheckFailure::Kernel(vmi_core::kernel::KernelError::BadPointer { .. })
        );
        // a kernel address where nothing is mapped
        let mut s = system();
        let inode = s.sk.mount_root_inode(b"/proc");
        s.sk.set(inode, "inode", "i_op", 0xffff_ffff_ff00_0000);
        assert_fails!(
            s.sk,
            CHECK,
            CheckFailure::Kernel(vmi_core::kernel::KernelError::Read { .. })
        );
    }

    #[test]
    fn a_cycle_in_the_mount_list_is_an_error() {
        let mut s = system();
        // /proc's mount links back to the root mount, not to the namespace
        let proc = s.sk.mount(b"/proc");
        let root = s.sk.mount(b"/");
        let root_link = s.sk.field_va(root, "mount", "mnt_list");
        s.sk.set(proc, "mount", "mnt_list", root_link.0);
        assert_fails!(
            s.sk,
            CHECK,
            CheckFailure::Kernel(vmi_core::kernel::KernelError::Cycle { .. })
        );
    }

    #[test]
    fn debugfs_s_own_proxy_table_only() {
        use super::{debugfs_proxy, Place, Slot, Use};
        let file = |fs: &[u8], slot: Slot| Use {
            place: Place::File {
                pid: 127,
                comm: "sleep".into(),
                fd: 0,
                file: Va(0xffff_8880_0100_0000),
            },
            slot,
            module: None,
            expect: None,
            fs_type: Some(fs.to_vec()),
        };
        let proxy = |n: &[&str]| n.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>();
        let members = proxy(&["full_proxy_read+0x0", "full_proxy_release+0x0"]);
        assert!(debugfs_proxy(&[file(b"debugfs", Slot::FOp)], &members));
        // not debugfs, not a file's f_op, not only proxy functions, not at their entry,
        // a member without a name, no members, no uses
        assert!(!debugfs_proxy(&[file(b"proc", Slot::FOp)], &members));
        assert!(!debugfs_proxy(&[file(b"debugfs", Slot::IFop)], &members));
        assert!(!debugfs_proxy(
            &[file(b"debugfs", Slot::FOp), file(b"proc", Slot::FOp)],
            &members
        ));
        assert!(!debugfs_proxy(
            &[file(b"debugfs", Slot::FOp)],
            &proxy(&["full_proxy_read+0x0", "proc_root_readdir+0x0"])
        ));
        assert!(!debugfs_proxy(
            &[file(b"debugfs", Slot::FOp)],
            &proxy(&["full_proxy_read+0x10"])
        ));
        assert!(!debugfs_proxy(
            &[file(b"debugfs", Slot::FOp)],
            &[Some("full_proxy_read+0x0".into()), None]
        ));
        assert!(!debugfs_proxy(&[file(b"debugfs", Slot::FOp)], &[]));
        assert!(!debugfs_proxy(&[], &members));
    }
}
