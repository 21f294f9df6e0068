//! TTY line disciplines and drivers: the operation tables every terminal's input and
//! output goes through.
//!
//! `tty_register_ldisc` puts a `struct tty_ldisc_ops` into `tty_ldiscs[NR_LDISCS]`
//! (`N_TTY` is 0); a tty's `ldisc->ops` is one of them, and its `receive_buf`/
//! `receive_buf2` sees every byte typed (what TTY keyloggers hook). Every registered
//! `struct tty_driver` is on the `tty_drivers` list (its `tty_drivers` member) with
//! its `struct tty_operations` (`ops`) and, for drivers that keep them, `ttys[num]`,
//! the open ttys. The function-pointer members of the tables are every `ptr fn` member
//! the profile describes ([`FnTable`]).
//!
//! Fields used: `tty_ldisc_ops.name`, `tty_driver.tty_drivers`, `.name`,
//! `.driver_name`, `.ops`, `.num`, `.ttys`, `tty_struct.ldisc`, `.name`,
//! `tty_ldisc.ops`, and the `ptr fn` members of `tty_ldisc_ops` and `tty_operations`.
//! Symbols: `tty_ldiscs`, `tty_drivers`.
//!
//! Bounds: [`NR_LDISCS`] disciplines, at most [`MAX_DRIVERS`] drivers and
//! [`MAX_LINES`] lines (`ttys` entries) in all; a driver seen twice is a
//! [`KernelError::Cycle`].

use crate::addr::Va;
use crate::kernel::objects::{
    fn_fields, is_kernel_va, name_at, read_err, read_fn_table, u32_at, u64_at, walk_list, FnTable,
};
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// `NR_LDISCS` (30 since 2.6).
pub const NR_LDISCS: u64 = 30;
/// Most tty drivers walked.
pub const MAX_DRIVERS: usize = 1 << 12;
/// Most lines (`ttys` entries) read, every driver together (a Debian guest has about
/// 100).
pub const MAX_LINES: u32 = 1 << 16;
/// Longest name read.
const MAX_NAME: usize = 64;

/// A registered line discipline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ldisc {
    /// Its number (`N_TTY` is 0).
    pub num: u32,
    /// `name` (guest bytes).
    pub name: Vec<u8>,
    /// Its `struct tty_ldisc_ops`.
    pub ops: FnTable,
}

/// An open tty of a driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tty {
    /// The `struct tty_struct`.
    pub at: Va,
    /// `name` (guest bytes, e.g. `ttyS0`).
    pub name: Vec<u8>,
    /// `ldisc->ops`: the line discipline it uses (0 while it has none).
    pub ldisc_ops: Va,
}

/// A registered tty driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtyDriver {
    /// The `struct tty_driver`.
    pub at: Va,
    /// `name` (guest bytes, the device name base, e.g. `ttyS`).
    pub name: Vec<u8>,
    /// `driver_name` (guest bytes, e.g. `serial`).
    pub driver_name: Vec<u8>,
    /// Its `struct tty_operations` (`None` for a null `ops`).
    pub ops: Option<FnTable>,
    /// Its open ttys.
    pub ttys: Vec<Tty>,
}

