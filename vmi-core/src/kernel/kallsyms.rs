//! Names of kernel addresses, from the kernel's own kallsyms tables in guest memory.
//!
//! A default profile holds only the symbols the detector reads, so a hooked function's
//! address would stay a number. The running kernel carries every symbol in its
//! kallsyms tables (`scripts/kallsyms.c`; profile-gen's `kallsyms.rs` documents them):
//! `kallsyms_num_syms` names, sorted by address, each a list of token numbers
//! (`kallsyms_names`, with `kallsyms_markers` at every 256th), the tokens
//! (`kallsyms_token_table`, `kallsyms_token_index`), and the addresses in one of three
//! forms:
//! - `kallsyms_offsets` (i32) with `kallsyms_relative_base`: `base + (u32)offset`, or
//!   with `CONFIG_KALLSYMS_ABSOLUTE_PERCPU` (x86-64 before 6.15) a non-negative offset
//!   is an absolute per-CPU value and a negative one `base - 1 - offset`; this form is
//!   recognised by the last (highest) symbol's offset being negative;
//! - `kallsyms_offsets` alone (6.15 on): relative to each entry's own address;
//! - `kallsyms_addresses` (u64), without base-relative kallsyms.
//!
//! A lookup is the kernel's own: a binary search over the addresses (about 17 reads of
//! 4 bytes for 150,000 symbols), then the name decoded from the nearest marker. The
//! addresses read are the running (relocated) ones. The tables live in the image's
//! read-only data and are only read: nothing a guest wrote there can make a lookup
//! allocate beyond the bounds below or loop.

use crate::addr::Va;
use crate::kernel::objects::read_err;
use crate::kernel::{Kernel, KernelError};
use crate::memory::{PhysicalMemory, VirtualMemory};

/// The kernel's own symbol table, read in guest memory to name addresses (each optional:
/// a profile made from a `/proc/kallsyms` copy lacks them).
pub const NEEDS: crate::profile::needs::Declaration = crate::declaration!(
    "kallsyms";
    fields [];
    symbols [
        opt ["kallsyms_num_syms"],
        opt ["kallsyms_names"],
        opt ["kallsyms_markers"],
        opt ["kallsyms_token_table"],
        opt ["kallsyms_token_index"],
        opt ["kallsyms_offsets"],
        opt ["kallsyms_relative_base"],
        opt ["kallsyms_addresses"],
    ]
);

/// Most symbols accepted (Debian's 7.2 has about 200,000).
pub const MAX_SYMS: u32 = 1 << 22;
/// Longest name decoded (`KSYM_NAME_LEN` is 512).
pub const MAX_NAME: usize = 512;
/// Most names of one address returned by [`Kallsyms::names_at`].
pub const MAX_ALIASES: usize = 256;
/// Bytes of `kallsyms_names` read at a time.
const CHUNK: usize = 4096;
/// Bytes of the address table read at a time by [`Kallsyms::addresses`].
pub const ADDRESS_CHUNK: usize = 1 << 16;

/// How the addresses are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Addressing {
    /// `kallsyms_addresses`.
    Absolute { addresses: Va },
    /// `kallsyms_offsets` + `kallsyms_relative_base`.
    Relative {
        offsets: Va,
        base: u64,
        absolute_percpu: bool,
    },
    /// `kallsyms_offsets`, each relative to itself.
    PcRelative { offsets: Va },
}

/// The kernel's kallsyms tables, located and their tokens read.
#[derive(Debug, Clone)]
pub struct Kallsyms {
    count: u32,
    names: Va,
    markers: Va,
    /// 4 or 8 bytes per marker.
    marker_width: u64,
    tokens: Vec<Vec<u8>>,
    addressing: Addressing,
}

