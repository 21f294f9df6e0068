//! x86-64 translation against real page tables built in mock memory: random mappings
//! of 4 KiB, 2 MiB and 1 GiB pages under 4- and 5-level paging translate back, unmapped
//! addresses fail at the right level, reads cross pages, the translation cache
//! invalidates, and random page-table garbage never panics or loops.

use std::collections::HashSet;

use proptest::prelude::*;
use vmi_core::arch::x86_64::{
    translate, AddressSpace, Level, PageSize, PageTableBuilder, PageTableRoot, PagingMode,
    PTE_GLOBAL, PTE_NX, PTE_PRESENT, PTE_USER, PTE_WRITABLE,
};
use vmi_core::memory::{MockMemory, PhysRange, PhysicalMemory, VirtualMemory};
use vmi_core::{Pa, PhysError, ReadError, TranslateError, Va};

/// Page tables live here; data pages below.
const TABLES: PhysRange = PhysRange::new(0x4000_0000, 0x4100_0000);

fn sign_extend(v: u64, bits: u32) -> u64 {
    (((v << (64 - bits)) as i64) >> (64 - bits)) as u64
}

fn mode_of(five: bool) -> PagingMode {
    if five {
        PagingMode::FiveLevel
    } else {
        PagingMode::FourLevel
    }
}

#[derive(Debug, Clone)]
struct Mapping {
    va: u64,
    pa: u64,
    size: PageSize,
    flags: u64,
}

/// Regions of 1 GiB, each holding one 1 GiB page, or 2 MiB pages, or 4 KiB pages.
fn mappings(five: bool) -> impl Strategy<Value = Vec<Mapping>> {
    let bits = mode_of(five).va_bits();
    let region = (
        any::<u64>(),
        0u8..3,
        prop::collection::vec(any::<u64>(), 1..6),
    );
    prop::collection::vec(region, 1..12).prop_map(move |regions| {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (seed, kind, slots) in regions {
            let base = sign_extend((seed << 30) & ((1u64 << bits) - 1), bits);
            if !seen.insert(base) {
                continue;
            }
            let size = [PageSize::Size1G, PageSize::Size2M, PageSize::Size4K][kind as usize];
            let slots_per_region = (1u64 << 30) / size.bytes();
            let mut used = HashSet::new();
            for s in slots {
                let slot = s % slots_per_region;
                if !used.insert(slot) {
                    continue;
                }
                // physical frame anywhere in 52 bits, aligned to the page size
                let pa = (s.rotate_left(17) & 0x000f_ffff_ffff_f000) & !(size.bytes() - 1);
                // random access bits, and garbage in the high bits that must be masked
                let flags = (s & (PTE_WRITABLE | PTE_USER | PTE_GLOBAL))
                    | (s.rotate_left(7) & 0x7ff0_0000_0000_0000)
                    | (s & PTE_NX);
                out.push(Mapping {
                    va: base + slot * size.bytes(),
                    pa,
                    size,
                    flags,
                });
                if size == PageSize::Size1G {
                    break;
                }
            }
        }
        out
    })
}

fn build(five: bool, maps: &[Mapping]) -> (MockMemory, PageTableBuilder) {
    let mut mem = MockMemory::new(&[TABLES]);
    let mut b = PageTableBuilder::new(&mut mem, mode_of(five), TABLES).unwrap();
    for m in maps {
        b.map(&mut mem, Va(m.va), Pa(m.pa), m.size, m.flags)
            .unwrap();
    }
    (mem, b)
}