crate::kernel_layout! {
    /// Offsets of the line-discipline and driver walks.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct TtyLayout(p) {
        /// `tty_ldisc_ops.name`
        pub ldisc_name: u64 = "tty_ldisc_ops" ["name"],
        /// `tty_driver.tty_drivers` (on `tty_drivers`)
        pub driver_list: u64 = "tty_driver" ["tty_drivers"],
        /// `tty_driver.name`
        pub driver_name: u64 = "tty_driver" ["name"],
        /// `tty_driver.driver_name`
        pub driver_driver_name: u64 = "tty_driver" ["driver_name"],
        /// `tty_driver.ops`
        pub driver_ops: u64 = "tty_driver" ["ops"],
        /// `tty_driver.num`
        pub driver_num: u64 = "tty_driver" ["num"],
        /// `tty_driver.ttys`
        pub driver_ttys: u64 = "tty_driver" ["ttys"],
        /// `tty_struct.name`
        pub tty_name: u64 = "tty_struct" ["name"],
        /// `tty_struct.ldisc`
        pub tty_ldisc: u64 = "tty_struct" ["ldisc"],
        /// `tty_ldisc.ops`
        pub ldisc_ops: u64 = "tty_ldisc" ["ops"],
    }
    // the operation tables are read as every `ptr fn` member the profile has
    // (`fn_fields`): these at least
    also [
        "tty_ldisc_ops" ["open"],
        "tty_ldisc_ops" ["close"],
        "tty_ldisc_ops" ["read"],
        "tty_ldisc_ops" ["write"],
        "tty_ldisc_ops" ["ioctl"],
        "tty_ldisc_ops" ["receive_buf"],
        "tty_ldisc_ops" ["receive_buf2"],
        "tty_operations" ["open"],
        "tty_operations" ["close"],
        "tty_operations" ["write"],
        "tty_operations" ["ioctl"],
        "tty_operations" ["set_termios"],
    ]
    symbols [
        ["tty_ldiscs"],
        ["tty_drivers"],
    ]
}

impl<M: PhysicalMemory> Kernel<M> {
    /// Every registered line discipline in `tty_ldiscs`.
    pub fn tty_ldiscs(&self) -> Result<Vec<Ldisc>, KernelError> {
        let fields = fn_fields(&self.profile, "tty_ldisc_ops")?;
        let name = TtyLayout::from_profile(&self.profile)?.ldisc_name;
        let table = self.symbol("tty_ldiscs")?;
        let ptrs = self
            .space
            .read_bytes(table, NR_LDISCS as usize * 8)
            .map_err(read_err("tty_ldiscs"))?;
        let mut out = Vec::new();
        for num in 0..NR_LDISCS {
            let at = u64_at(&ptrs, num * 8);
            if at == 0 {
                continue;
            }
            let ops = read_fn_table(&self.space, &fields, Va(at), "tty_ldiscs entry")?;
            let name_ptr = self
                .space
                .read_u64(Va(at.wrapping_add(name)))
                .map_err(read_err("tty_ldisc_ops.name"))?;
            out.push(Ldisc {
                num: num as u32,
                name: name_at(&self.space, name_ptr, MAX_NAME),
                ops,
            });
        }
        Ok(out)
    }

    /// The `struct tty_ldisc_ops` at `at` (one a tty uses that is not registered).
    pub fn tty_ldisc_ops(&self, at: Va) -> Result<FnTable, KernelError> {
        let fields = fn_fields(&self.profile, "tty_ldisc_ops")?;
        read_fn_table(&self.space, &fields, at, "tty_ldisc.ops")
    }

