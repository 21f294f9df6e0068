//! `profile_gen::deb` on Debian's real packages: the -dbg packages of the lab's default
//! kernel (bookworm's layout) and of the newest 7.2 build (the newer layout) give the
//! same vmlinux and System.map the lab extracts with dpkg-deb and tar, and the boot image
//! package is refused with an error that names the -dbg package.

use std::time::Instant;

use profile_gen::deb::read_dbg_deb;
use profile_gen::Error;
use sha2::{Digest, Sha256};
use vmi_lab::apt::Archive;
use vmi_lab::cache::sha256_file;
use vmi_lab::{Store, DEFAULT_KERNEL};

/// `read_dbg_deb` on the -dbg package of `name` gives the lab's files; returns the
/// vmlinux member's name.
fn check_dbg_package(name: &str) -> String {
    let store = Store::open_default().unwrap();
    let abi = store.resolve(name).unwrap();
    // the package first: the lab's debug part then reuses it instead of downloading again
    let deb = store.dbg_package(&abi).unwrap();
    let lab = store.debug(&abi).unwrap();

    let start = Instant::now();
    let mut calls = Vec::new();
    let k = read_dbg_deb(&deb, &mut |done, total| calls.push((done, total))).unwrap();
    let elapsed = start.elapsed();

    assert_eq!(
        hex::encode(Sha256::digest(&k.vmlinux)),
        sha256_file(&lab.vmlinux).unwrap(),
        "vmlinux {} differs from the lab's {}",
        k.vmlinux_member,
        lab.vmlinux.display()
    );
    let map = k.system_map.as_deref().expect("a System.map");
    assert_eq!(
        map,
        std::fs::read(&lab.system_map).unwrap(),
        "System.map {:?} differs from the lab's {}",
        k.system_map_member,
        lab.system_map.display()
    );
    let package = k.package.as_deref().unwrap();
    assert!(
        package.starts_with(&format!("linux-image-{abi}-dbg ")),
        "{package}"
    );

    // progress: monotonic, one total, and most of the package (the module debug info)
    // never decompressed
    let &(done, total) = calls.last().unwrap();
    assert!(calls
        .windows(2)
        .all(|w| w[0].0 <= w[1].0 && w[0].1 == w[1].1));
    let deb_size = std::fs::metadata(&deb).unwrap().len();
    assert!(
        total < deb_size && total > deb_size / 2,
        "{total} of {deb_size}"
    );
    assert!(done < total / 2, "read {done} of {total} compressed bytes");
    eprintln!(
        "{package}: vmlinux {} MB and System.map in {:.1} s, {:.0} of {:.0} MB compressed read",
        k.vmlinux.len() / 1_000_000,
        elapsed.as_secs_f64(),
        done as f64 / 1e6,
        total as f64 / 1e6
    );
    assert_eq!(
        k.system_map_member.unwrap(),
        k.vmlinux_member
            .replace(&format!("vmlinux-{abi}"), &format!("System.map-{abi}"))
            .replace("/vmlinux", "/System.map")
    );
    k.vmlinux_member
}

/// bookworm's layout: vmlinux and System.map in /usr/lib/debug/boot, before the modules.
#[test]
fn dbg_package_gives_the_lab_files() {
    assert_eq!(
        check_dbg_package(DEFAULT_KERNEL),
        format!("./usr/lib/debug/boot/vmlinux-{DEFAULT_KERNEL}")
    );
}

/// The newer layout: vmlinux in /usr/lib/debug/lib/modules/<abi>, after 7 GB of module
/// debug info, found from the end of the xz stream.
#[test]
fn split_layout_dbg_package_gives_the_lab_files() {
    let member = check_dbg_package("newest:7.2");
    assert!(
        member.starts_with("./usr/lib/debug/lib/modules/") && member.ends_with("/vmlinux"),
        "{member}"
    );
}

#[test]
fn image_package_names_the_dbg_package() {
    let store = Store::open_default().unwrap();
    // the signed boot image package a user has installed (the lab's image part uses the
    // -unsigned one and does not keep it); kept in the lab's download directory
    let archive = Archive::new(store.cache()).unwrap();
    archive.update(false).unwrap();
    let image = format!("linux-image-{DEFAULT_KERNEL}");
    let deb = archive.download(&image, false).unwrap();

    let err = read_dbg_deb(&deb, &mut |_, _| {}).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Input { .. }), "{msg}");
    assert!(msg.contains(&format!("this is {image} ")), "{msg}");
    assert!(msg.contains("boot image package"), "{msg}");
    assert!(
        msg.contains(&format!("./boot/vmlinuz-{DEFAULT_KERNEL}")),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("give the matching {image}-dbg package")),
        "{msg}"
    );
    eprintln!("{msg}");
}
