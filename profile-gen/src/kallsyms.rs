//! Every kernel symbol, recovered from the kernel's own kallsyms tables inside the image
//! (no System.map needed).
//!
//! # The tables (`scripts/kallsyms.c` writes them into `.rodata`)
//!
//! - `kallsyms_num_syms`: u32, the number of symbols N.
//! - `kallsyms_names`: N entries sorted by address; each is a length (one byte, or two
//!   when the first has bit 7 set: `(b0 & 0x7f) | b1 << 7`, kernels since 6.1) followed
//!   by that many token numbers. Expanding the tokens gives the type letter (`T`, `d`,
//!   ...) followed by the name.
//! - `kallsyms_markers`: the byte offset in `kallsyms_names` of every 256th entry (u32;
//!   u64 on older kernels), so `markers[0] == 0` and the values increase.
//! - `kallsyms_token_table`: 256 NUL-terminated strings; `kallsyms_token_index`: 256 u16
//!   offsets of each string in the table. A byte that occurs in symbol names stands for
//!   itself, so the tokens for `'0'..='9'` are the strings "0" .. "9", in a row.
//! - The addresses, in one of these forms:
//!   - `kallsyms_offsets` (N × i32) and `kallsyms_relative_base` (u64): the address is
//!     `relative_base + (u32)offset`, or with `CONFIG_KALLSYMS_ABSOLUTE_PERCPU` (x86-64
//!     SMP before 6.15) a non-negative offset is an absolute value (per-CPU symbols) and
//!     a negative one means `relative_base - 1 - offset`;
//!   - `kallsyms_offsets` without a base (recent kernels, e.g. Debian's 7.2): each entry
//!     is relative to its own address (`&offsets[i] + offsets[i]`);
//!   - `kallsyms_addresses` (N × u64), on kernels built without base-relative kallsyms.
//! - `kallsyms_seqs_of_names` (N × 3 bytes, since 6.2 and in Debian's 6.1): a name-sorted
//!   permutation, not needed here.
//!
//! The order of the tables changed over time: 5.10 and Debian's 6.1 write offsets,
//! relative base, num_syms, names, markers, [seqs_of_names,] token table, token index;
//! later kernels write num_syms, names, markers, token table, token index, offsets,
//! [relative base,] seqs_of_names. Labels are aligned to 8 bytes (4 on recent kernels).
//!
//! # Recovery
//!
//! 1. Find the token table by the run `"0\0" "1\0" ... "9\0"`; walking the 208 strings
//!    from `'0'` gives its end, and the token index must follow (after alignment) with
//!    offsets that match the strings exactly. This fixes the table's start too.
//! 2. The markers end right before the token table, or before a `seqs_of_names` of 3N
//!    bytes. Markers are found by walking back over strictly decreasing values to the
//!    0 of `markers[0]`; for the `seqs_of_names` layout every N is tried, checking that
//!    `ceil(N / 256)` markers lie right before its 3N bytes.
//! 3. The names end where the markers start (plus padding); `kallsyms_num_syms` sits
//!    right before the names, so each candidate start whose preceding u32 is an N with
//!    `ceil(N / 256)` markers is checked by walking the last 256-symbol block to the end.
//!    In the `seqs_of_names` layout, N must also be the count `kallsyms_num_syms` gives.
//! 4. Every name is decoded; each 256th must start at its marker, each must expand to a
//!    known type letter and printable characters, and the walk must end exactly at the
//!    end of the names.
//! 5. Each addressing form above is tried at the places it can be; the one that gives
//!    non-decreasing addresses, `_text` at the kernel's first executable address and a
//!    `linux_banner` that reads "Linux version " is taken.
//!
//! Anything that does not decode consistently is an error: no garbage symbols.

use crate::error::{Error, Result};
use crate::kimage::{find, u16_at, u32_at, u64_at, KernelElf};
use crate::symbols::SymbolMap;
use vmi_core::profile::Symbol;