    /// Every driver on `tty_drivers`, with its operations and open ttys.
    pub fn tty_drivers(&self) -> Result<Vec<TtyDriver>, KernelError> {
        let p = &self.profile;
        let fields = fn_fields(p, "tty_operations")?;
        let l = TtyLayout::from_profile(p)?;
        let (list, name, driver_name, ops, num, ttys) = (
            l.driver_list,
            l.driver_name,
            l.driver_driver_name,
            l.driver_ops,
            l.driver_num,
            l.driver_ttys,
        );
        let (tty_name, tty_ldisc, ldisc_ops) = (l.tty_name, l.tty_ldisc, l.ldisc_ops);
        let span = [name, driver_name, ops, ttys]
            .into_iter()
            .max()
            .unwrap_or(0)
            + 8;
        let span = span.max(num + 4) as usize;
        let mem = &self.space;
        let mut out = Vec::new();
        let mut budget = MAX_LINES;
        walk_list(
            mem,
            self.symbol("tty_drivers")?,
            "tty_drivers",
            MAX_DRIVERS,
            |node| {
                let at = Va(node.0.wrapping_sub(list));
                let b = mem
                    .read_bytes(at, span)
                    .map_err(read_err("struct tty_driver"))?;
                let ops_at = u64_at(&b, ops);
                let table = if ops_at == 0 {
                    None
                } else {
                    Some(read_fn_table(mem, &fields, Va(ops_at), "tty_driver.ops")?)
                };
                let lines = u32_at(&b, num);
                let ttys_at = u64_at(&b, ttys);
                let mut open = Vec::new();
                if ttys_at != 0 {
                    if lines > budget || !is_kernel_va(ttys_at) {
                        return Err(KernelError::Corrupt {
                            what: format!(
                                "tty_driver with {lines} lines (at most {MAX_LINES} for all drivers) at ttys {ttys_at:#x}"
                            ),
                            at,
                        });
                    }
                    budget -= lines;
                    let ptrs = mem
                        .read_bytes(Va(ttys_at), lines as usize * 8)
                        .map_err(read_err("tty_driver.ttys"))?;
                    for i in 0..u64::from(lines) {
                        let tty = u64_at(&ptrs, i * 8);
                        if tty == 0 {
                            continue;
                        }
                        if !is_kernel_va(tty) {
                            return Err(KernelError::BadPointer {
                                what: "tty_driver.ttys entry",
                                value: tty,
                            });
                        }
                        let ld = mem
                            .read_u64(Va(tty.wrapping_add(tty_ldisc)))
                            .map_err(read_err("tty_struct.ldisc"))?;
                        let ops = if is_kernel_va(ld) {
                            mem.read_u64(Va(ld.wrapping_add(ldisc_ops)))
                                .map_err(read_err("tty_ldisc.ops"))?
                        } else {
                            0
                        };
                        let mut n = [0u8; MAX_NAME];
                        mem.read_virt(Va(tty.wrapping_add(tty_name)), &mut n)
                            .map_err(read_err("tty_struct.name"))?;
                        open.push(Tty {
                            at: Va(tty),
                            name: n.split(|&c| c == 0).next().unwrap_or_default().to_vec(),
                            ldisc_ops: Va(ops),
                        });
                    }
                }
                out.push(TtyDriver {
                    at,
                    name: name_at(mem, u64_at(&b, name), MAX_NAME),
                    driver_name: name_at(mem, u64_at(&b, driver_name), MAX_NAME),
                    ops: table,
                    ttys: open,
                });
                Ok(())
            },
        )?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::objects::tests::Flat;
    use crate::profile::Profile;

    const BASE: u64 = 0xffff_8880_0000_0000;

    #[test]
    fn function_tables_take_every_fn_member_of_the_profile() {
        let p: Profile = serde_json::from_value(serde_json::json!({
            "format_version": "1.0",
            "kernel": {"release": "x", "banner": "Linux version x\n", "arch": "x86_64"},
            "provenance": {"source": "dwarf", "inputs": [], "tool": "t"},
            "symbols": {},
            "types": {"seq_operations": {"kind": "struct", "size": 32, "fields": {
                "start": {"offset": 0, "type": "ptr fn"},
                "show": {"offset": 24, "type": "ptr fn"},
                "private": {"offset": 16, "type": "ptr void"}
            }}}
        }))
        .unwrap();
        let f = fn_fields(&p, "seq_operations").unwrap();
        assert_eq!(
            f.0,
            vec![("start".to_string(), 0), ("show".to_string(), 24)]
        );
        assert_eq!(f.1, 32);
        let mut m = Flat::new(BASE, 0x100);
        m.put(BASE + 0x20, &0xffff_ffff_8100_0000u64.to_le_bytes());
        m.put(BASE + 0x38, &0xffff_ffff_c000_0000u64.to_le_bytes());
        let t = read_fn_table(&m, &f, Va(BASE + 0x20), "t").unwrap();
        assert_eq!(
            t.fns,
            vec![
                ("start".to_string(), Va(0xffff_ffff_8100_0000)),
                ("show".to_string(), Va(0xffff_ffff_c000_0000))
            ]
        );
        let e = read_fn_table(&m, &f, Va(0x4141), "t").unwrap_err();
        assert!(matches!(e, KernelError::BadPointer { .. }), "{e}");
        assert!(fn_fields(&p, "tty_operations").is_err());
    }
}
