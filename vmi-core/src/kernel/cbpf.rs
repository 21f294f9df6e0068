//! Classic BPF programs (`struct sock_filter`), as a socket filter attached with
//! `SO_ATTACH_FILTER` keeps them, decoded into the lines `tcpdump -d` prints.
//!
//! The kernel converts a classic filter to eBPF when it is attached, but keeps the
//! program the process gave it (`bpf_prog.orig_prog`, a `struct sock_fprog_kern`) for
//! `SO_GET_FILTER`; that original is what an analyst wants to read: a BPFDoor-like
//! implant's wake-up filter is a dozen classic instructions matching its magic packet.
//!
//! Decoding is pure and total: every 64-bit word decodes to a line (an opcode the
//! kernel would refuse is `unimp 0xNN`), and a program is at most [`BPF_MAXINSNS`]
//! instructions, the kernel's own limit.

use std::fmt::Write;

/// Most instructions of a classic program (`BPF_MAXINSNS`).
pub const BPF_MAXINSNS: usize = 4096;

/// One classic BPF instruction (`struct sock_filter`: code, jt, jf, k; 8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode (class, size, mode, operation, source).
    pub code: u16,
    /// Jump offset when the condition holds.
    pub jt: u8,
    /// Jump offset when it does not.
    pub jf: u8,
    /// The constant operand.
    pub k: u32,
}

