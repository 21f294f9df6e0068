//! Where guest RAM is in QEMU's RAM file, from `info mtree -f`. The lab parses it on its
//! own, not with vmi-core's parser: the lab is the oracle for the code under test.

/// One range of guest-physical RAM and where it is in the RAM file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamRange {
    /// First guest-physical address.
    pub start: u64,
    /// One past the last guest-physical address.
    pub end: u64,
    /// Offset of `start` in the RAM file.
    pub file_offset: u64,
}

/// Parse the RAM ranges backed by `backend` from `info mtree -f` (the flat view of the
/// "memory" address space), merging ranges that are contiguous in both address spaces.
pub fn parse_memory_map(mtree: &str, backend: &str) -> Vec<RamRange> {
    let mut ranges: Vec<RamRange> = Vec::new();
    let mut in_memory_view = false;
    for line in mtree.lines() {
        let t = line.trim();
        if t.starts_with("FlatView") {
            in_memory_view = false;
            continue;
        }
        if t.starts_with("AS \"memory\"") {
            in_memory_view = true;
            continue;
        }
        if !in_memory_view {
            continue;
        }
        // 0000000000100000-000000003fffffff (prio 0, ram): lab-ram @0000000000100000
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
        if !(kind.ends_with("ram") || kind.ends_with("rom")) {
            continue;
        }
        let mut words = name.split_whitespace();
        if words.next() != Some(backend) {
            continue;
        }
        let offset = words
            .next()
            .and_then(|w| w.strip_prefix('@'))
            .and_then(|w| u64::from_str_radix(w, 16).ok())
            .unwrap_or(0);
        let r = RamRange {
            start,
            end: last + 1,
            file_offset: offset,
        };
        match ranges.last_mut() {
            Some(prev)
                if prev.end == r.start
                    && prev.file_offset + (prev.end - prev.start) == r.file_offset =>
            {
                prev.end = r.end;
            }
            _ => ranges.push(r),
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTREE: &str = "FlatView #0\n AS \"memory\", root: system\n AS \"cpu-memory-0\", root: system\n Root memory region: system\n  0000000000000000-000000000009ffff (prio 0, ram): lab-ram\n  00000000000a0000-00000000000bffff (prio 1, i/o): vga-lowmem\n  00000000000c0000-00000000000cafff (prio 0, rom): lab-ram @00000000000c0000\n  00000000000cb000-00000000000cdfff (prio 0, ram): lab-ram @00000000000cb000\n  0000000000100000-000000003fffffff (prio 0, ram): lab-ram @0000000000100000\n  0000000100000000-000000013fffffff (prio 0, ram): lab-ram @00000000c0000000\n  00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios\n\nFlatView #1\n AS \"cpu-smm-0\", root: memory\n  0000000000000000-00000000000bffff (prio 0, ram): lab-ram\n";

    #[test]
    fn memory_map_from_mtree() {
        let m = parse_memory_map(MTREE, "lab-ram");
        assert_eq!(
            m,
            vec![
                RamRange {
                    start: 0,
                    end: 0xa0000,
                    file_offset: 0
                },
                RamRange {
                    start: 0xc0000,
                    end: 0xce000,
                    file_offset: 0xc0000
                },
                RamRange {
                    start: 0x100000,
                    end: 0x40000000,
                    file_offset: 0x100000
                },
                RamRange {
                    start: 0x1_0000_0000,
                    end: 0x1_4000_0000,
                    file_offset: 0xc000_0000
                },
            ]
        );
    }
}