/// The level at which a walk for `va` finds a non-present entry, given the mappings
/// (tables exist exactly where a mapping needed them), or None when `va` is mapped.
fn expected_missing_level(mode: PagingMode, maps: &[Mapping], va: u64) -> Option<Level> {
    let low = |v: u64| v & ((1u64 << mode.va_bits()) - 1);
    for &level in mode.levels() {
        let present = maps.iter().any(|m| {
            m.size.level() <= level && low(m.va) >> level.shift() == low(va) >> level.shift()
        });
        if !present {
            return Some(level);
        }
        if maps.iter().any(|m| {
            m.size.level() == level && low(m.va) >> level.shift() == low(va) >> level.shift()
        }) {
            return None;
        }
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_mappings_translate_back(
        (five, maps) in any::<bool>().prop_flat_map(|five| (Just(five), mappings(five))),
        offsets in prop::collection::vec(any::<u64>(), 8),
        pcid in 0u64..0x1000,
        noflush in any::<bool>(),
    ) {
        let mode = mode_of(five);
        let (mem, b) = build(five, &maps);
        // PCID and the no-flush bit in CR3 do not change the root
        let cr3 = b.cr3() | pcid | if noflush { 1 << 63 } else { 0 };
        let root = PageTableRoot::from_cr3(cr3, mode);
        prop_assert_eq!(root, b.root());
        let space = AddressSpace::new(&mem, root);
        for m in &maps {
            for &o in &offsets {
                let off = o % m.size.bytes();
                let t = translate(&mem, root, Va(m.va + off)).unwrap();
                prop_assert_eq!(t.pa, Pa(m.pa + off));
                prop_assert_eq!(t.size, m.size);
                prop_assert_eq!(t.flags.writable, m.flags & PTE_WRITABLE != 0);
                prop_assert_eq!(t.flags.user, m.flags & PTE_USER != 0);
                prop_assert_eq!(t.flags.nx, m.flags & PTE_NX != 0);
                prop_assert_eq!(t.flags.global, m.flags & PTE_GLOBAL != 0);
                // twice through the cache: the same answer
                prop_assert_eq!(space.translate(Va(m.va + off)).unwrap(), t);
                prop_assert_eq!(space.translate(Va(m.va + off)).unwrap(), t);
            }
        }
    }

    #[test]
    fn unmapped_addresses_fail_at_the_right_level(
        (five, maps) in any::<bool>().prop_flat_map(|five| (Just(five), mappings(five))),
        probes in prop::collection::vec(any::<u64>(), 32),
    ) {
        let mode = mode_of(five);
        let (mem, b) = build(five, &maps);
        let bits = mode.va_bits();
        for (i, &p) in probes.iter().enumerate() {
            // half the probes near a mapping (same upper tables), half anywhere
            let va = match maps.get(i % maps.len().max(1)) {
                Some(m) if i % 2 == 0 => sign_extend(low_bits(m.va ^ (p & 0x3fff_ffff_ffff), bits), bits),
                _ => sign_extend(p & ((1u64 << bits) - 1), bits),
            };
            match (expected_missing_level(mode, &maps, va), translate(&mem, b.root(), Va(va))) {
                (None, r) => prop_assert!(r.is_ok(), "{:#x}: {:?}", va, r),
                (Some(level), Err(TranslateError::NotPresent { va: got, level: l, entry, .. })) => {
                    prop_assert_eq!(got, Va(va));
                    prop_assert_eq!(l, level);
                    prop_assert_eq!(entry, 0);
                }
                (Some(level), r) => prop_assert!(false, "{:#x}: expected not present at {}, got {:?}", va, level, r),
            }
        }
        // non-canonical addresses never walk
        let nc = (1u64 << bits) | 0x1000;
        prop_assert!(
            matches!(
                translate(&mem, b.root(), Va(nc)),
                Err(TranslateError::NonCanonical { .. })
            ),
            "{:#x} translated",
            nc
        );
    }

    #[test]
    fn page_table_garbage_never_panics(
        five in any::<bool>(),
        pages in prop::collection::vec(prop::collection::vec(any::<u64>(), 512), 1..6),
        cr3 in any::<u64>(),
        vas in prop::collection::vec(any::<u64>(), 64),
        lens in prop::collection::vec(0usize..20_000, 8),
    ) {
        // garbage tables in the first pages of a 64 KiB memory; entries point anywhere,
        // including back into the same tables
        let mut mem = MockMemory::with_size(0x10000);
        for (i, p) in pages.iter().enumerate() {
            for (j, e) in p.iter().enumerate() {
                // bias addresses into the small memory so walks go deep
                let e = if j % 3 == 0 { *e } else { (*e & !0x000f_ffff_ffff_f000) | ((*e % 16) << 12) };
                mem.write_u64(Pa((i * 4096 + j * 8) as u64), e).unwrap();
            }
        }
        // mostly a root inside the memory, sometimes anywhere
        let cr3 = if cr3 % 4 == 0 { cr3 } else { cr3 % 0x10000 };
        let root = PageTableRoot::from_cr3(cr3, mode_of(five));
        let space = AddressSpace::new(&mem, root);
        for &va in &vas {
            match translate(&mem, root, Va(va)) {
                Ok(t) => prop_assert!(t.pa.0 < 1 << 52),
                Err(e) => prop_assert_eq!(e.va(), Va(va)),
            }
        }
        for (&va, &len) in vas.iter().zip(&lens) {
            let mut buf = vec![0u8; len];
            if let Err(e) = space.read_virt(Va(va), &mut buf) {
                let ok = e.va().0 >= va || matches!(e, ReadError::Wrap { .. });
                prop_assert!(ok, "error before the start of the read: {}", e);
            }
            let _ = space.read_cstr(Va(va), 300);
        }
    }
}

fn low_bits(v: u64, bits: u32) -> u64 {
    v & ((1u64 << bits) - 1)
}

/// A byte pattern that depends on the physical address.
fn byte_at(pa: u64) -> u8 {
    (pa ^ (pa >> 8) ^ (pa >> 16) ^ (pa >> 24)) as u8
}

fn fill(mem: &mut MockMemory, pa: u64, len: u64) {
    let data: Vec<u8> = (pa..pa + len).map(byte_at).collect();
    mem.write(Pa(pa), &data).unwrap();
}

/// Virtual pages in order, mapped to scattered frames; reads crossing pages (and from a
/// 2 MiB page into a 4 KiB page) return the bytes of the right frames.
#[test]
fn reads_cross_pages_and_page_sizes() {
    for mode in [PagingMode::FourLevel, PagingMode::FiveLevel] {
        let mut mem = MockMemory::new(&[PhysRange::new(0, 0x80_0000), TABLES]);
        let mut b = PageTableBuilder::new(&mut mem, mode, TABLES).unwrap();
        let base = 0xffff_8880_0000_0000u64
            | if mode == PagingMode::FiveLevel {
                0xff00_0000_0000_0000
            } else {
                0
            };
        // a 2 MiB page at base, then 8 4 KiB pages after it, frames in reverse order
        b.map(
            &mut mem,
            Va(base),
            Pa(0x40_0000),
            PageSize::Size2M,
            PTE_WRITABLE,
        )
        .unwrap();
        fill(&mut mem, 0x40_0000, 0x20_0000);
        let frames: Vec<u64> = (0..8).map(|i| 0x10_0000 + (7 - i) * 0x3000).collect();
        for (i, &f) in frames.iter().enumerate() {
            b.map(
                &mut mem,
                Va(base + 0x20_0000 + i as u64 * 0x1000),
                Pa(f),
                PageSize::Size4K,
                0,
            )
            .unwrap();
            fill(&mut mem, f, 0x1000);
        }
        let expected = |va: u64| -> u8 {
            let off = va - base;
            if off < 0x20_0000 {
                byte_at(0x40_0000 + off)
            } else {
                let i = (off - 0x20_0000) / 0x1000;
                byte_at(frames[i as usize] + off % 0x1000)
            }
        };
        let space = AddressSpace::new(&mem, b.root());
        for (start, len) in [
            (0x1f_fff0u64, 0x30usize),
            (0x1f_f000, 0x9000),
            (0x20_0ffd, 6),
            (0, 0x20_0000),
            (0x20_7000, 0x1000),
        ] {
            let mut buf = vec![0u8; len];
            space.read_virt(Va(base + start), &mut buf).unwrap();
            for (i, &byte) in buf.iter().enumerate() {
                assert_eq!(
                    byte,
                    expected(base + start + i as u64),
                    "{mode} at +{:#x}",
                    start + i as u64
                );
            }
        }
        // past the last page: the error names the first unmapped page
        let mut buf = vec![0u8; 0x20];
        let err = space.read_virt(Va(base + 0x20_7ff0), &mut buf).unwrap_err();
        assert_eq!(err.va(), Va(base + 0x20_8000));
        assert!(
            matches!(
                err,
                ReadError::Translate(TranslateError::NotPresent {
                    level: Level::Pt,
                    ..
                })
            ),
            "{err}"
        );
        // a string ending before the unmapped page reads fine
        mem_write_str(&mut mem, frames[7] + 0xff0, b"hello\0");
        mem_write_str(&mut mem, frames[7] + 0xffd, b"xyz");
        let space = AddressSpace::new(&mem, b.root());
        assert_eq!(
            space.read_cstr(Va(base + 0x20_7ff0), 100).unwrap(),
            b"hello"
        );
        assert_eq!(space.read_cstr(Va(base + 0x20_7ff0), 3).unwrap(), b"hel");
        // no NUL before the unmapped page: the error, unless the bound comes first
        let err = space.read_cstr(Va(base + 0x20_7ffd), 100).unwrap_err();
        assert_eq!(err.va(), Va(base + 0x20_8000));
        assert_eq!(space.read_cstr(Va(base + 0x20_7ffd), 3).unwrap(), b"xyz");
    }
}

fn mem_write_str(mem: &mut MockMemory, pa: u64, s: &[u8]) {
    mem.write(Pa(pa), s).unwrap();
}

#[test]
fn mapped_frames_outside_memory_are_phys_errors_with_both_addresses() {
    let mut mem = MockMemory::new(&[PhysRange::new(0, 0x1000), TABLES]);
    let mut b = PageTableBuilder::new(&mut mem, PagingMode::FourLevel, TABLES).unwrap();
    b.map(&mut mem, Va(0x1000), Pa(0), PageSize::Size4K, 0)
        .unwrap();
    b.map(&mut mem, Va(0x2000), Pa(0x7000_0000), PageSize::Size4K, 0)
        .unwrap();
    let space = AddressSpace::new(&mem, b.root());
    let mut buf = [0u8; 0x10];
    let err = space.read_virt(Va(0x1ff8), &mut buf).unwrap_err();
    assert_eq!(
        err,
        ReadError::Phys {
            va: Va(0x2000),
            pa: Pa(0x7000_0000),
            cause: PhysError::Unmapped {
                pa: Pa(0x7000_0000)
            }
        }
    );
    // a table pointer that leads outside memory
    let mut mem2 = mem.clone();
    let pml4e = b.root().table.0 + 0x100 * 8;
    mem2.write_u64(Pa(pml4e), 0x9000_0000 | PTE_PRESENT)
        .unwrap();
    let err = translate(&mem2, b.root(), Va(0xffff_8000_0000_0000)).unwrap_err();
    assert!(
        matches!(
            err,
            TranslateError::TableUnreadable {
                level: Level::Pdpt,
                ..
            }
        ),
        "{err}"
    );
    // the page-size bit in a PML4 entry is reserved
    mem2.write_u64(Pa(pml4e), 0x1000 | PTE_PRESENT | (1 << 7))
        .unwrap();
    let err = translate(&mem2, b.root(), Va(0xffff_8000_0000_0000)).unwrap_err();
    assert!(
        matches!(
            err,
            TranslateError::Reserved {
                level: Level::Pml4,
                ..
            }
        ),
        "{err}"
    );
    // reading up to the top of the address space
    let err = space.read_virt(Va(u64::MAX - 3), &mut buf).unwrap_err();
    assert!(matches!(err, ReadError::Wrap { .. }), "{err}");
    assert!(space.read_virt(Va(u64::MAX), &mut []).is_ok());
}

#[test]
fn self_referencing_tables_terminate() {
    // every entry of the root points at the root itself (a recursive mapping):
    // walks end after four or five reads, at a non-present or "leaf" entry
    for mode in [PagingMode::FourLevel, PagingMode::FiveLevel] {
        let mut mem = MockMemory::with_size(0x2000);
        for i in 0..512u64 {
            mem.write_u64(Pa(0x1000 + i * 8), 0x1000 | PTE_PRESENT | PTE_WRITABLE)
                .unwrap();
        }
        let root = PageTableRoot::from_cr3(0x1000, mode);
        let t = translate(&mem, root, Va(0xffff_ffff_ffff_f123)).unwrap();
        assert_eq!(t.pa, Pa(0x1123));
        assert_eq!(t.size, PageSize::Size4K);
    }
}

#[test]
fn translation_cache_serves_hits_until_invalidated() {
    let mut mem = MockMemory::new(&[PhysRange::new(0, 0x10_0000), TABLES]);
    let mut b = PageTableBuilder::new(&mut mem, PagingMode::FourLevel, TABLES).unwrap();
    let va = Va(0xffff_ffff_8100_0000);
    b.map(&mut mem, va, Pa(0x5000), PageSize::Size4K, 0)
        .unwrap();
    let space = AddressSpace::new(mem.clone(), b.root());
    assert_eq!(space.translate(va).unwrap().pa, Pa(0x5000));
    assert_eq!(space.translate(va).unwrap().pa, Pa(0x5000));
    let s = space.tlb_stats();
    assert_eq!((s.hits, s.misses), (1, 1));

    // the guest remaps the page: the cache still answers the old frame until
    // invalidated, like a TLB
    let mut mem = space.into_memory();
    let pte = walk_pte(&mem, b.root(), va);
    mem.write_u64(pte, 0x9000 | PTE_PRESENT).unwrap();
    let space = AddressSpace::new(&mem, b.root());
    assert_eq!(space.translate(va).unwrap().pa, Pa(0x9000));
    let cached = AddressSpace::new(&mem, b.root());
    cached.translate(va).unwrap();
    drop(cached);

    let shared = std::cell::RefCell::new(mem);
    struct Cell<'a>(&'a std::cell::RefCell<MockMemory>);
    impl PhysicalMemory for Cell<'_> {
        fn read_phys(&self, pa: Pa, buf: &mut [u8]) -> Result<(), PhysError> {
            self.0.borrow().read_phys(pa, buf)
        }
        fn ranges(&self) -> &[PhysRange] {
            &[]
        }
    }
    let space = AddressSpace::new(Cell(&shared), b.root());
    assert_eq!(space.translate(va).unwrap().pa, Pa(0x9000));
    shared
        .borrow_mut()
        .write_u64(pte, 0xa000 | PTE_PRESENT)
        .unwrap();
    assert_eq!(
        space.translate(va).unwrap().pa,
        Pa(0x9000),
        "served from the cache"
    );
    space.invalidate();
    assert_eq!(space.translate(va).unwrap().pa, Pa(0xa000));
    shared.borrow_mut().write_u64(pte, 0).unwrap();
    space.invalidate();
    assert!(matches!(
        space.translate(va),
        Err(TranslateError::NotPresent {
            level: Level::Pt,
            ..
        })
    ));
    let no_cache = AddressSpace::with_tlb_entries(Cell(&shared), b.root(), 0);
    assert!(no_cache.translate(va).is_err());
}

/// The physical address of the PT entry that maps `va` (4-level).
fn walk_pte(mem: &MockMemory, root: PageTableRoot, va: Va) -> Pa {
    let mut table = root.table.0;
    for &level in root.mode.levels() {
        let at = table + level.index(va) * 8;
        if level == Level::Pt {
            return Pa(at);
        }
        table = mem.read_phys_u64(Pa(at)).unwrap() & 0x000f_ffff_ffff_f000;
    }
    unreachable!()
}
