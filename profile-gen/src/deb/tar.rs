//! A bounded streaming tar reader (ustar, GNU long names and base-256 sizes, pax) and
//! its header fields. Our own reader: the `tar` crate reads a GNU long name or pax
//! header whole whatever size it claims, takes a stream cut at a header for a complete
//! archive, and reads a base-256 size past 64 bits as its low bits.

use std::io::{self, Read};

/// The largest GNU long name or pax header data.
const MAX_META: u64 = 1 << 20;
/// The most metadata headers (long names, pax) before one entry.
const MAX_META_HEADERS: usize = 16;

/// One tar entry (after GNU long names and pax headers are applied).
#[derive(Debug, Clone)]
pub(super) struct TarEntry {
    pub(super) path: String,
    /// Size of its data in the archive.
    pub(super) size: u64,
    /// The typeflag.
    pub(super) kind: u8,
    /// Offset of its (first) header in the tar stream.
    pub(super) header_offset: u64,
}

impl TarEntry {
    pub(super) fn is_file(&self) -> bool {
        matches!(self.kind, b'0' | 0 | b'7')
    }
}

/// A bounded streaming tar reader: ustar, GNU (long names, base-256 sizes) and pax.
pub(super) struct TarReader<R> {
    r: R,
    /// Bytes read from the tar stream so far.
    pub(super) offset: u64,
    /// Data and padding of the current entry not read yet.
    pending: u64,
}

impl<R: Read> TarReader<R> {
    pub(super) fn new(r: R) -> Self {
        TarReader {
            r,
            offset: 0,
            pending: 0,
        }
    }

    /// Read up to `buf.len()` bytes; fewer only at the end of the stream.
    pub(super) fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(format!(
                        "decompressing failed at offset {} of the tar stream: {e} (the \
                         package is damaged or cut short: download it again)",
                        self.offset + n as u64
                    ))
                }
            }
        }
        self.offset += n as u64;
        Ok(n)
    }

    fn skip(&mut self, mut n: u64, what: &str) -> Result<(), String> {
        let mut buf = [0u8; 64 << 10];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            let got = self.read_full(&mut buf[..want])?;
            if got < want {
                return Err(format!(
                    "the tar stream ends at offset {} inside {what}: the package is cut \
                     short (download it again)",
                    self.offset
                ));
            }
            n -= got as u64;
        }
        Ok(())
    }

    /// The next entry, or `None` at the end-of-archive marker. Skips what is left of the
    /// previous entry's data.
    pub(super) fn next_entry(&mut self) -> Result<Option<TarEntry>, String> {
        let pending = std::mem::take(&mut self.pending);
        self.skip(pending, "an entry's data")?;
        let mut long_name: Option<String> = None;
        let mut pax_path: Option<String> = None;
        let mut pax_size: Option<u64> = None;
        let mut first_offset = None;
        for _ in 0..=MAX_META_HEADERS {
            let header_offset = self.offset;
            first_offset.get_or_insert(header_offset);
            let mut h = [0u8; 512];
            let got = self.read_full(&mut h)?;
            if got < 512 {
                return Err(format!(
                    "the tar stream ends at offset {} inside the header at offset \
                     {header_offset} (no end-of-archive marker): the package is cut \
                     short (download it again)",
                    self.offset
                ));
            }
            if h.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            check_checksum(&h).map_err(|e| format!("tar header at offset {header_offset}: {e}"))?;
            let size = parse_size(&h[124..136])
                .map_err(|e| format!("tar header at offset {header_offset}: {e}"))?;
            let kind = h[156];
            let padded = size.div_ceil(512) * 512;
            match kind {
                b'L' | b'x' => {
                    if size > MAX_META {
                        return Err(format!(
                            "tar header at offset {header_offset}: a {} of {size} bytes \
                             (more than {MAX_META})",
                            if kind == b'L' {
                                "long name"
                            } else {
                                "pax header"
                            }
                        ));
                    }
                    let mut data = vec![0u8; padded as usize];
                    if self.read_full(&mut data)? < data.len() {
                        return Err(format!(
                            "the tar stream ends at offset {} inside the metadata of the \
                             header at offset {header_offset}: the package is cut short \
                             (download it again)",
                            self.offset
                        ));
                    }
                    data.truncate(size as usize);
                    if kind == b'L' {
                        let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                        long_name = Some(String::from_utf8_lossy(&data[..end]).into_owned());
                    } else {
                        parse_pax(&data, &mut pax_path, &mut pax_size)
                            .map_err(|e| format!("pax header at offset {header_offset}: {e}"))?;
                    }
                }
                b'K' | b'g' => self.skip(padded, "a tar metadata entry")?,
                _ => {
                    let size = pax_size.unwrap_or(size);
                    let path = match (pax_path, long_name) {
                        (Some(p), _) | (None, Some(p)) => p,
                        (None, None) => ustar_name(&h),
                    };
                    // links, directories, devices and fifos have no data
                    let size = if matches!(kind, b'1'..=b'6') { 0 } else { size };
                    self.pending = size.checked_next_multiple_of(512).ok_or_else(|| {
                        format!("tar header at offset {header_offset}: size {size} too large")
                    })?;
                    return Ok(Some(TarEntry {
                        path,
                        size,
                        kind,
                        header_offset: first_offset.unwrap_or(header_offset),
                    }));
                }
            }
        }
        Err(format!(
            "more than {MAX_META_HEADERS} tar metadata headers in a row before offset {}",
            self.offset
        ))
    }

    /// The data of `entry` (the one [`TarReader::next_entry`] returned last), at most
    /// `cap` bytes or an error. `seen` is given the data piece by piece as it is read.
    pub(super) fn read_data(
        &mut self,
        entry: &TarEntry,
        cap: u64,
        seen: &mut dyn FnMut(&[u8]),
    ) -> Result<Vec<u8>, String> {
        if entry.size > cap {
            return Err(format!(
                "`{}` (tar header at offset {}) is {} bytes, more than the {} bytes \
                 profile-gen reads into memory",
                entry.path, entry.header_offset, entry.size, cap
            ));
        }
        let size = entry.size as usize;
        let mut data = Vec::new();
        data.try_reserve_exact(size).map_err(|_| {
            format!(
                "`{}`: cannot allocate {} bytes to read it into memory",
                entry.path, entry.size
            )
        })?;
        data.resize(size, 0);
        let mut got = 0;
        for chunk in data.chunks_mut(4 << 20) {
            let n = self.read_full(chunk)?;
            seen(&chunk[..n]);
            got += n;
            if n < chunk.len() {
                return Err(format!(
                    "the tar stream ends at offset {} inside `{}` (tar header at offset \
                     {}; {got} of {size} bytes): the package is cut short (download it \
                     again)",
                    self.offset, entry.path, entry.header_offset
                ));
            }
        }
        self.pending -= entry.size;
        Ok(data)
    }
}

