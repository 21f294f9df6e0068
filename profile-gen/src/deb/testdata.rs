//! Builders of small packages for the tests of every file here, and the counters the
//! search from the end keeps for them.

use std::io::Read;
use std::path::Path;

use md5::{Digest, Md5};

use super::ar::{ar_members, AR_MAGIC};
use super::tar::TarReader;
use super::xz_index::XzIndex;
use super::{read_deb, DebKernel};
use crate::error::Result;

pub(super) fn tar_header(name: &str, size: u64, kind: u8) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.as_bytes();
    h[..n.len().min(100)].copy_from_slice(&n[..n.len().min(100)]);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = kind;
    h[257..265].copy_from_slice(b"ustar  \0");
    set_checksum(&mut h);
    h
}

pub(super) fn set_checksum(h: &mut [u8; 512]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

pub(super) fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(512) {
        out.push(0);
    }
}

pub(super) fn add(out: &mut Vec<u8>, name: &str, data: &[u8], kind: u8) {
    if name.len() > 100 {
        let mut long = name.as_bytes().to_vec();
        long.push(0);
        out.extend_from_slice(&tar_header("././@LongLink", long.len() as u64, b'L'));
        out.extend_from_slice(&long);
        pad(out);
    }
    out.extend_from_slice(&tar_header(name, data.len() as u64, kind));
    out.extend_from_slice(data);
    pad(out);
}

pub(super) fn add_pax(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    let record = |k: &str, v: &str| {
        let body = format!(" {k}={v}\n");
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        format!("{len}{body}")
    };
    let pax = record("path", name) + &record("mtime", "1700000000.5");
    out.extend_from_slice(&tar_header("./PaxHeaders/x", pax.len() as u64, b'x'));
    out.extend_from_slice(pax.as_bytes());
    pad(out);
    out.extend_from_slice(&tar_header("truncated-name", data.len() as u64, b'0'));
    out.extend_from_slice(data);
    pad(out);
}

pub(super) fn end(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0u8; 1024]);
}

pub(super) fn vmlinux_bytes() -> Vec<u8> {
    let mut v = b"\x7fELF".to_vec();
    v.extend((0..3000u32).map(|i| (i * 7 % 251) as u8));
    v
}

/// A -dbg data tar, classic layout, with dirs, a symlink, a long name and trailing
/// module data.
pub(super) fn dbg_tar(abi: &str) -> Vec<u8> {
    let mut t = Vec::new();
    add(&mut t, "./", b"", b'5');
    add(&mut t, "./usr/lib/debug/.build-id/79/", b"", b'5');
    add(&mut t, "./usr/lib/debug/.build-id/79/x.debug", b"", b'2');
    let long = format!("./usr/share/doc/{}/changelog.gz", "d".repeat(120));
    add(&mut t, &long, b"changes", b'0');
    add(&mut t, "./usr/lib/debug/boot/", b"", b'5');
    add(
        &mut t,
        &format!("./usr/lib/debug/boot/System.map-{abi}"),
        b"ffffffff81000000 T _text\n",
        b'0',
    );
    add(
        &mut t,
        &format!("./usr/lib/debug/boot/vmlinux-{abi}"),
        &vmlinux_bytes(),
        b'0',
    );
    add(
        &mut t,
        &format!("./usr/lib/debug/lib/modules/{abi}/kernel/a.ko"),
        &[1u8; 5000],
        b'0',
    );
    end(&mut t);
    t
}

pub(super) fn control_tar(package: &str) -> Vec<u8> {
    let mut t = Vec::new();
    add(&mut t, "./", b"", b'5');
    let control = format!("Package: {package}\nVersion: 6.1.192-2\nArchitecture: amd64\n");
    add(&mut t, "./control", control.as_bytes(), b'0');
    end(&mut t);
    t
}

pub(super) fn xz(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    liblzma::read::XzEncoder::new(data, 1)
        .read_to_end(&mut out)
        .unwrap();
    out
}

