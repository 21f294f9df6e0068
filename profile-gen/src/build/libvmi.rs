//! The libVMI writer: a libvmi.conf stanza from a native profile.

use std::path::PathBuf;

use vmi_core::profile::Profile;

use crate::error::{Error, Result};

use super::Options;

/// The libvmi.conf stanza for a profile: the five offsets and init_task libVMI's Linux
/// driver reads. Missing items are an error (libVMI would read garbage with a 0).
pub fn libvmi(profile: &Profile, opts: &Options) -> Result<String> {
    let mut missing = Vec::new();
    let mut field = |ty: &str, aliases: &[&str]| match profile.field_any(ty, aliases) {
        Some((_, f)) => f.offset,
        None => {
            missing.push(format!("{ty}.{}", aliases[0]));
            0
        }
    };
    let tasks = field("task_struct", &["tasks"]);
    let mm = field("task_struct", &["mm"]);
    let pid = field("task_struct", &["pid"]);
    let name = field("task_struct", &["comm"]);
    let pgd = field("mm_struct", &["pgd"]);
    let init_task = profile.symbol("init_task");
    if init_task.is_none() {
        missing.push("symbol init_task".into());
    }
    if !missing.is_empty() {
        return Err(Error::Input {
            path: PathBuf::from(&profile.kernel.release),
            message: format!(
                "cannot write a libVMI stanza: {} not found",
                missing.join(", ")
            ),
        });
    }
    let stanza = opts
        .libvmi_name
        .clone()
        .unwrap_or_else(|| profile.kernel.release.clone());
    let banner: String = profile
        .kernel
        .banner
        .trim_end()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Ok(format!(
        "# {banner}\n# libVMI offsets for Linux {release}, made by profile-gen {version} from {source}.\n# Rename the stanza to your VM's name; linux_init_task is the unrelocated address (libVMI adds the KASLR shift).\n{stanza} {{\n    ostype = \"Linux\";\n    linux_tasks = {tasks:#x};\n    linux_mm = {mm:#x};\n    linux_pid = {pid:#x};\n    linux_name = {name:#x};\n    linux_pgd = {pgd:#x};\n    linux_init_task = {init:#x};\n}}\n",
        release = profile.kernel.release,
        version = env!("CARGO_PKG_VERSION"),
        source = profile
            .provenance
            .inputs
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(" + "),
        init = init_task.unwrap_or(0),
    ))
}