/// Most symbols accepted (Debian's 7.2 has about 200,000).
const MAX_SYMS: usize = 1 << 22;
/// Most token-table look-alikes, and markers candidates per token table, tried (a real
/// kernel has one of each; crafted input must not make the search quadratic).
const MAX_CANDIDATES: usize = 16;
/// Type letters kallsyms writes (nm's, lower case for local symbols).
const TYPES: &[u8] = b"AaBbCDdGgiNnpRrSsTtUuVvWw?";

/// What was found, for diagnostics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// File offset of `kallsyms_token_table`.
    pub token_table: usize,
    /// File offset of `kallsyms_token_index`.
    pub token_index: usize,
    /// File offset of `kallsyms_num_syms`.
    pub num_syms: usize,
    /// File offset of `kallsyms_names`.
    pub names: usize,
    /// File offset of `kallsyms_markers` and the marker width in bytes.
    pub markers: (usize, usize),
    /// File offset of `kallsyms_seqs_of_names`, when it lies before the token table.
    pub seqs_of_names: Option<usize>,
    /// Number of symbols.
    pub count: usize,
    /// How addresses are stored.
    pub addressing: Addressing,
}

/// How a kernel stores kallsyms addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// `relative_base + (u32)offset`.
    Relative {
        /// File offset of `kallsyms_offsets`.
        offsets: usize,
        /// File offset of `kallsyms_relative_base`.
        base_at: usize,
        /// `kallsyms_relative_base`.
        base: u64,
    },
    /// Absolute per-CPU values, others `relative_base - 1 - offset`.
    AbsolutePercpu {
        /// File offset of `kallsyms_offsets`.
        offsets: usize,
        /// File offset of `kallsyms_relative_base`.
        base_at: usize,
        /// `kallsyms_relative_base`.
        base: u64,
    },
    /// `&offsets[i] + offsets[i]`.
    PcRelative {
        /// File offset of `kallsyms_offsets`.
        offsets: usize,
    },
    /// `kallsyms_addresses[i]`.
    Absolute {
        /// File offset of `kallsyms_addresses`.
        addresses: usize,
    },
}

/// Recovered symbols in kallsyms order (by address): `(name, address, type letter)`.
pub type Entries = Vec<(String, u64, char)>;

fn fail(message: impl Into<String>) -> Error {
    Error::Input {
        path: "kallsyms".into(),
        message: message.into(),
    }
}

/// Recover the symbols of `elf` as a [`SymbolMap`] (first occurrence of a name wins, as
/// in the kernel's own lookups and in System.map order).
///
/// Some kernels (5.10, 6.1) leave the kallsyms tables' own symbols out of kallsyms; the
/// tables just found are added under their names where missing, with the type letter
/// `D` that `nm` gives them in every System.map of the supported kernels.
pub fn symbols(elf: &KernelElf<'_>) -> Result<(SymbolMap, Layout)> {
    let (entries, layout) = recover(elf)?;
    let mut map = SymbolMap::new();
    for (name, address, kind) in entries {
        map.entry(name).or_insert(Symbol {
            address,
            kind: kind.to_string(),
        });
    }
    for (name, offset) in layout.tables() {
        if let Some(address) = elf.vaddr_of(offset) {
            map.entry(name.to_string()).or_insert(Symbol {
                address,
                kind: "D".into(),
            });
        }
    }
    Ok((map, layout))
}

