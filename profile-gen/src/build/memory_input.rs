//! A kernel read back from guest memory: its image found through VMCOREINFO, types
//! from its own BTF, symbols from its kallsyms tables moved back by the KASLR shift.

use vmi_core::profile::SourceKind;

use crate::btf::Btf;
use crate::error::{Error, Result};
use crate::kimage::KernelElf;
use crate::symbols::{self, SymbolMap};

use super::inputs::describe_bytes;
use super::{Context, Progress, Types};

/// The context of a kernel read back from guest memory (see [`crate::memory`]).
pub(super) fn with_memory<T, M: vmi_core::memory::PhysicalMemory + ?Sized>(
    mem: &M,
    progress: &mut dyn FnMut(Progress),
    f: impl FnOnce(&Context<'_>) -> Result<T>,
) -> Result<T> {
    // a guest can plant VMCOREINFO look-alikes: the first page whose image decodes
    // consistently wins, and when none does, the first page's error is reported
    let mut first_error = None;
    progress(Progress::Indexing);
    for info in crate::memory::candidates(mem)? {
        match memory_kernel(mem, info) {
            Ok(found) => return with_memory_kernel(found, progress, f),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| Error::Input {
        path: "guest memory".into(),
        message: "no kernel image".into(),
    }))
}

/// A kernel read back from memory: its image, types, relocated-back symbols and banner.
struct MemoryKernel {
    image: crate::memory::MemoryImage,
    btf: Btf,
    symbols: SymbolMap,
    banner: String,
}

fn memory_kernel<M: vmi_core::memory::PhysicalMemory + ?Sized>(
    mem: &M,
    info: vmi_core::vmcoreinfo::VmcoreInfo,
) -> Result<MemoryKernel> {
    let bad = |message: String| Error::Input {
        path: "guest memory".into(),
        message,
    };
    let image = crate::memory::kernel_image(mem, info)?;
    let kernel = KernelElf::from_image(&image.data, image.text_va);
    let btf_bytes = kernel.btf().ok_or_else(|| {
        bad(format!(
            "no BTF in the kernel image in memory (a kernel built without CONFIG_DEBUG_INFO_BTF): {}",
            crate::memory::OTHER_PATHS
        ))
    })?;
    let btf = Btf::parse(btf_bytes)?;
    let (mut symbols, _) = crate::kallsyms::symbols(&kernel).map_err(|e| {
        bad(format!(
            "the kallsyms tables in memory do not decode ({e}): {}",
            crate::memory::OTHER_PATHS
        ))
    })?;
    let banner = symbols
        .get("linux_banner")
        .and_then(|s| kernel.string_at(s.address, 1024))
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .filter(|b| b.starts_with("Linux version "))
        .ok_or_else(|| bad("linux_banner in memory does not hold a banner".into()))?;
    let shift = symbols::unrelocate(&mut symbols, symbols::X86_64_TEXT);
    if shift != image.virt_shift {
        return Err(bad(format!(
            "kallsyms puts _text {shift:#x} above its link address, VMCOREINFO says {:#x}: the memory is inconsistent",
            image.virt_shift
        )));
    }
    Ok(MemoryKernel {
        image,
        btf,
        symbols,
        banner,
    })
}

fn with_memory_kernel<T>(
    k: MemoryKernel,
    progress: &mut dyn FnMut(Progress),
    f: impl FnOnce(&Context<'_>) -> Result<T>,
) -> Result<T> {
    let mut warnings = Vec::new();
    let info = &k.image.vmcoreinfo;
    if info.osrelease().is_some_and(|r| !k.banner.contains(r)) {
        warnings.push(format!(
            "VMCOREINFO names release {:?}, the banner says {:?}",
            info.osrelease().unwrap_or_default(),
            k.banner
        ));
    }
    let ctx = Context {
        types: Types::Btf(&k.btf),
        symbols: k.symbols,
        symbols_kind: "kallsyms",
        symbols_input: 0,
        banner: Some(k.banner),
        build_id: info.get("BUILD-ID").map(str::to_string),
        source: SourceKind::Memory,
        inputs: vec![describe_bytes("guest memory: kernel image", &k.image.data)],
        warnings,
    };
    progress(Progress::Writing);
    f(&ctx)
}
