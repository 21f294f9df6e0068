//! The text QEMU's human monitor prints (HMP, through QMP's `human-monitor-command`):
//! `info mtree -f` (where guest RAM is) and `info registers` (a vCPU's registers).

use crate::addr::Pa;
use crate::arch::x86_64::{DescriptorTable, Registers, Segment as SegReg};

use super::RamRegion;

/// The ranges of `backend` in the flat view of the `memory` address space, from the
/// text of `info mtree -f` (lines like
/// `0000000000100000-000000003fffffff (prio 0, ram): lab-ram @0000000000100000`),
/// with ranges contiguous in both address spaces merged.
pub fn parse_mtree(text: &str, backend: &str) -> Vec<RamRegion> {
    let mut out: Vec<RamRegion> = Vec::new();
    let mut in_memory = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("FlatView") {
            in_memory = false;
            continue;
        }
        if t.starts_with("AS \"memory\"") {
            in_memory = true;
            continue;
        }
        if !in_memory {
            continue;
        }
        let Some((span, rest)) = t.split_once(' ') else {
            continue;
        };
        let Some((a, b)) = span.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(last)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        let Some((kind, name)) = rest.split_once("): ") else {
            continue;
        };
        if !(kind.ends_with(" ram") || kind.ends_with(" rom")) || last < start {
            continue;
        }
        let mut words = name.split_whitespace();
        if words.next() != Some(backend) {
            continue;
        }
        let offset = words
            .find_map(|w| w.strip_prefix('@'))
            .and_then(|w| u64::from_str_radix(w, 16).ok())
            .unwrap_or(0);
        let Some(end) = last.checked_add(1) else {
            continue;
        };
        let r = RamRegion {
            start: Pa(start),
            end: Pa(end),
            file_offset: offset,
        };
        match out.last_mut() {
            Some(p)
                if p.end == r.start && p.file_offset + (p.end.0 - p.start.0) == r.file_offset =>
            {
                p.end = r.end
            }
            _ => out.push(r),
        }
    }
    out.sort_by_key(|r| r.start);
    out
}

fn hex(v: &str) -> Option<u64> {
    u64::from_str_radix(v, 16).ok()
}