/// The header checksum: the sum of its bytes with the checksum field as spaces.
pub(super) fn check_checksum(h: &[u8; 512]) -> Result<(), String> {
    let stored = parse_octal(&h[148..156]).map_err(|e| format!("checksum field: {e}"))?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed) {
        Ok(())
    } else {
        Err(format!(
            "bad checksum (stored {stored}, computed {unsigned}): not a tar header, the \
             package is damaged"
        ))
    }
}

/// An octal field: optional leading spaces, digits, then NULs or spaces.
fn parse_octal(field: &[u8]) -> Result<u64, String> {
    let text = field
        .iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|&&b| b != 0 && b != b' ');
    let mut value: u64 = 0;
    for &b in text {
        if !(b'0'..=b'7').contains(&b) {
            return Err(format!(
                "not an octal number: {:?}",
                String::from_utf8_lossy(field)
            ));
        }
        value = value
            .checked_mul(8)
            .map(|v| v + u64::from(b - b'0'))
            .ok_or("number too large")?;
    }
    Ok(value)
}

/// The size field: octal, or GNU base-256 (high bit of the first byte set).
pub(super) fn parse_size(field: &[u8]) -> Result<u64, String> {
    if field[0] & 0x80 == 0 {
        return parse_octal(field).map_err(|e| format!("size field: {e}"));
    }
    if field[0] & 0x40 != 0 {
        return Err("size field: negative base-256 size".into());
    }
    let mut value: u64 = u64::from(field[0] & 0x3f);
    for &b in &field[1..] {
        value = value
            .checked_mul(256)
            .map(|v| v | u64::from(b))
            .ok_or("size field: base-256 size too large")?;
    }
    Ok(value)
}

/// The name of a ustar or old GNU header (the POSIX prefix field joined in).
pub(super) fn ustar_name(h: &[u8; 512]) -> String {
    let cstr = |f: &[u8]| {
        let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
        String::from_utf8_lossy(&f[..end]).into_owned()
    };
    let name = cstr(&h[..100]);
    // POSIX ustar ("ustar\0"); GNU's "ustar  \0" uses these bytes for other fields
    if &h[257..263] == b"ustar\0" {
        let prefix = cstr(&h[345..500]);
        if !prefix.is_empty() {
            return format!("{prefix}/{name}");
        }
    }
    name
}

/// pax records `<len> <key>=<value>\n`: `path` and `size` are used.
fn parse_pax(
    mut data: &[u8],
    path: &mut Option<String>,
    size: &mut Option<u64>,
) -> Result<(), String> {
    while !data.is_empty() && data[0] != 0 {
        let space = data
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or("record without a length")?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad record length")?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(format!("bad record length {len}"));
        }
        let record = &data[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("record without `=`")?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => *path = Some(String::from_utf8_lossy(value).into_owned()),
            b"size" => {
                *size = Some(
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or("bad size record")?,
                )
            }
            _ => {}
        }
        data = &data[len..];
    }
    Ok(())
}