impl Insn {
    /// The instruction of 8 little-endian bytes as the kernel stores them.
    pub fn from_bytes(b: [u8; 8]) -> Insn {
        Insn {
            code: u16::from_le_bytes([b[0], b[1]]),
            jt: b[2],
            jf: b[3],
            k: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// The instructions in `bytes` (8 each; at most [`BPF_MAXINSNS`], a trailing partial
/// word dropped).
pub fn parse(bytes: &[u8]) -> Vec<Insn> {
    bytes
        .chunks_exact(8)
        .take(BPF_MAXINSNS)
        .map(|c| Insn::from_bytes(c.try_into().unwrap_or([0; 8])))
        .collect()
}

/// The program as `tcpdump -d` prints it: one line per instruction, `(NNN) op operand`,
/// conditional jumps with their absolute targets (`jt N  jf N`).
pub fn disassemble(prog: &[Insn]) -> Vec<String> {
    prog.iter()
        .take(BPF_MAXINSNS)
        .enumerate()
        .map(|(pc, i)| line(pc, i))
        .collect()
}

/// One instruction at `pc` as `tcpdump -d` prints it.
pub fn line(pc: usize, i: &Insn) -> String {
    let k = i.k;
    let code = i.code;
    let (op, operand, jumps): (&str, String, bool) = match code & 0x07 {
        // BPF_LD
        0x00 => {
            let op = match code & 0x18 {
                0x00 => "ld",
                0x08 => "ldh",
                0x10 => "ldb",
                _ => return unimp(pc, code),
            };
            match code & 0xe0 {
                0x00 if code & 0x18 == 0 => ("ld", format!("#{k:#x}"), false),
                0x20 => (op, format!("[{k}]"), false),
                0x40 => (op, format!("[x + {k}]"), false),
                0x60 if code & 0x18 == 0 => ("ld", format!("M[{k}]"), false),
                0x80 if code & 0x18 == 0 => ("ld", "#pktlen".into(), false),
                _ => return unimp(pc, code),
            }
        }
        // BPF_LDX
        0x01 => match (code & 0x18, code & 0xe0) {
            (0x00, 0x00) => ("ldx", format!("#{k:#x}"), false),
            (0x00, 0x60) => ("ldx", format!("M[{k}]"), false),
            (0x00, 0x80) => ("ldx", "#pktlen".into(), false),
            (0x10, 0xa0) => ("ldxb", format!("4*([{k}]&0xf)"), false),
            _ => return unimp(pc, code),
        },
        // BPF_ST, BPF_STX
        0x02 if code == 0x02 => ("st", format!("M[{k}]"), false),
        0x03 if code == 0x03 => ("stx", format!("M[{k}]"), false),
        // BPF_ALU
        0x04 => {
            let op = match code & 0xf0 {
                0x00 => "add",
                0x10 => "sub",
                0x20 => "mul",
                0x30 => "div",
                0x40 => "or",
                0x50 => "and",
                0x60 => "lsh",
                0x70 => "rsh",
                0x80 => return format!("({pc:03}) neg"),
                0x90 => "mod",
                0xa0 => "xor",
                _ => return unimp(pc, code),
            };
            if code & 0x08 != 0 {
                (op, "x".into(), false)
            } else {
                (op, format!("#{k}"), false)
            }
        }
        // BPF_JMP
        0x05 => {
            let op = match code & 0xf0 {
                0x00 => {
                    let to = (pc as u64) + 1 + u64::from(k);
                    return format!("({pc:03}) {:<8} {to}", "ja");
                }
                0x10 => "jeq",
                0x20 => "jgt",
                0x30 => "jge",
                0x40 => "jset",
                _ => return unimp(pc, code),
            };
            if code & 0x08 != 0 {
                (op, "x".into(), true)
            } else {
                (op, format!("#{k:#x}"), true)
            }
        }
        // BPF_RET
        0x06 => match code & 0x18 {
            0x00 => ("ret", format!("#{k}"), false),
            0x08 => ("ret", "x".into(), false),
            0x10 => ("ret", "a".into(), false),
            _ => return unimp(pc, code),
        },
        // BPF_MISC
        0x07 => match code & 0xf8 {
            0x00 => return format!("({pc:03}) tax"),
            0x80 => return format!("({pc:03}) txa"),
            _ => return unimp(pc, code),
        },
        _ => return unimp(pc, code),
    };
    let mut s = String::new();
    if jumps {
        let _ = write!(
            s,
            "({pc:03}) {op:<8} {operand:<16} jt {}\tjf {}",
            pc + 1 + usize::from(i.jt),
            pc + 1 + usize::from(i.jf)
        );
    } else {
        let _ = write!(s, "({pc:03}) {op:<8} {operand}");
    }
    s
}

fn unimp(pc: usize, code: u16) -> String {
    format!("({pc:03}) unimp    {code:#x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
        Insn { code, jt, jf, k }
    }

    /// `tcpdump -d udp`'s first lines (IPv4 part) and a BPFDoor-like magic match.
    #[test]
    fn prints_as_tcpdump_does() {
        let prog = [
            i(0x28, 0, 0, 12),      // ldh [12]
            i(0x15, 0, 3, 0x800),   // jeq #0x800 jt 2 jf 5
            i(0x30, 0, 0, 23),      // ldb [23]
            i(0x15, 0, 1, 0x11),    // jeq #0x11 jt 4 jf 5
            i(0x06, 0, 0, 0x40000), // ret #262144
            i(0x06, 0, 0, 0),       // ret #0
            i(0xb1, 0, 0, 14),      // ldxb 4*([14]&0xf)
            i(0x48, 0, 0, 16),      // ldh [x + 16]
            i(0x05, 0, 0, 2),       // ja 11
            i(0x00, 0, 0, 0x7255),  // ld #0x7255
            i(0x54, 0, 0, 0xff),    // and #255
            i(0x1d, 1, 0, 0),       // jeq x jt 13 jf 12
            i(0x87, 0, 0, 0),       // txa
            i(0x16, 0, 0, 0),       // ret a
            i(0x02, 0, 0, 3),       // st M[3]
            i(0x80, 0, 0, 0),       // ld #pktlen
            i(0xffff, 0, 0, 0),     // nothing the kernel accepts
        ];
        let want = [
            "(000) ldh      [12]",
            "(001) jeq      #0x800           jt 2\tjf 5",
            "(002) ldb      [23]",
            "(003) jeq      #0x11            jt 4\tjf 5",
            "(004) ret      #262144",
            "(005) ret      #0",
            "(006) ldxb     4*([14]&0xf)",
            "(007) ldh      [x + 16]",
            "(008) ja       11",
            "(009) ld       #0x7255",
            "(010) and      #255",
            "(011) jeq      x                jt 13\tjf 12",
            "(012) txa",
            "(013) ret      a",
            "(014) st       M[3]",
            "(015) ld       #pktlen",
            "(016) unimp    0xffff",
        ];
        assert_eq!(disassemble(&prog), want);
    }

    /// Bytes as the kernel stores `struct sock_filter`; a partial word and anything
    /// past BPF_MAXINSNS are dropped.
    #[test]
    fn parses_bounded() {
        let mut b = vec![
            0x28, 0, 0, 0, 12, 0, 0, 0, 0x06, 0, 1, 2, 0xff, 0xff, 0, 0, 9,
        ];
        let p = parse(&b);
        assert_eq!(p, vec![i(0x28, 0, 0, 12), i(6, 1, 2, 0xffff)]);
        b = vec![0; 8 * (BPF_MAXINSNS + 5)];
        assert_eq!(parse(&b).len(), BPF_MAXINSNS);
        // every opcode decodes to one line, jumps past the end included
        for c in 0..=u16::MAX {
            assert!(line(7, &i(c, 255, 255, u32::MAX)).starts_with("(007) "));
        }
    }
}
