//! The decompressed kernel of a boot image (`vmlinux.bin`: a symbol-less vmlinux ELF),
//! or a vmlinux, read through its ELF program headers.
//!
//! Program headers sit at the start of the file, so a *prefix* of the kernel is enough:
//! [`KernelElf::needed_len`] says how much to decompress (the read-only segments, which
//! hold `.rodata` with kallsyms and the banner, the notes and `.BTF`). Section headers
//! are at the end of the file and are used only when present in the bytes given.

use crate::error::{Error, Result};

/// One loadable segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Virtual address of the first byte.
    pub vaddr: u64,
    /// Offset in the file.
    pub offset: u64,
    /// Bytes in the file.
    pub filesz: u64,
    /// Executable.
    pub exec: bool,
    /// Writable.
    pub write: bool,
}

/// A 64-bit little-endian ELF kernel, possibly only its first bytes.
#[derive(Debug)]
pub struct KernelElf<'a> {
    /// The bytes (a prefix of the file, or all of it).
    pub data: &'a [u8],
    /// Loadable segments in file order.
    pub segments: Vec<Segment>,
    notes: Vec<(u64, u64)>,
    shoff: u64,
    shnum: u16,
    shentsize: u16,
    shstrndx: u16,
}

fn bad(message: String) -> Error {
    Error::Input {
        path: "kernel ELF".into(),
        message,
    }
}

/// A little-endian `u16` at `o`, if `d` holds it.
pub(crate) fn u16_at(d: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        d.get(o..o.checked_add(2)?)?.try_into().ok()?,
    ))
}
/// A little-endian `u32` at `o`, if `d` holds it.
pub(crate) fn u32_at(d: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        d.get(o..o.checked_add(4)?)?.try_into().ok()?,
    ))
}
/// A little-endian `u64` at `o`, if `d` holds it.
pub(crate) fn u64_at(d: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        d.get(o..o.checked_add(8)?)?.try_into().ok()?,
    ))
}

impl<'a> KernelElf<'a> {
    /// Read the ELF and program headers at the start of `data`.
    pub fn parse(data: &'a [u8]) -> Result<KernelElf<'a>> {
        if !data.starts_with(b"\x7fELF") {
            return Err(bad(format!(
                "the decompressed kernel is not an ELF file (first bytes {:02x?})",
                &data[..data.len().min(8)]
            )));
        }
        if data.get(4) != Some(&2) || data.get(5) != Some(&1) {
            return Err(bad(
                "only 64-bit little-endian (x86-64) kernels are supported".into(),
            ));
        }
        let trunc = || bad("ELF header truncated".into());
        let phoff = u64_at(data, 0x20).ok_or_else(trunc)? as usize;
        let shoff = u64_at(data, 0x28).ok_or_else(trunc)?;
        let phentsize = usize::from(u16_at(data, 0x36).ok_or_else(trunc)?);
        let phnum = usize::from(u16_at(data, 0x38).ok_or_else(trunc)?);
        let shentsize = u16_at(data, 0x3a).ok_or_else(trunc)?;
        let shnum = u16_at(data, 0x3c).ok_or_else(trunc)?;
        let shstrndx = u16_at(data, 0x3e).ok_or_else(trunc)?;
        if phentsize < 56 || phnum > 64 {
            return Err(bad(format!(
                "{phnum} program headers of {phentsize} bytes: not a kernel"
            )));
        }
        let mut segments = Vec::new();
        let mut notes = Vec::new();
        for i in 0..phnum {
            let at = phoff.saturating_add(i * phentsize);
            let field = |off: usize| at.saturating_add(off);
            let (Some(kind), Some(flags), Some(offset), Some(vaddr), Some(filesz)) = (
                u32_at(data, at),
                u32_at(data, field(4)),
                u64_at(data, field(8)),
                u64_at(data, field(16)),
                u64_at(data, field(32)),
            ) else {
                return Err(bad("program headers truncated".into()));
            };
            match kind {
                1 => segments.push(Segment {
                    vaddr,
                    offset,
                    filesz,
                    exec: flags & 1 != 0,
                    write: flags & 2 != 0,
                }),
                4 => notes.push((offset, filesz)),
                _ => {}
            }
        }
        if segments.is_empty() {
            return Err(bad("no loadable segments".into()));
        }
        Ok(KernelElf {
            data,
            segments,
            notes,
            shoff,
            shnum,
            shentsize,
            shstrndx,
        })
    }

    /// A kernel image as it lies in memory (read from a running guest): `data` starts at
    /// `_text`, whose run-time virtual address is `text_vaddr`, and is one executable
    /// segment (no ELF headers, no notes, no section headers).
    pub fn from_image(data: &'a [u8], text_vaddr: u64) -> KernelElf<'a> {
        KernelElf {
            data,
            segments: vec![Segment {
                vaddr: text_vaddr,
                offset: 0,
                filesz: data.len() as u64,
                exec: true,
                write: false,
            }],
            notes: Vec::new(),
            shoff: 0,
            shnum: 0,
            shentsize: 0,
            shstrndx: 0,
        }
    }

    /// Bytes of the file that hold the read-only segments (text, rodata, notes, BTF):
    /// everything up to the end of the last non-writable segment.
    pub fn needed_len(&self) -> usize {
        let ro = self
            .segments
            .iter()
            .filter(|s| !s.write)
            .map(|s| s.offset.saturating_add(s.filesz))
            .max();
        // (the caller caps what it decompresses)
        let notes = self.notes.iter().map(|(o, l)| o.saturating_add(*l)).max();
        ro.max(notes).unwrap_or(0).min(usize::MAX as u64) as usize
    }

    /// The virtual address of the kernel's first executable byte (`_text`).
    pub fn text_address(&self) -> Option<u64> {
        self.segments.iter().find(|s| s.exec).map(|s| s.vaddr)
    }

    /// The file offset of a virtual address, when its bytes are in the file.
    pub fn offset_of(&self, vaddr: u64) -> Option<usize> {
        let s = self
            .segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz)?;
        usize::try_from(s.offset.checked_add(vaddr - s.vaddr)?).ok()
    }

    /// The virtual address of a file offset inside a loadable segment.
    pub fn vaddr_of(&self, offset: usize) -> Option<u64> {
        let o = offset as u64;
        let s = self
            .segments
            .iter()
            .find(|s| o >= s.offset && o - s.offset < s.filesz)?;
        s.vaddr.checked_add(o - s.offset)
    }

    /// The NUL-terminated string at a virtual address (at most `max` bytes).
    pub fn string_at(&self, vaddr: u64, max: usize) -> Option<&'a [u8]> {
        let off = self.offset_of(vaddr)?;
        let tail = self.data.get(off..)?;
        let end = tail.iter().take(max).position(|&b| b == 0)?;
        Some(&tail[..end])
    }