pub(super) fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = AR_MAGIC.to_vec();
    for (name, data) in members {
        let header = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            format!("{name}/"),
            0,
            0,
            0,
            "100644",
            data.len()
        );
        assert_eq!(header.len(), 60);
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        if !data.len().is_multiple_of(2) {
            out.push(b'\n');
        }
    }
    out
}

pub(super) fn deb(control: &[u8], data_name: &str, data: &[u8]) -> Vec<u8> {
    ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.xz", &xz(control)),
        (data_name, data),
    ])
}

pub(super) fn read(bytes: &[u8]) -> Result<DebKernel> {
    let mut calls = 0u64;
    let out = read_deb(bytes, Path::new("test.deb"), &mut |done, total| {
        assert!(done <= total);
        calls += 1;
    });
    if out.is_ok() {
        assert!(calls > 0);
    }
    out
}

pub(super) const ABI: &str = "6.1.0-56-amd64";

thread_local! {
    /// How often this thread found vmlinux from the end of an xz stream.
    pub(super) static FOUND_FROM_THE_END: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// How often this thread decoded vmlinux's blocks a second time.
    pub(super) static DECODED_AGAIN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

pub(super) fn found_from_the_end() -> usize {
    FOUND_FROM_THE_END.with(|n| n.get())
}

/// xz in blocks of `block_size` decompressed bytes, as `xz -T` and dpkg-deb write.
pub(super) fn xz_blocks(data: &[u8], block_size: u64) -> Vec<u8> {
    xz_blocks_check(data, block_size, liblzma::stream::Check::Crc64)
}

pub(super) fn xz_blocks_check(
    data: &[u8],
    block_size: u64,
    check: liblzma::stream::Check,
) -> Vec<u8> {
    let stream = liblzma::stream::MtStreamBuilder::new()
        .threads(2)
        .block_size(block_size)
        .preset(1)
        .check(check)
        .encoder()
        .unwrap();
    let mut out = Vec::new();
    liblzma::read::XzEncoder::new_stream(data, stream)
        .read_to_end(&mut out)
        .unwrap();
    out
}

pub(super) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The newer layout: System.map, then module debug info, then vmlinux, then
/// symlinks. `pax_vmlinux` names vmlinux by a pax header only.
pub(super) fn split_tar(abi: &str, modules: usize, pax_vmlinux: bool) -> Vec<u8> {
    split_tar_with(abi, modules, pax_vmlinux, &vmlinux_bytes())
}

pub(super) fn split_tar_with(
    abi: &str,
    modules: usize,
    pax_vmlinux: bool,
    vmlinux: &[u8],
) -> Vec<u8> {
    let dir = format!("./usr/lib/debug/lib/modules/{abi}");
    let mut t = Vec::new();
    add(&mut t, "./", b"", b'5');
    add(&mut t, "./usr/lib/debug/boot/", b"", b'5');
    add(&mut t, &format!("{dir}/"), b"", b'5');
    add(&mut t, &format!("{dir}/System.map"), b"map", b'0');
    add(&mut t, &format!("{dir}/kernel/"), b"", b'5');
    for i in 0..modules {
        let ko = format!("{dir}/kernel/m{i}.ko");
        add(&mut t, &ko, &noise(3000 + i * 37, i as u64), b'0');
    }
    if pax_vmlinux {
        add_pax(&mut t, &format!("{dir}/vmlinux"), vmlinux);
    } else {
        add(&mut t, &format!("{dir}/vmlinux"), vmlinux, b'0');
    }
    add(
        &mut t,
        &format!("./usr/lib/debug/boot/vmlinux-{abi}"),
        b"",
        b'2',
    );
    end(&mut t);
    t
}

/// The offset of the header of the entry named `name`.
pub(super) fn header_offset(tar: &[u8], name: &str) -> u64 {
    let mut r = TarReader::new(tar);
    loop {
        let e = r.next_entry().unwrap().unwrap();
        if e.path == name {
            return e.header_offset;
        }
    }
}

pub(super) fn data_index(deb: &[u8]) -> XzIndex {
    let members = ar_members(deb).unwrap();
    XzIndex::read(
        deb,
        members.iter().find(|m| m.name == "data.tar.xz").unwrap(),
    )
    .unwrap()
}

pub(super) fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}