/// Registers from the text of `info registers` on one x86 vCPU (QEMU's
/// `x86_cpu_dump_state`). Fails when CR0, CR3 or CR4 is missing.
pub fn parse_info_registers(text: &str) -> Result<Registers, String> {
    let mut r = Registers::default();
    let mut seen_cr3 = false;
    let mut seen_cr0 = false;
    let mut seen_cr4 = false;
    for line in text.lines() {
        let l = line.trim();
        if let Some((name, rest)) = l.split_once('=') {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let seg = || SegReg {
                selector: words.first().and_then(|w| hex(w)).unwrap_or(0) as u16,
                base: words.get(1).and_then(|w| hex(w)).unwrap_or(0),
                limit: words.get(2).and_then(|w| hex(w)).unwrap_or(0) as u32,
                flags: words.get(3).and_then(|w| hex(w)).unwrap_or(0) as u32,
            };
            let table = || DescriptorTable {
                base: words.first().and_then(|w| hex(w)).unwrap_or(0),
                limit: words.get(1).and_then(|w| hex(w)).unwrap_or(0) as u32,
            };
            match name.trim() {
                "ES" => r.es = seg(),
                "CS" => r.cs = seg(),
                "SS" => r.ss = seg(),
                "DS" => r.ds = seg(),
                "FS" => r.fs = seg(),
                "GS" => r.gs = seg(),
                "LDT" | "TR" => {}
                "GDT" => r.gdt = table(),
                "IDT" => r.idt = table(),
                _ => {
                    // `R8 =0000...` → `R8=0000...`
                    let norm = l.replace(" =", "=");
                    for tok in norm.split_whitespace() {
                        let Some((k, v)) = tok.split_once('=') else {
                            continue;
                        };
                        let Some(v) = hex(v) else {
                            continue;
                        };
                        match k {
                            "RAX" | "EAX" => r.rax = v,
                            "RBX" | "EBX" => r.rbx = v,
                            "RCX" | "ECX" => r.rcx = v,
                            "RDX" | "EDX" => r.rdx = v,
                            "RSI" | "ESI" => r.rsi = v,
                            "RDI" | "EDI" => r.rdi = v,
                            "RBP" | "EBP" => r.rbp = v,
                            "RSP" | "ESP" => r.rsp = v,
                            "R8" => r.r[0] = v,
                            "R9" => r.r[1] = v,
                            "R10" => r.r[2] = v,
                            "R11" => r.r[3] = v,
                            "R12" => r.r[4] = v,
                            "R13" => r.r[5] = v,
                            "R14" => r.r[6] = v,
                            "R15" => r.r[7] = v,
                            "RIP" | "EIP" => r.rip = v,
                            "RFL" | "EFL" => r.rflags = v,
                            "CR0" => {
                                r.cr0 = v;
                                seen_cr0 = true;
                            }
                            "CR2" => r.cr2 = v,
                            "CR3" => {
                                r.cr3 = v;
                                seen_cr3 = true;
                            }
                            "CR4" => {
                                r.cr4 = v;
                                seen_cr4 = true;
                            }
                            "EFER" => r.efer = Some(v),
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    if !(seen_cr0 && seen_cr3 && seen_cr4) {
        let first = text.lines().next().unwrap_or_default();
        return Err(format!(
            "no CR0/CR3/CR4 in the output of info registers (it begins {:?})",
            &first[..first.len().min(80)]
        ));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTREE: &str = "FlatView #0\n AS \"memory\", root: system\n AS \"cpu-memory-0\", root: system\n Root memory region: system\n  0000000000000000-000000000009ffff (prio 0, ram): ram0\n  00000000000a0000-00000000000bffff (prio 1, i/o): vga-lowmem\n  00000000000c0000-00000000000cafff (prio 0, rom): ram0 @00000000000c0000\n  00000000000cb000-00000000000cdfff (prio 0, ram): ram0 @00000000000cb000\n  0000000000100000-000000007fffffff (prio 0, ram): ram0 @0000000000100000 KVM\n  0000000100000000-000000017fffffff (prio 0, ram): ram0 @0000000080000000 KVM\n  00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios\n  00000000fed00000-00000000fed003ff (prio 0, i/o): hpet\n\nFlatView #1\n AS \"cpu-smm-0\", root: memory\n  0000000000000000-00000000000bffff (prio 0, ram): ram0\n";

    #[test]
    fn mtree_ranges_with_offsets_above_4g() {
        let m = parse_mtree(MTREE, "ram0");
        let r = |s: u64, e: u64, o: u64| RamRegion {
            start: Pa(s),
            end: Pa(e),
            file_offset: o,
        };
        assert_eq!(
            m,
            vec![
                r(0, 0xa0000, 0),
                r(0xc0000, 0xce000, 0xc0000),
                r(0x100000, 0x8000_0000, 0x100000),
                r(0x1_0000_0000, 0x1_8000_0000, 0x8000_0000),
            ]
        );
        assert!(parse_mtree(MTREE, "other").is_empty());
        assert!(parse_mtree("garbage\n-\n0-1 (x): ram0\n", "ram0").is_empty());
    }

    const REGS64: &str =
        "RAX=0000000000000000 RBX=ffffffff82a13940 RCX=0000000000000001 RDX=0000000000000002\r
RSI=0000000000000083 RDI=0000000000000000 RBP=0000000000000000 RSP=ffffffff82a03e80\r
R8 =0000000000000001 R9 =0000000000000002 R10=0000000000000003 R11=0000000000000004\r
R12=0000000000000005 R13=0000000000000006 R14=0000000000000007 R15=0000000000000008\r
RIP=ffffffff81e0b1be RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\r
ES =0000 0000000000000000 00000000 00000000\r
CS =0010 0000000000000000 ffffffff 00af9b00 DPL=0 CS64 [-RA]\r
SS =0018 0000000000000000 ffffffff 00cf9300 DPL=0 DS   [-WA]\r
DS =0000 0000000000000000 00000000 00000000\r
FS =0000 0000000000000000 00000000 00000000\r
GS =0000 ffff88803ec00000 00000000 00000000\r
LDT=0000 0000000000000000 00000000 00008200 DPL=0 LDT\r
TR =0040 fffffe0000003000 00004087 00008900 DPL=0 TSS64-avl\r
GDT=     fffffe0000001000 0000007f\r
IDT=     fffffe0000000000 00000fff\r
CR0=80050033 CR2=00007f2b7e5ff000 CR3=000000000260a000 CR4=00350ef0\r
DR0=0000000000000000 DR1=0000000000000000 DR2=0000000000000000 DR3=0000000000000000 \r
DR6=00000000ffff0ff0 DR7=0000000000000400\r
EFER=0000000000000d01\r
FCW=037f FSW=0000 [ST=0] FTW=00 MXCSR=00001f80\r
FPR0=0000000000000000 0000 FPR1=0000000000000000 0000\r
XMM00=0000000000000000 0000000000000000 XMM01=0000000000000000 0000000000000000\r
";

    #[test]
    fn info_registers_64() {
        let r = parse_info_registers(REGS64).unwrap();
        assert_eq!(r.rbx, 0xffff_ffff_82a1_3940);
        assert_eq!(r.rsp, 0xffff_ffff_82a0_3e80);
        assert_eq!(r.r, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(r.rip, 0xffff_ffff_81e0_b1be);
        assert_eq!(r.rflags, 0x246);
        assert_eq!(r.cs.selector, 0x10);
        assert_eq!(r.cs.flags, 0x00af_9b00);
        assert_eq!(r.ss.limit, 0xffff_ffff);
        assert_eq!(r.gs.base, 0xffff_8880_3ec0_0000);
        assert_eq!(r.gdt.base, 0xffff_fe00_0000_1000);
        assert_eq!(r.idt.limit, 0xfff);
        assert_eq!(
            (r.cr0, r.cr2, r.cr3, r.cr4),
            (0x8005_0033, 0x7f2b_7e5f_f000, 0x260_a000, 0x0035_0ef0)
        );
        assert_eq!(r.efer, Some(0xd01));
        assert_eq!(r.cpl(), 0);
        assert!(r.page_table_root().is_ok());
    }

    #[test]
    fn info_registers_compat_mode_and_garbage() {
        let text = "EAX=00000001 EBX=00000002 ECX=00000003 EDX=00000004\nESI=0 EDI=0 EBP=0 ESP=ffffd000\nEIP=08049000 EFL=00000202 [-------] CPL=3 II=0 A20=1 SMM=0 HLT=0\nCS =0023 00000000 ffffffff 00cffb00 DPL=3 CS32 [-RA]\nGDT=     fffffe0000001000 0000007f\nCR0=80050033 CR2=0000000008049000 CR3=0000000003a1e000 CR4=00350ef0\nEFER=0000000000000d01\n";
        let r = parse_info_registers(text).unwrap();
        assert_eq!((r.rax, r.rip, r.cpl()), (1, 0x0804_9000, 3));
        assert_eq!(r.cr3, 0x3a1_e000);
        assert!(parse_info_registers("unknown command: 'info registerz'").is_err());
        assert!(parse_info_registers("").is_err());
        assert!(parse_info_registers("CR0=zz CR3= CR4=\n= = =\n").is_err());
    }
}
