//! Read vmlinux and System.map out of a `linux-image-<abi>-dbg` .deb and print what was
//! found, with sha256 and timings (for measuring `profile_gen::deb`).
//!
//! ```sh
//! cargo build --release -p profile-gen --example deb_extract
//! /usr/bin/time -f '%e s %M KB' target/release/examples/deb_extract linux-image-6.1.0-56-amd64-dbg_*.deb
//! ```

use std::path::PathBuf;
use std::time::Instant;

use sha2::{Digest, Sha256};

fn main() -> anyhow::Result<()> {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        anyhow::bail!("usage: deb_extract PACKAGE.deb");
    };
    let start = Instant::now();
    let mut consumed = (0, 0);
    let k = profile_gen::deb::read_dbg_deb(&path, &mut |done, total| consumed = (done, total))?;
    let elapsed = start.elapsed();
    println!("package     {}", k.package.as_deref().unwrap_or("?"));
    println!(
        "vmlinux     {} ({} bytes, sha256 {})",
        k.vmlinux_member,
        k.vmlinux.len(),
        hex::encode(Sha256::digest(&k.vmlinux))
    );
    match (&k.system_map_member, &k.system_map) {
        (Some(m), Some(d)) => println!(
            "System.map  {m} ({} bytes, sha256 {})",
            d.len(),
            hex::encode(Sha256::digest(d))
        ),
        _ => println!("System.map  (none in the package)"),
    }
    println!(
        "read        {:.1} of {:.1} MB compressed in {:.2} s",
        consumed.0 as f64 / 1e6,
        consumed.1 as f64 / 1e6,
        elapsed.as_secs_f64()
    );
    Ok(())
}
