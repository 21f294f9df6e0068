//! VMCOREINFO: the `KEY=VALUE` text a Linux kernel publishes for crash tools (its
//! release, symbol addresses, struct offsets, the KASLR offset), as found in ELF cores
//! (a `VMCOREINFO` note) or in guest memory.
//!
//! The text comes from the guest: parsing is bounded (at most [`VmcoreInfo::MAX_BYTES`]
//! bytes and [`VmcoreInfo::MAX_ENTRIES`] entries) and never fails; lines that are not
//! `KEY=VALUE` are skipped.

use std::fmt;

/// Parsed VMCOREINFO text.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct VmcoreInfo {
    entries: Vec<(String, String)>,
}

impl fmt::Debug for VmcoreInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmcoreInfo")
            .field("osrelease", &self.osrelease())
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl VmcoreInfo {
    /// Bytes parsed at most (the kernel's buffer is one page).
    pub const MAX_BYTES: usize = 64 * 1024;
    /// Entries kept at most.
    pub const MAX_ENTRIES: usize = 4096;

    /// Parse the text (up to the first NUL, at most [`VmcoreInfo::MAX_BYTES`]).
    pub fn parse(bytes: &[u8]) -> VmcoreInfo {
        let bytes = &bytes[..bytes.len().min(Self::MAX_BYTES)];
        let bytes = bytes.split(|&b| b == 0).next().unwrap_or_default();
        let text = String::from_utf8_lossy(bytes);
        let entries = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| !k.is_empty())
            .take(Self::MAX_ENTRIES)
            .map(|(k, v)| (k.to_string(), v.trim_end().to_string()))
            .collect();
        VmcoreInfo { entries }
    }

    /// Every `(key, value)` in order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of `key` (the first one, if repeated).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `OSRELEASE`: the `uname -r` string.
    pub fn osrelease(&self) -> Option<&str> {
        self.get("OSRELEASE")
    }

    /// `KERNELOFFSET`: the KASLR virtual offset of the kernel image (hex).
    pub fn kernel_offset(&self) -> Option<u64> {
        self.hex("KERNELOFFSET")
    }

    /// `SYMBOL(name)`: a symbol's run-time address (hex).
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.hex(&format!("SYMBOL({name})"))
    }

    /// `OFFSET(type.field)`: a field offset (decimal).
    pub fn offset(&self, type_field: &str) -> Option<u64> {
        self.dec(&format!("OFFSET({type_field})"))
    }

    /// `SIZE(type)`: a type's size (decimal).
    pub fn size(&self, name: &str) -> Option<u64> {
        self.dec(&format!("SIZE({name})"))
    }

    /// `NUMBER(name)`: a constant (decimal, may be negative).
    pub fn number(&self, name: &str) -> Option<i64> {
        self.get(&format!("NUMBER({name})"))?.parse().ok()
    }

    /// `PAGESIZE`.
    pub fn page_size(&self) -> Option<u64> {
        self.dec("PAGESIZE")
    }

    fn hex(&self, key: &str) -> Option<u64> {
        let v = self.get(key)?;
        let v = v.strip_prefix("0x").unwrap_or(v);
        u64::from_str_radix(v, 16).ok()
    }

    fn dec(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }
}

/// Find the kernel's VMCOREINFO page in guest memory (for sources without an ELF note:
/// raw, LiME, live). The kernel keeps it in a page of its own (`vmcoreinfo_data`, from
/// `get_zeroed_page`) that starts with `OSRELEASE=`, so only page starts are probed. A
/// page counts only if its text parses into `OSRELEASE`, `PAGESIZE` and `KERNELOFFSET`
/// (a stray `OSRELEASE=` string is not enough). Returns its address and contents.
pub fn find_in_memory<M: crate::memory::PhysicalMemory + ?Sized>(
    mem: &M,
) -> Option<(crate::addr::Pa, VmcoreInfo)> {
    find_all_in_memory(mem, 1).into_iter().next()
}

/// Every page that looks like VMCOREINFO (see [`find_in_memory`]), at most `max`, in
/// address order. A guest can plant look-alikes: callers that place the kernel by it
/// must check each candidate against the image it points to.
pub fn find_all_in_memory<M: crate::memory::PhysicalMemory + ?Sized>(
    mem: &M,
    max: usize,
) -> Vec<(crate::addr::Pa, VmcoreInfo)> {
    const KEY: &[u8] = b"OSRELEASE=";
    let mut found = Vec::new();
    let mut head = [0u8; 10];
    let mut page = vec![0u8; 4096];
    for range in mem.ranges() {
        let mut pa = range.start.0.next_multiple_of(4096);
        while pa + 4096 <= range.end.0 {
            let at = crate::addr::Pa(pa);
            if mem.read_phys(at, &mut head).is_ok()
                && head == KEY
                && mem.read_phys(at, &mut page).is_ok()
            {
                let v = VmcoreInfo::parse(&page);
                if v.osrelease().is_some() && v.page_size().is_some() && v.kernel_offset().is_some()
                {
                    found.push((at, v));
                    if found.len() >= max {
                        return found;
                    }
                }
            }
            pa += 4096;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_text() {
        let text = b"OSRELEASE=6.1.0-56-amd64\nBUILD-ID=abc\nPAGESIZE=4096\nSYMBOL(init_uts_ns)=ffffffff9b213800\nOFFSET(list_head.next)=0\nSIZE(list_head)=16\nNUMBER(phys_base)=-2013265920\nKERNELOFFSET=1a000000\nnot a line\n=novalue\n\0garbage=1\n";
        let v = VmcoreInfo::parse(text);
        assert_eq!(v.osrelease(), Some("6.1.0-56-amd64"));
        assert_eq!(v.page_size(), Some(4096));
        assert_eq!(v.symbol("init_uts_ns"), Some(0xffff_ffff_9b21_3800));
        assert_eq!(v.offset("list_head.next"), Some(0));
        assert_eq!(v.size("list_head"), Some(16));
        assert_eq!(v.number("phys_base"), Some(-2013265920));
        assert_eq!(v.kernel_offset(), Some(0x1a00_0000));
        assert_eq!(v.get("garbage"), None);
        assert_eq!(v.entries().count(), 8);
    }

    #[test]
    fn bounded() {
        let big = "K=V\n".repeat(100_000);
        let v = VmcoreInfo::parse(big.as_bytes());
        assert_eq!(v.entries().count(), VmcoreInfo::MAX_ENTRIES);
        let v = VmcoreInfo::parse(&[0xff; 100]);
        assert_eq!(v.entries().count(), 0);
    }
}
