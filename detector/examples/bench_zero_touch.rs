//! Benchmark of zero-touch onboarding on a live Debian 6.1 guest (lab, KASLR on): from
//! attaching to the guest with an empty profile directory to a written, checked profile
//! and an identified kernel (target ≤ 2 s), against, in the same run, the same attach
//! with the profile already there and profile-gen's vmlinuz path (which needs the file).
//!
//! `cargo run --release -p detector --example bench_zero_touch` (scripts/bench-zero-touch.sh)

use std::time::{Duration, Instant};

use detector::target::{ProfileSpec, SourceSpec, Target};
use vmi_lab::{BootOptions, Lab, Scenario, DEFAULT_KERNEL};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    const RUNS: usize = 5;
    let lab = Lab::open_default().expect("lab");
    let image = lab.store().image(DEFAULT_KERNEL).expect("image");
    let mut guest = lab
        .boot(
            DEFAULT_KERNEL,
            &Scenario::standard(),
            &BootOptions::default(),
        )
        .expect("boot");
    guest.release_qmp();
    let source = SourceSpec::Qemu {
        socket: guest.qmp_socket(),
        mem_path: None,
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut zero = Vec::new();
    for i in 0..RUNS {
        let dir = tmp.path().join(format!("empty-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let t = Instant::now();
        let target = Target::open(&source, &ProfileSpec::Dir(dir.clone())).expect("zero-touch");
        zero.push(t.elapsed());
        assert!(
            target.profile_path.starts_with(&dir),
            "the profile was written"
        );
    }
    let warm_dir = tmp.path().join("empty-0");
    let mut warm = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let _target = Target::open(&source, &ProfileSpec::Dir(warm_dir.clone())).expect("attach");
        warm.push(t.elapsed());
    }
    let mut from_image = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        profile_gen::build::from_btf(&image.vmlinuz, None, None, &Default::default())
            .expect("vmlinuz profile");
        from_image.push(t.elapsed());
    }
    guest.shutdown().ok();
    println!("bench: {DEFAULT_KERNEL}, live guest (QEMU TCG, 1 GiB, KASLR), median of {RUNS}");
    println!(
        "attach with an empty profile directory -> profile made from memory, checked, written, kernel identified: {:.0?} [target <= 2 s]",
        median(zero)
    );
    println!(
        "baseline: attach with that profile already in the directory: {:.0?}",
        median(warm)
    );
    println!(
        "baseline: profile-gen from the vmlinuz file (needs the guest's boot image): {:.0?}",
        median(from_image)
    );
}