impl Layout {
    /// The kallsyms tables found: `(symbol name, file offset)`.
    pub fn tables(&self) -> Vec<(&'static str, usize)> {
        let mut t = vec![
            ("kallsyms_token_table", self.token_table),
            ("kallsyms_token_index", self.token_index),
            ("kallsyms_names", self.names),
            ("kallsyms_markers", self.markers.0),
            ("kallsyms_num_syms", self.num_syms),
        ];
        if let Some(seqs) = self.seqs_of_names {
            t.push(("kallsyms_seqs_of_names", seqs));
        }
        match self.addressing {
            Addressing::Relative {
                offsets, base_at, ..
            }
            | Addressing::AbsolutePercpu {
                offsets, base_at, ..
            } => {
                t.push(("kallsyms_offsets", offsets));
                t.push(("kallsyms_relative_base", base_at));
            }
            Addressing::PcRelative { offsets } => t.push(("kallsyms_offsets", offsets)),
            Addressing::Absolute { addresses } => t.push(("kallsyms_addresses", addresses)),
        }
        t
    }
}

/// Recover every symbol of `elf`, in kallsyms order.
pub fn recover(elf: &KernelElf<'_>) -> Result<(Entries, Layout)> {
    let d = elf.data;
    let digits = b"0\x001\x002\x003\x004\x005\x006\x007\x008\x009\x00";
    let mut from = 0;
    let mut last_error = None;
    let mut tried = 0;
    while let Some(pos) = find(&d[from..], digits) {
        let q = from + pos;
        from = q + 1;
        let Some((table, index)) = token_table_at(d, q) else {
            continue;
        };
        tried += 1;
        if tried > MAX_CANDIDATES {
            break;
        }
        match from_token_table(elf, table, index) {
            Ok(r) => return Ok(r),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        fail("no kallsyms token table in the kernel: it was built without CONFIG_KALLSYMS, or this is not a Linux kernel. Give the System.map (or /proc/kallsyms) with it")
    }))
}

/// Check for a token table whose token `'0'` is at `q`; returns (table, index) offsets.
fn token_table_at(d: &[u8], q: usize) -> Option<(usize, usize)> {
    // walk tokens 0x30..=0xff
    let mut end = q;
    for _ in 0x30..=0xff {
        let len = d.get(end..)?.iter().take(256).position(|&b| b == 0)?;
        if len == 0 {
            return None;
        }
        end += len + 1;
    }
    for align in [2usize, 4, 8] {
        let index = end.div_ceil(align) * align;
        if d.get(end..index)?.iter().any(|&b| b != 0) {
            continue;
        }
        let idx: Option<Vec<u16>> = (0..256).map(|i| u16_at(d, index + 2 * i)).collect();
        let idx = idx?;
        if idx[0] != 0 {
            continue;
        }
        let Some(table) = q.checked_sub(usize::from(idx[0x30])) else {
            continue;
        };
        let consistent = (0..256).all(|i| {
            let start = table + usize::from(idx[i]);
            let Some(len) = d
                .get(start..)
                .and_then(|s| s.iter().take(256).position(|&b| b == 0))
            else {
                return false;
            };
            let next = start + len + 1;
            len > 0
                && if i == 255 {
                    next == end
                } else {
                    table + usize::from(idx[i + 1]) == next
                }
        });
        if consistent {
            return Some((table, index));
        }
    }
    None
}

struct Tokens<'d> {
    tokens: Vec<&'d [u8]>,
}