impl<M: PhysicalMemory> Kernel<M> {
    /// The kernel's kallsyms tables. Fails when the profile does not name them (a
    /// profile made from a `/proc/kallsyms` copy, which omits them) or they do not
    /// decode.
    pub fn kallsyms(&self) -> Result<Kallsyms, KernelError> {
        let sym = |n: &'static str| self.symbol(n);
        let addressing = if self.profile.symbol("kallsyms_addresses").is_some() {
            Addressing::Absolute {
                addresses: sym("kallsyms_addresses")?,
            }
        } else if self.profile.symbol("kallsyms_relative_base").is_some() {
            let base = self
                .space
                .read_u64(sym("kallsyms_relative_base")?)
                .map_err(read_err("kallsyms_relative_base"))?;
            Addressing::Relative {
                offsets: sym("kallsyms_offsets")?,
                base,
                absolute_percpu: false,
            }
        } else {
            Addressing::PcRelative {
                offsets: sym("kallsyms_offsets")?,
            }
        };
        Kallsyms::read(
            &self.space,
            sym("kallsyms_num_syms")?,
            sym("kallsyms_names")?,
            sym("kallsyms_markers")?,
            sym("kallsyms_token_table")?,
            sym("kallsyms_token_index")?,
            addressing,
        )
    }
}