/// A member name without its leading `./` or `/`.
pub(super) fn normalize(path: &str) -> &str {
    let mut p = path;
    loop {
        if let Some(rest) = p.strip_prefix("./") {
            p = rest;
        } else if let Some(rest) = p.strip_prefix('/') {
            p = rest;
        } else {
            return p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deb::scan::{scan_data, Scan};
    use crate::deb::testdata::*;

    fn scan_all<R: Read>(tar: &mut TarReader<R>) -> Result<Scan, String> {
        let mut scan = Scan::default();
        scan_data(tar, &mut scan, false)?;
        Ok(scan)
    }

    #[test]
    fn split_layout_pax_and_long_names() {
        let abi = "7.2.13+deb14-amd64";
        let dir = format!("./usr/lib/debug/lib/modules/{abi}");
        let mut t = Vec::new();
        add(&mut t, &format!("{dir}/"), b"", b'5');
        add_pax(&mut t, &format!("{dir}/System.map"), b"map");
        add(
            &mut t,
            &format!("{dir}/kernel/{}.ko", "m".repeat(150)),
            &[2; 700],
            b'0',
        );
        add(&mut t, &format!("{dir}/vmlinux"), &vmlinux_bytes(), b'0');
        end(&mut t);
        let k = read(&deb(&control_tar("x"), "data.tar.xz", &xz(&t))).unwrap();
        assert_eq!(k.vmlinux_member, format!("{dir}/vmlinux"));
        assert_eq!(k.system_map.as_deref(), Some(&b"map"[..]));
        assert_eq!(k.package.as_deref(), Some("x 6.1.192-2"));
    }

    #[test]
    fn every_tar_truncation_is_an_error_or_complete() {
        // the tar parser alone, on streams cut at every byte (as a damaged compressed
        // stream would end early)
        let tar = dbg_tar(ABI);
        let vmlinux = format!("./usr/lib/debug/boot/vmlinux-{ABI}");
        let needed = {
            // end of vmlinux's data: the last member read
            let mut r = TarReader::new(&tar[..]);
            loop {
                let e = r.next_entry().unwrap().unwrap();
                if e.path == vmlinux {
                    break r.offset as usize + e.size as usize;
                }
            }
        };
        for n in 0..tar.len() {
            let mut r = TarReader::new(&tar[..n]);
            match scan_all(&mut r) {
                Ok(scan) => {
                    assert!(n >= needed, "cut at {n} accepted");
                    assert_eq!(scan.vmlinux.unwrap().data, vmlinux_bytes());
                }
                Err(e) => {
                    assert!(n < needed, "cut at {n}: {e}");
                    assert!(e.contains("offset"), "{e}");
                }
            }
        }
    }

    #[test]
    fn corrupt_tar_headers() {
        let mut tar = dbg_tar(ABI);
        tar[600] ^= 0xFF; // second header's name: checksum fails
        let e = scan_all(&mut TarReader::new(&tar[..])).unwrap_err();
        assert!(
            e.contains("tar header at offset 512") && e.contains("checksum"),
            "{e}"
        );

        // a huge size claim: refused before any allocation or read
        let mut t = Vec::new();
        let mut h = tar_header(&format!("./usr/lib/debug/boot/vmlinux-{ABI}"), 0, b'0');
        h[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]); // 4 GiB
        h[135] = 1; // 4 GiB + 1
        set_checksum(&mut h);
        t.extend_from_slice(&h);
        let e = scan_all(&mut TarReader::new(&t[..])).unwrap_err();
        assert!(e.contains("larger than 4 GiB"), "{e}");

        // an oversized long name
        let mut t = tar_header("././@LongLink", MAX_META + 1, b'L').to_vec();
        t.extend_from_slice(&[b'a'; 1024]);
        let e = scan_all(&mut TarReader::new(&t[..])).unwrap_err();
        assert!(e.contains("long name"), "{e}");

        // a bad pax record
        let mut t = tar_header("pax", 9, b'x').to_vec();
        t.extend_from_slice(b"99 path=x");
        pad(&mut t);
        let e = scan_all(&mut TarReader::new(&t[..])).unwrap_err();
        assert!(e.contains("pax header at offset 0"), "{e}");

        // not an ELF
        let mut t = Vec::new();
        add(
            &mut t,
            &format!("./usr/lib/debug/boot/vmlinux-{ABI}"),
            b"text",
            b'0',
        );
        end(&mut t);
        let e = scan_all(&mut TarReader::new(&t[..])).unwrap_err();
        assert!(e.contains("not an ELF"), "{e}");

        // endless metadata headers
        let mut t = Vec::new();
        for _ in 0..20 {
            t.extend_from_slice(&tar_header("g", 0, b'g'));
        }
        let e = scan_all(&mut TarReader::new(&t[..])).unwrap_err();
        assert!(e.contains("metadata headers"), "{e}");
    }

    #[test]
    fn fields() {
        assert_eq!(parse_octal(b"0000644\0").unwrap(), 0o644);
        assert_eq!(parse_octal(b"   12 \0").unwrap(), 0o12);
        assert!(parse_octal(b"0009\0").is_err());
        assert_eq!(
            parse_size(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]).unwrap(),
            256
        );
        assert!(parse_size(&[0xFF; 12]).is_err());
        assert!(
            parse_size(&[0x80, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0])
                .is_err()
        );
        assert_eq!(normalize(".///./usr/x"), "usr/x");
    }
}
