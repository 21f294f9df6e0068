//! Which kind of memory dump a file is, told by its first bytes: the one place the
//! tools decide between [`ElfCore`](super::ElfCore), [`LimeImage`](super::LimeImage)
//! and [`RawImage`](super::RawImage).

use std::io::Read;
use std::path::Path;

use super::elf::ELF_MAGIC;
use super::lime::LIME_MAGIC;

/// The format of a memory dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpFormat {
    /// An ELF core ([`ElfCore`](super::ElfCore)).
    Elf,
    /// A LiME image ([`LimeImage`](super::LimeImage)).
    Lime,
    /// Anything else: a raw physical image ([`RawImage`](super::RawImage)).
    Raw,
}

impl DumpFormat {
    /// The format whose magic `head` (the file's first bytes) starts with.
    pub fn of_bytes(head: &[u8]) -> DumpFormat {
        if head.starts_with(ELF_MAGIC) {
            DumpFormat::Elf
        } else if head.starts_with(&LIME_MAGIC.to_le_bytes()) {
            DumpFormat::Lime
        } else {
            DumpFormat::Raw
        }
    }

    /// The format of the file at `path` (its first four bytes).
    pub fn of_file(path: &Path) -> std::io::Result<DumpFormat> {
        let mut head = Vec::with_capacity(4);
        std::fs::File::open(path)?.take(4).read_to_end(&mut head)?;
        Ok(DumpFormat::of_bytes(&head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_decides() {
        assert_eq!(DumpFormat::of_bytes(b"\x7fELF\x02\x01"), DumpFormat::Elf);
        assert_eq!(DumpFormat::of_bytes(b"EMiL\x01\0\0\0"), DumpFormat::Lime);
        assert_eq!(DumpFormat::of_bytes(b"\x7fEL"), DumpFormat::Raw);
        assert_eq!(DumpFormat::of_bytes(b""), DumpFormat::Raw);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d");
        std::fs::write(&p, b"EMiL").unwrap();
        assert_eq!(DumpFormat::of_file(&p).unwrap(), DumpFormat::Lime);
        assert!(DumpFormat::of_file(&dir.path().join("none")).is_err());
    }
}