impl Kallsyms {
    fn read<V: VirtualMemory + ?Sized>(
        mem: &V,
        num_syms: Va,
        names: Va,
        markers: Va,
        token_table: Va,
        token_index: Va,
        mut addressing: Addressing,
    ) -> Result<Kallsyms, KernelError> {
        let count = mem
            .read_u32(num_syms)
            .map_err(read_err("kallsyms_num_syms"))?;
        if count == 0 || count > MAX_SYMS {
            return Err(KernelError::Corrupt {
                what: format!("kallsyms_num_syms is {count}"),
                at: num_syms,
            });
        }
        // markers[0] is 0; with 4-byte markers the first u64 holds markers[1] (the
        // offset of the 256th name) in its high half
        let marker_width = if count <= 256
            || mem
                .read_u64(markers)
                .map_err(read_err("kallsyms_markers"))?
                == 0
        {
            8
        } else {
            4
        };
        let index = mem
            .read_bytes(token_index, 512)
            .map_err(read_err("kallsyms_token_index"))?;
        let index: Vec<usize> = index
            .chunks_exact(2)
            .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])))
            .collect();
        // every token is short: the table ends within a few bytes of its last index
        let len = index.iter().max().copied().unwrap_or(0) + 256;
        let table = mem
            .read_bytes(token_table, len)
            .map_err(read_err("kallsyms_token_table"))?;
        let mut tokens = Vec::with_capacity(256);
        for &at in &index {
            let rest = table.get(at..).unwrap_or_default();
            let end = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| KernelError::Corrupt {
                    what: format!("kallsyms token at offset {at} does not end"),
                    at: token_table,
                })?;
            tokens.push(rest[..end].to_vec());
        }
        if let Addressing::Relative {
            offsets,
            absolute_percpu,
            ..
        } = &mut addressing
        {
            let last = offsets.0.wrapping_add(u64::from(count - 1) * 4);
            let v = mem
                .read_u32(Va(last))
                .map_err(read_err("kallsyms_offsets"))?;
            *absolute_percpu = (v as i32) < 0;
        }
        Ok(Kallsyms {
            count,
            names,
            markers,
            marker_width,
            tokens,
            addressing,
        })
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when there are no symbols (never, for tables that read).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The address of symbol `i`.
    fn address<V: VirtualMemory + ?Sized>(&self, mem: &V, i: u32) -> Result<u64, KernelError> {
        let what = "kallsyms address table";
        let raw = match self.addressing {
            Addressing::Absolute { addresses } => mem
                .read_u64(Va(addresses.0.wrapping_add(u64::from(i) * 8)))
                .map_err(read_err(what))?,
            Addressing::Relative { offsets, .. } | Addressing::PcRelative { offsets } => mem
                .read_u32(Va(offsets.0.wrapping_add(u64::from(i) * 4)))
                .map(u64::from)
                .map_err(read_err(what))?,
        };
        Ok(self.decode(i, raw))
    }

    /// Every symbol's address, in kallsyms order (by address): the address table read
    /// in chunks of [`ADDRESS_CHUNK`] bytes, at most [`MAX_SYMS`] entries (`count` was
    /// bounded when the tables were read). About 0.6 MB for 150,000 symbols.
    pub fn addresses<V: VirtualMemory + ?Sized>(&self, mem: &V) -> Result<Vec<u64>, KernelError> {
        let what = "kallsyms address table";
        let (table, width) = match self.addressing {
            Addressing::Absolute { addresses } => (addresses, 8u64),
            Addressing::Relative { offsets, .. } | Addressing::PcRelative { offsets } => {
                (offsets, 4)
            }
        };
        let mut out = Vec::with_capacity(self.count as usize);
        let per_chunk = (ADDRESS_CHUNK as u64 / width) as u32;
        let mut i = 0u32;
        while i < self.count {
            let n = per_chunk.min(self.count - i);
            let at = table.0.wrapping_add(u64::from(i) * width);
            let bytes = mem
                .read_bytes(Va(at), (u64::from(n) * width) as usize)
                .map_err(read_err(what))?;
            for (j, c) in bytes.chunks_exact(width as usize).enumerate() {
                let k = i + j as u32;
                let raw = if width == 8 {
                    u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))
                } else {
                    u64::from(u32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
                };
                out.push(self.decode(k, raw));
            }
            i += n;
        }
        Ok(out)
    }

    /// The address of symbol `i` from its raw table entry.
    fn decode(&self, i: u32, raw: u64) -> u64 {
        match self.addressing {
            Addressing::Absolute { .. } => raw,
            Addressing::Relative {
                base,
                absolute_percpu,
                ..
            } => match (absolute_percpu, raw as u32 as i32) {
                (true, o) if o >= 0 => o as u64,
                (true, o) => base.wrapping_sub(1).wrapping_sub(i64::from(o) as u64),
                (false, _) => base.wrapping_add(raw),
            },
            Addressing::PcRelative { offsets } => offsets
                .0
                .wrapping_add(u64::from(i) * 4)
                .wrapping_add(i64::from(raw as u32 as i32) as u64),
        }
    }

    /// The name of symbol `i` (without its type letter).
    fn name<V: VirtualMemory + ?Sized>(&self, mem: &V, i: u32) -> Result<Vec<u8>, KernelError> {
        let m = Va(self
            .markers
            .0
            .wrapping_add(u64::from(i >> 8) * self.marker_width));
        let marker = if self.marker_width == 8 {
            mem.read_u64(m)
        } else {
            mem.read_u32(m).map(u64::from)
        }
        .map_err(read_err("kallsyms_markers"))?;
        let mut cur = Cursor {
            at: self.names.0.wrapping_add(marker),
            buf: Vec::new(),
            pos: 0,
            read: 0,
        };
        for _ in 0..(i & 0xff) {
            let len = cur.len(mem)?;
            cur.skip(mem, len)?;
        }
        let len = cur.len(mem)?;
        let mut name = Vec::new();
        for _ in 0..len {
            let t = cur.byte(mem)?;
            name.extend_from_slice(&self.tokens[usize::from(t)]);
            if name.len() > MAX_NAME {
                break;
            }
        }
        // the first character is the type letter
        Ok(name.get(1..).unwrap_or_default().to_vec())
    }

    /// The names of the symbols at exactly `va` (aliases share an address), at most
    /// [`MAX_ALIASES`]: empty when no symbol starts there.
    pub fn names_at<V: VirtualMemory + ?Sized>(
        &self,
        mem: &V,
        va: Va,
    ) -> Result<Vec<Vec<u8>>, KernelError> {
        // the first symbol at or above `va`
        let (mut lo, mut hi) = (0u32, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.address(mem, mid)? < va.0 {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut out = Vec::new();
        while lo < self.count && out.len() < MAX_ALIASES && self.address(mem, lo)? == va.0 {
            out.push(self.name(mem, lo)?);
            lo += 1;
        }
        Ok(out)
    }

    /// The symbol at or before `va` and the offset into it: what `%pS` prints. `None`
    /// below the first symbol. The caller decides whether `va` is in the kernel image
    /// at all (beyond the last symbol, the last one is named).
    pub fn lookup<V: VirtualMemory + ?Sized>(
        &self,
        mem: &V,
        va: Va,
    ) -> Result<Option<(Vec<u8>, u64)>, KernelError> {
        if self.address(mem, 0)? > va.0 {
            return Ok(None);
        }
        let (mut lo, mut hi) = (0u32, self.count);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.address(mem, mid)? <= va.0 {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        // aliases: the kernel names the first symbol at an address
        let at = self.address(mem, lo)?;
        let mut steps = 0;
        while lo > 0 && steps < 256 && self.address(mem, lo - 1)? == at {
            lo -= 1;
            steps += 1;
        }
        Ok(Some((self.name(mem, lo)?, va.0.wrapping_sub(at))))
    }
}

/// Reads `kallsyms_names` forward in chunks.
struct Cursor {
    at: u64,
    buf: Vec<u8>,
    pos: usize,
    /// Bytes read so far (bounded: 256 names of at most 64 KiB of tokens).
    read: usize,
}

impl Cursor {
    fn byte<V: VirtualMemory + ?Sized>(&mut self, mem: &V) -> Result<u8, KernelError> {
        if self.pos == self.buf.len() {
            if self.read > 256 * (2 + 0x7fff) {
                return Err(KernelError::Corrupt {
                    what: "kallsyms_names: a block of 256 names is longer than any can be".into(),
                    at: Va(self.at),
                });
            }
            self.buf = mem
                .read_bytes(Va(self.at), CHUNK)
                .map_err(read_err("kallsyms_names"))?;
            self.at = self.at.wrapping_add(CHUNK as u64);
            self.read += CHUNK;
            self.pos = 0;
        }
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(b)
    }

    /// A name's length: one byte, or two when the first has bit 7 set (6.1 on).
    fn len<V: VirtualMemory + ?Sized>(&mut self, mem: &V) -> Result<usize, KernelError> {
        let b0 = self.byte(mem)?;
        if b0 & 0x80 == 0 {
            return Ok(usize::from(b0));
        }
        let b1 = self.byte(mem)?;
        Ok(usize::from(b0 & 0x7f) | usize::from(b1) << 7)
    }

    fn skip<V: VirtualMemory + ?Sized>(&mut self, mem: &V, n: usize) -> Result<(), KernelError> {
        for _ in 0..n {
            self.byte(mem)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::objects::tests::Flat;

    const BASE: u64 = 0xffff_ffff_8200_0000;

    /// Tables for `names` (sorted by address) in the relative, absolute-per-CPU form,
    /// with tokens: byte b stands for itself except 0x01 = "sys_" and 0x02 = "T".
    fn tables(syms: &[(u64, &str)], percpu: bool) -> (Flat, Kallsyms) {
        let mut mem = Flat::new(BASE, 0x10000);
        let (num, names, markers, table, index, offsets, base_at) = (
            BASE,
            BASE + 0x100,
            BASE + 0x8000,
            BASE + 0x9000,
            BASE + 0xa000,
            BASE + 0xb000,
            BASE + 0xf000,
        );
        let text = 0xffff_ffff_8100_0000u64;
        mem.put(num, &(syms.len() as u32).to_le_bytes());
        mem.put(base_at, &text.to_le_bytes());
        // token table: 256 strings
        let mut tt = Vec::new();
        let mut idx = Vec::new();
        for b in 0..=255u8 {
            idx.extend_from_slice(&(tt.len() as u16).to_le_bytes());
            match b {
                1 => tt.extend_from_slice(b"sys_"),
                2 => tt.push(b'T'),
                0 => tt.push(b'?'),
                _ => tt.push(b),
            }
            tt.push(0);
        }
        mem.put(table, &tt);
        mem.put(index, &idx);
        let mut out = Vec::new();
        let mut marks = Vec::new();
        for (i, (addr, name)) in syms.iter().enumerate() {
            if i % 256 == 0 {
                marks.extend_from_slice(&(out.len() as u32).to_le_bytes());
            }
            let mut enc = vec![2u8];
            let mut rest = name.as_bytes();
            while !rest.is_empty() {
                if let Some(r) = rest.strip_prefix(b"sys_") {
                    enc.push(1);
                    rest = r;
                } else {
                    enc.push(rest[0]);
                    rest = &rest[1..];
                }
            }
            out.push(enc.len() as u8);
            out.extend_from_slice(&enc);
            let off: i32 = if percpu {
                -((addr - text) as i32) - 1
            } else {
                (addr - text) as i32
            };
            mem.put(offsets + 4 * i as u64, &off.to_le_bytes());
        }
        mem.put(names, &out);
        mem.put(markers, &marks);
        let k = Kallsyms::read(
            &mem,
            Va(num),
            Va(names),
            Va(markers),
            Va(table),
            Va(index),
            Addressing::Relative {
                offsets: Va(offsets),
                base: text,
                absolute_percpu: false,
            },
        )
        .unwrap();
        (mem, k)
    }

    #[test]
    fn names_addresses_like_the_kernel() {
        let text = 0xffff_ffff_8100_0000u64;
        let mut syms: Vec<(u64, String)> = (0..600u64)
            .map(|i| (text + 0x10 * i, format!("f{i}")))
            .collect();
        syms[300].1 = "__x64_sys_kill".into();
        // an alias: the first of two names at one address is named
        syms[301] = (syms[300].0, "alias".into());
        syms[302].0 = syms[300].0 + 0x40;
        let syms: Vec<(u64, &str)> = syms.iter().map(|(a, n)| (*a, n.as_str())).collect();
        for percpu in [false, true] {
            let (mem, k) = tables(&syms, percpu);
            assert_eq!(k.len(), 600);
            let hit = |va: u64| k.lookup(&mem, Va(va)).unwrap();
            assert_eq!(hit(text), Some((b"f0".to_vec(), 0)));
            assert_eq!(hit(text + 0x13), Some((b"f1".to_vec(), 3)));
            assert_eq!(
                hit(syms[300].0 + 5),
                Some((b"__x64_sys_kill".to_vec(), 5)),
                "percpu {percpu}"
            );
            assert_eq!(hit(syms[599].0 + 1), Some((b"f599".to_vec(), 1)));
            assert_eq!(hit(text - 1), None);
            // every name at an address, none between symbols
            let at = |va: u64| k.names_at(&mem, Va(va)).unwrap();
            assert_eq!(
                at(syms[300].0),
                vec![b"__x64_sys_kill".to_vec(), b"alias".to_vec()]
            );
            assert_eq!(at(text), vec![b"f0".to_vec()]);
            assert_eq!(at(syms[599].0), vec![b"f599".to_vec()]);
            assert!(at(text + 8).is_empty() && at(text - 1).is_empty());
            assert!(at(syms[599].0 + 0x10).is_empty());
            // all addresses at once, as each lookup reads them
            let all = k.addresses(&mem).unwrap();
            let want: Vec<u64> = syms.iter().map(|(a, _)| *a).collect();
            assert_eq!(all, want, "percpu {percpu}");
        }
    }

    #[test]
    fn garbage_tables_are_errors() {
        let (mut mem, _) = tables(&[(0xffff_ffff_8100_0000, "a")], false);
        mem.bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = Kallsyms::read(
            &mem,
            Va(BASE),
            Va(BASE + 0x100),
            Va(BASE + 0x8000),
            Va(BASE + 0x9000),
            Va(BASE + 0xa000),
            Addressing::PcRelative {
                offsets: Va(BASE + 0xb000),
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("kallsyms_num_syms"), "{e}");
    }
}