    /// The GNU build-id from the note segments, lowercase hex.
    pub fn build_id(&self) -> Option<String> {
        for &(offset, len) in &self.notes {
            let start = usize::try_from(offset).ok()?;
            let notes = self
                .data
                .get(start..start.checked_add(usize::try_from(len).ok()?)?)?;
            let mut at = 0usize;
            while at + 12 <= notes.len() {
                let namesz = u32_at(notes, at)? as usize;
                let descsz = u32_at(notes, at + 4)? as usize;
                let kind = u32_at(notes, at + 8)?;
                let name_at = at + 12;
                let desc_at = name_at.checked_add(namesz.checked_add(3)? & !3)?;
                let next = desc_at.checked_add(descsz.checked_add(3)? & !3)?;
                if kind == 3 && notes.get(name_at..name_at.checked_add(namesz)?) == Some(b"GNU\0") {
                    let id = notes.get(desc_at..desc_at.checked_add(descsz)?)?;
                    return Some(hex::encode(id));
                }
                at = next;
            }
        }
        None
    }

    /// True when the section headers are within `data`.
    pub fn has_section_headers(&self) -> bool {
        let len = u64::from(self.shnum) * u64::from(self.shentsize);
        self.shentsize >= 64
            && self.shnum > 0
            && self
                .shoff
                .checked_add(len)
                .is_some_and(|end| end <= self.data.len() as u64)
    }

    /// The bytes of the named section, when the section headers are in `data`.
    pub fn section(&self, name: &str) -> Option<&'a [u8]> {
        let entsize = usize::from(self.shentsize);
        if !self.has_section_headers() {
            return None;
        }
        let shoff = usize::try_from(self.shoff).ok()?;
        let header = |i: usize| -> Option<(u32, u64, u64)> {
            let at = shoff.checked_add(i.checked_mul(entsize)?)?;
            Some((
                u32_at(self.data, at)?,
                u64_at(self.data, at.checked_add(24)?)?,
                u64_at(self.data, at.checked_add(32)?)?,
            ))
        };
        let (_, str_off, str_size) = header(usize::from(self.shstrndx))?;
        let strtab = self.data.get(
            usize::try_from(str_off).ok()?..usize::try_from(str_off.checked_add(str_size)?).ok()?,
        )?;
        for i in 0..usize::from(self.shnum) {
            let (name_off, off, size) = header(i)?;
            let n = strtab.get(name_off as usize..)?;
            let end = n.iter().position(|&b| b == 0)?;
            if &n[..end] == name.as_bytes() {
                let start = usize::try_from(off).ok()?;
                return self
                    .data
                    .get(start..start.checked_add(usize::try_from(size).ok()?)?);
            }
        }
        None
    }

    /// The kernel's BTF: the `.BTF` section, or (section headers not read) the first
    /// well-formed BTF header in the read-only segments, sized by that header, whose
    /// string section starts and ends with a NUL as BTF's must.
    pub fn btf(&self) -> Option<&'a [u8]> {
        if self.has_section_headers() {
            return self.section(".BTF");
        }
        let header = [0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        for seg in self.segments.iter().filter(|s| !s.write) {
            let start = usize::try_from(seg.offset).ok()?;
            let end = start
                .saturating_add(usize::try_from(seg.filesz).ok()?)
                .min(self.data.len());
            let Some(hay) = self.data.get(start..end) else {
                continue;
            };
            let mut from = 0;
            while let Some(pos) = find(&hay[from..], &header) {
                let at = from + pos;
                let h = &hay[at..];
                let (Some(type_off), Some(type_len), Some(str_off), Some(str_len)) =
                    (u32_at(h, 8), u32_at(h, 12), u32_at(h, 16), u32_at(h, 20))
                else {
                    break;
                };
                let total = 24u64 + u64::from(str_off) + u64::from(str_len);
                if type_off == 0 && str_off == type_len && type_len > 0 && total <= h.len() as u64 {
                    return Some(&h[..total as usize]);
                }
                from = at + 1;
            }
        }
        None
    }
}

/// Position of `needle` in `hay`.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while from < hay.len() {
        let pos = hay[from..].iter().position(|&b| b == first)? + from;
        if hay.get(pos + 1..pos + 1 + rest.len()) == Some(rest) {
            return Some(pos);
        }
        from = pos + 1;
    }
    None
}