impl<'d> Tokens<'d> {
    fn new(d: &'d [u8], table: usize, index: usize) -> Option<Tokens<'d>> {
        let mut tokens = Vec::with_capacity(256);
        for i in 0..256 {
            let start = table + usize::from(u16_at(d, index + 2 * i)?);
            let len = d.get(start..)?.iter().position(|&b| b == 0)?;
            tokens.push(&d[start..start + len]);
        }
        Some(Tokens { tokens })
    }
}

/// Read one names entry at `at`: (token bytes, next offset).
fn entry(d: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let b0 = *d.get(at)?;
    let (len, start) = if b0 & 0x80 != 0 {
        let b1 = *d.get(at + 1)?;
        (usize::from(b0 & 0x7f) | usize::from(b1) << 7, at + 2)
    } else {
        (usize::from(b0), at + 1)
    };
    if len == 0 {
        return None;
    }
    Some((d.get(start..start + len)?, start + len))
}

/// Markers that end at `end` (before padding): (start, width, values).
fn markers_ending_at(d: &[u8], end: usize) -> Vec<(usize, usize, Vec<u64>)> {
    let mut out = Vec::new();
    for width in [4usize, 8] {
        let read = |o: usize| {
            if width == 4 {
                u32_at(d, o).map(u64::from)
            } else {
                u64_at(d, o)
            }
        };
        let mut e = end / width * width;
        // skip alignment padding (the last marker is never 0 when there are two or more)
        while e >= width && end - e < 8 && read(e - width) == Some(0) {
            e -= width;
        }
        let mut values = Vec::new();
        let mut at = e;
        let mut prev = u64::MAX;
        while at >= width && values.len() <= MAX_SYMS / 256 {
            let Some(v) = read(at - width) else { break };
            if v >= prev {
                break;
            }
            values.push(v);
            prev = v;
            at -= width;
            if v == 0 {
                break;
            }
        }
        if values.len() >= 2 && values.last() == Some(&0) {
            values.reverse();
            out.push((at, width, values));
        }
    }
    out
}

fn from_token_table(elf: &KernelElf<'_>, table: usize, index: usize) -> Result<(Entries, Layout)> {
    let d = elf.data;
    let tokens = Tokens::new(d, table, index).ok_or_else(|| fail("token table unreadable"))?;
    // markers right before the token table ...
    let direct = markers_ending_at(d, table);
    let mut last = fail("the kallsyms markers before the token table could not be found");
    for (mstart, width, markers) in direct {
        let found = Found {
            table,
            index,
            mstart,
            width,
            seqs: None,
        };
        match layout_from_markers(elf, &tokens, &found, &markers) {
            Ok(r) => return Ok(r),
            Err(e) => last = e,
        }
    }
    // ... or before seqs_of_names (3 bytes per symbol)
    let mut candidates = Vec::new();
    for n in 512..=MAX_SYMS.min(table / 3) {
        let m = n.div_ceil(256);
        let raw = table - 3 * n;
        for align in [4usize, 8] {
            let s = raw / align * align;
            if table - s - 3 * n >= 8 || (align == 8 && s == raw / 4 * 4) {
                continue;
            }
            // its last entry is a symbol number (24-bit big-endian) below n
            let last = d
                .get(s + 3 * n - 3..s + 3 * n)
                .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]));
            if last.is_none_or(|v| v >= n) {
                continue;
            }
            for pad in [0usize, 4] {
                let Some(end) = s.checked_sub(pad) else {
                    continue;
                };
                let Some(start) = end.checked_sub(4 * m) else {
                    continue;
                };
                if u32_at(d, start) != Some(0) {
                    continue;
                }
                let mut prev = 0u32;
                let increasing = (1..m).all(|k| match u32_at(d, start + 4 * k) {
                    Some(v) if v > prev => {
                        prev = v;
                        true
                    }
                    _ => false,
                });
                if increasing && candidates.len() < MAX_CANDIDATES {
                    let values: Vec<u64> = (0..m)
                        .filter_map(|k| u32_at(d, start + 4 * k).map(u64::from))
                        .collect();
                    candidates.push((start, values, (s, n)));
                }
            }
        }
    }
    for (mstart, markers, seqs) in candidates {
        let found = Found {
            table,
            index,
            mstart,
            width: 4,
            seqs: Some(seqs),
        };
        match layout_from_markers(elf, &tokens, &found, &markers) {
            Ok(r) => return Ok(r),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Where the tables found so far are.
struct Found {
    table: usize,
    index: usize,
    /// start and width of the markers
    mstart: usize,
    width: usize,
    /// start and symbol count of `kallsyms_seqs_of_names` when it lies before the token
    /// table
    seqs: Option<(usize, usize)>,
}

fn layout_from_markers(
    elf: &KernelElf<'_>,
    tokens: &Tokens<'_>,
    f: &Found,
    markers: &[u64],
) -> Result<(Entries, Layout)> {
    let (names, count) = names_before(elf, f.mstart, markers)?;
    if let Some((_, n)) = f.seqs {
        if n != count {
            return Err(fail(format!(
                "kallsyms_seqs_of_names holds {n} entries but kallsyms_num_syms says {count}"
            )));
        }
    }
    let (entries, addressing, num_syms) =
        decode(elf, tokens, names, count, markers, f.mstart, f.index)?;
    Ok((
        entries,
        Layout {
            token_table: f.table,
            token_index: f.index,
            num_syms,
            names,
            markers: (f.mstart, f.width),
            seqs_of_names: f.seqs.map(|(s, _)| s),
            count,
            addressing,
        },
    ))
}

/// Find `kallsyms_names` (start, N) that ends at the markers at `mstart`.
fn names_before(elf: &KernelElf<'_>, mstart: usize, markers: &[u64]) -> Result<(usize, usize)> {
    let d = elf.data;
    let m = markers.len();
    let last_block = usize::try_from(markers[m - 1]).map_err(|_| fail("marker too large"))?;
    // the last block holds 1..=256 entries of 2..=(2 + 0x3fff) bytes; real ones are short
    let newest = mstart
        .checked_sub(last_block + 2)
        .ok_or_else(|| fail("markers point before the image"))?;
    let oldest = newest.saturating_sub(256 * 512);
    let mut s = newest;
    while s > oldest {
        for gap in [4usize, 8] {
            let Some(n) = s.checked_sub(gap).and_then(|p| u32_at(d, p)) else {
                continue;
            };
            let n = n as usize;
            if n == 0 || n > MAX_SYMS || n.div_ceil(256) != m {
                continue;
            }
            if gap == 8 && u32_at(d, s - 4) != Some(0) {
                continue;
            }
            // walk the last block to the end of the names
            let mut at = s + last_block;
            let mut ok = true;
            for _ in 0..n - 256 * (m - 1) {
                match entry(d, at) {
                    Some((_, next)) => at = next,
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok && at <= mstart && mstart - at < 8 && d[at..mstart].iter().all(|&b| b == 0) {
                return Ok((s, n));
            }
        }
        s -= 1;
    }
    Err(fail(
        "kallsyms_names and kallsyms_num_syms before the markers could not be found",
    ))
}

fn decode(
    elf: &KernelElf<'_>,
    tokens: &Tokens<'_>,
    names: usize,
    count: usize,
    markers: &[u64],
    names_end: usize,
    index: usize,
) -> Result<(Entries, Addressing, usize)> {
    let d = elf.data;
    let mut expanded: Vec<(String, char)> = Vec::with_capacity(count);
    let mut at = names;
    let mut buf = Vec::with_capacity(512);
    for i in 0..count {
        if i % 256 == 0 && (at - names) as u64 != markers[i / 256] {
            return Err(fail(format!(
                "symbol {i} is at names+{:#x} but its marker says {:#x}",
                at - names,
                markers[i / 256]
            )));
        }
        let (toks, next) = entry(d, at).ok_or_else(|| fail(format!("symbol {i} truncated")))?;
        buf.clear();
        for &t in toks {
            buf.extend_from_slice(tokens.tokens[usize::from(t)]);
        }
        let (&kind, name) = buf
            .split_first()
            .ok_or_else(|| fail(format!("symbol {i} is empty")))?;
        if !TYPES.contains(&kind)
            || name.is_empty()
            || name.len() > 1024
            || !name.iter().all(|&b| (0x21..0x7f).contains(&b))
        {
            return Err(fail(format!(
                "symbol {i} does not decode to a type letter and a printable name ({:?})",
                String::from_utf8_lossy(&buf)
            )));
        }
        // names are ASCII here
        expanded.push((String::from_utf8_lossy(name).into_owned(), kind as char));
        at = next;
    }
    if at > names_end || d[at..names_end].iter().any(|&b| b != 0) {
        return Err(fail("kallsyms_names does not end at the markers"));
    }
    let num_syms_at = names
        - if u32_at(d, names - 4) == Some(count as u32) {
            4
        } else {
            8
        };
    let mut forms = Vec::new();
    let after_index = index + 512;
    for align in [4usize, 8] {
        let off = after_index.div_ceil(align) * align;
        forms.push(Addressing::PcRelative { offsets: off });
        let b = (off + 4 * count).div_ceil(8) * 8;
        if let Some(base) = u64_at(d, b) {
            relative_forms(&mut forms, off, b, base);
        }
    }
    // older order: offsets, relative base, num_syms
    if let Some(b) = (num_syms_at / 8 * 8).checked_sub(8) {
        if let Some(base) = u64_at(d, b) {
            for pad in [0usize, 4] {
                if let Some(off) = b.checked_sub(4 * count + pad) {
                    relative_forms(&mut forms, off, b, base);
                }
            }
        }
        for pad in [0usize, 4] {
            if let Some(a) = (num_syms_at / 8 * 8).checked_sub(8 * count + pad) {
                forms.push(Addressing::Absolute { addresses: a });
            }
        }
    }
    let text = elf
        .text_address()
        .ok_or_else(|| fail("the kernel has no executable segment"))?;
    for form in forms {
        let Some(addrs) = addresses(elf, form, count) else {
            continue;
        };
        if !addrs.windows(2).all(|w| w[0] <= w[1]) {
            continue;
        }
        let find = |n: &str| expanded.iter().position(|(s, _)| s == n).map(|i| addrs[i]);
        if find("_text") != Some(text) {
            continue;
        }
        let banner_ok = find("linux_banner")
            .and_then(|a| elf.string_at(a, 1024))
            .is_some_and(|s| s.starts_with(b"Linux version "));
        if !banner_ok {
            continue;
        }
        let entries = expanded
            .into_iter()
            .zip(addrs)
            .map(|((name, kind), a)| (name, a, kind))
            .collect();
        return Ok((entries, form, num_syms_at));
    }
    Err(fail(format!(
        "{count} symbol names decoded, but no kallsyms address table gives sorted addresses with _text at {text:#x} and linux_banner at \"Linux version\""
    )))
}

/// Both base-relative forms with offsets at `offsets` and the base at `base_at`.
fn relative_forms(forms: &mut Vec<Addressing>, offsets: usize, base_at: usize, base: u64) {
    forms.push(Addressing::AbsolutePercpu {
        offsets,
        base_at,
        base,
    });
    forms.push(Addressing::Relative {
        offsets,
        base_at,
        base,
    });
}

fn addresses(elf: &KernelElf<'_>, form: Addressing, count: usize) -> Option<Vec<u64>> {
    let d = elf.data;
    let mut out = Vec::with_capacity(count);
    match form {
        Addressing::Relative { offsets, base, .. } => {
            for i in 0..count {
                out.push(base.wrapping_add(u64::from(u32_at(d, offsets + 4 * i)?)));
            }
        }
        Addressing::AbsolutePercpu { offsets, base, .. } => {
            for i in 0..count {
                let v = u32_at(d, offsets + 4 * i)? as i32;
                out.push(if v >= 0 {
                    v as u64
                } else {
                    base.wrapping_sub(1).wrapping_sub(i64::from(v) as u64)
                });
            }
        }
        Addressing::PcRelative { offsets } => {
            let at = elf.vaddr_of(offsets)?;
            for i in 0..count {
                let v = u32_at(d, offsets + 4 * i)? as i32;
                out.push(
                    at.wrapping_add(4 * i as u64)
                        .wrapping_add(i64::from(v) as u64),
                );
            }
        }
        Addressing::Absolute { addresses } => {
            for i in 0..count {
                out.push(u64_at(d, addresses + 8 * i)?);
            }
        }
    }
    Some(out)
}
