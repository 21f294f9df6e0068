//! Every layout resolves from a needs-only profile of every kernel of the lab's matrix,
//! without booting anything: profile-gen makes the default profile (the needed types and
//! symbols, nothing more) from each kernel's boot image (its BTF and kallsyms; the lab
//! fetches the image from the Debian archive), and each reader's `from_profile`
//! ([`needs::DECLARATIONS`], each declaration's `resolve`) must succeed on it. A field a
//! layout reads as required but a kernel lacks, or a declaration that leaves out a field
//! its layout reads, fails here before any guest is booted. A layout may fail only on a
//! kernel that lacks one of its `opt` fields or `opt_type` types (e.g. `PerfLinkLayout`
//! on 5.10, before `bpf_perf_link`): its readers take it as absent. The BPF enums are in
//! each profile, and `vmi_core::kernel::bpf`'s own copies (the fallback for profiles
//! without them) agree with every kernel's values.

use profile_gen::build::{self, Options};
use vmi_core::kernel::bpf::{BpfNames, ATTACH_TYPES, LINK_TYPES, PROG_TYPES};
use vmi_core::profile::needs;

#[test]
fn every_layout_resolves_on_every_matrix_kernel() {
    let lab = vmi_lab::Lab::open_default().expect("lab");
    let mut problems = Vec::new();
    let (mut resolved, mut absent) = (0, 0);
    for kernel in vmi_lab::MATRIX {
        let image = lab.store().image(kernel).expect("the image part");
        let built = build::from_btf(&image.vmlinuz, None, None, &Options::default())
            .unwrap_or_else(|e| panic!("{kernel}: profile from vmlinuz: {e:#}"));
        let p = built.profile;
        let release = &p.kernel.release;
        assert!(p.missing.is_empty(), "{release}: {:?}", p.missing);
        // needs-only: nothing but the needed types
        let needed = needs::types();
        for name in p.types.keys() {
            assert!(
                needed.iter().any(|t| t.name == name),
                "{release}: {name} is not needed"
            );
        }
        // the enums the readers name are in the profile (BTF has them all), and the
        // copies readers fall back on agree with every kernel's values
        for e in needs::enums() {
            assert!(p.enums.contains_key(e), "{release}: enum {e}");
        }
        let names = BpfNames::from_profile(&p);
        let fallback = BpfNames::default();
        let agree = |n: usize, f: &dyn Fn(&BpfNames, u32) -> String| {
            for v in 0..n as u32 {
                let ours = f(&names, v);
                // a kernel older than the copy lacks the newest values
                if !ours.contains('-') {
                    assert_eq!(ours, f(&fallback, v), "{release}: value {v}");
                }
            }
        };
        agree(PROG_TYPES.len(), &|b, v| b.prog_type(v));
        agree(ATTACH_TYPES.len(), &|b, v| b.attach_type(v));
        agree(LINK_TYPES.len(), &|b, v| b.link_type(v));
        for d in needs::DECLARATIONS {
            let Some(resolve) = d.resolve else {
                continue;
            };
            let lacks_optional = d.fields.iter().any(|f| {
                (f.field.optional || f.optional_type)
                    && p.field_any(f.ty, f.field.aliases).is_none()
            });
            match resolve(&p) {
                Ok(()) => resolved += 1,
                Err(e) if lacks_optional => {
                    eprintln!("{release}: {} absent ({e})", d.name);
                    absent += 1;
                }
                Err(e) => problems.push(format!("{release}: {}: {e}", d.name)),
            }
        }
    }
    eprintln!("{resolved} layouts resolved, {absent} absent by design");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
