//! The `ar` archive a `.deb` is: its members, each checked to lie in the file.
//! Our own reader: the `ar` crate panics on a GNU name index past its name table and
//! allocates name tables and BSD long names by the size a header claims.

use std::io;
use std::path::Path;

use crate::error::Error;

use super::source::{read_exact_at, Source};

/// The most members an `ar` archive may have (a .deb has 3).
const MAX_AR_MEMBERS: usize = 64;

/// A parse error with the offset it happened at; turned into [`Error::Input`].
#[derive(Debug)]
pub(super) struct ParseError(String);

impl ParseError {
    pub(super) fn into_error(self, path: &Path) -> Error {
        Error::Input {
            path: path.to_path_buf(),
            message: self.0,
        }
    }
}

/// One member of an `ar` archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ArMember {
    pub(super) name: String,
    /// Offset of its 60-byte header.
    pub(super) header_offset: u64,
    /// Offset of its data.
    pub(super) offset: u64,
    pub(super) size: u64,
}

pub(super) const AR_MAGIC: &[u8; 8] = b"!<arch>\n";
const AR_HEADER: u64 = 60;

/// The members of the `ar` archive `src`, each checked to lie in the file.
pub(super) fn ar_members<S: Source + ?Sized>(src: &S) -> Result<Vec<ArMember>, ParseError> {
    let len = src.size();
    let io = |what: &str, offset: u64, e: io::Error| {
        ParseError(format!("reading {what} at offset {offset}: {e}"))
    };
    if len < 8 {
        return Err(ParseError(format!(
            "not a Debian package: {len} bytes, too short for an ar archive (the file is \
             truncated or not a .deb)"
        )));
    }
    let mut magic = [0u8; 8];
    read_exact_at(src, &mut magic, 0).map_err(|e| io("the ar header", 0, e))?;
    if &magic != AR_MAGIC {
        return Err(ParseError(
            "not a Debian package: no ar archive header (`!<arch>`)".into(),
        ));
    }
    let mut members = Vec::new();
    let mut pos = 8u64;
    while pos < len {
        let index = members.len() + 1;
        if members.len() == MAX_AR_MEMBERS {
            return Err(ParseError(format!(
                "more than {MAX_AR_MEMBERS} ar members (a .deb has 3): not a Debian package"
            )));
        }
        if len - pos < AR_HEADER {
            return Err(ParseError(format!(
                "ar member #{index} at offset {pos}: header cut short ({} of 60 bytes): \
                 the package is truncated (download it again)",
                len - pos
            )));
        }
        let mut h = [0u8; AR_HEADER as usize];
        read_exact_at(src, &mut h, pos).map_err(|e| io("an ar member header", pos, e))?;
        let raw_name = String::from_utf8_lossy(&h[..16]);
        let name = raw_name.trim_end_matches(' ');
        let name = name.strip_suffix('/').unwrap_or(name).to_string();
        if &h[58..60] != b"`\n" {
            return Err(ParseError(format!(
                "ar member #{index} (`{name}`) at offset {pos}: damaged header (no `\\n \
                 terminator): the package is damaged (download it again)"
            )));
        }
        let size_text = String::from_utf8_lossy(&h[48..58]);
        let size: u64 = size_text.trim_end_matches(' ').parse().map_err(|_| {
            ParseError(format!(
                "ar member #{index} (`{name}`) at offset {pos}: bad size field {size_text:?}"
            ))
        })?;
        let offset = pos + AR_HEADER;
        let available = len - offset;
        if size > available {
            return Err(ParseError(format!(
                "ar member `{name}` at offset {pos}: its header says {size} bytes but the \
                 file ends {available} bytes after it: the package is truncated \
                 (download it again)"
            )));
        }
        members.push(ArMember {
            name,
            header_offset: pos,
            offset,
            size,
        });
        // data is padded to an even offset; the pad of the last member may be missing
        pos = offset + size + (size & 1);
    }
    if members.is_empty() {
        return Err(ParseError(
            "not a Debian package: the ar archive is empty".into(),
        ));
    }
    Ok(members)
}

/// The data of a small member (at most `cap` bytes).
pub(super) fn read_member<S: Source + ?Sized>(
    src: &S,
    m: &ArMember,
    cap: u64,
) -> Result<Vec<u8>, ParseError> {
    let mut buf = vec![0u8; m.size.min(cap) as usize];
    read_exact_at(src, &mut buf, m.offset).map_err(|e| {
        ParseError(format!(
            "reading ar member `{}` at offset {}: {e}",
            m.name, m.offset
        ))
    })?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deb::testdata::*;

    #[test]
    fn every_truncation_is_an_error() {
        let tar = dbg_tar(ABI);
        for (name, data) in [("data.tar.xz", xz(&tar)), ("data.tar", tar.clone())] {
            let full = deb(&control_tar("p"), name, &data);
            read(&full).unwrap();
            // the ar archive's sizes catch every cut (the final pad byte is optional)
            let end = full.len() - usize::from(!data.len().is_multiple_of(2));
            for n in 0..end {
                let err = read(&full[..n]).expect_err(&format!("{name} cut at {n}"));
                assert!(matches!(err, Error::Input { .. }), "{err}");
            }
        }
    }

    #[test]
    fn extended_names_are_plain_names() {
        // a .deb uses neither GNU nor BSD long names: an index into a name table is a
        // name, and no name table or BSD name is read (or allocated) by its claimed size
        let member = |name: &str, size: u64| {
            let mut a = AR_MAGIC.to_vec();
            let h = format!("{name:<16}{:<12}{:<6}{:<6}{:<8}{size:<10}`\n", 0, 0, 0, 644);
            a.extend_from_slice(h.as_bytes());
            a.extend_from_slice(b"x\n");
            a
        };
        let msg = read(&member("/123", 2)).unwrap_err().to_string();
        assert!(msg.contains("first ar member is `/123`"), "{msg}");
        for name in ["//", "#1/4000000000"] {
            let msg = read(&member(name, 4_000_000_000)).unwrap_err().to_string();
            assert!(
                msg.contains("says 4000000000 bytes") && msg.contains("truncated"),
                "{msg}"
            );
        }
    }

    #[test]
    fn truncated_ar_names_member_and_offset() {
        let full = deb(&control_tar("p"), "data.tar", &dbg_tar(ABI));
        let msg = read(&full[..full.len() - 100]).unwrap_err().to_string();
        assert!(msg.contains("ar member `data.tar` at offset"), "{msg}");
        assert!(msg.contains("truncated"), "{msg}");
    }
}
