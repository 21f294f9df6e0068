//! Names of kernel-text addresses for findings (`vfs_read+0x4`): the running kernel's
//! own kallsyms tables ([`vmi_core::kernel::kallsyms`]), else the kernel image's symbol
//! table when one was given, else none (the finding keeps the address).
//!
//! The tables are located once per scan, and only when a finding needs a name: a clean
//! scan reads nothing here.

use std::sync::OnceLock;

use vmi_core::kernel::kallsyms::Kallsyms;
use vmi_core::kernel::Kernel;
use vmi_core::memory::PhysicalMemory;
use vmi_core::Va;

use crate::finding::guest_str;
use crate::image::KernelImage;

/// Names addresses in kernel text.
#[derive(Debug, Default)]
pub struct Names {
    kallsyms: OnceLock<Option<Kallsyms>>,
}

impl Names {
    /// `symbol+0xoffset` for an address in kernel text; `None` outside it or when no
    /// symbol source works.
    pub fn name<M: PhysicalMemory>(
        &self,
        kernel: &Kernel<M>,
        image: Option<&KernelImage>,
        in_text: bool,
        va: Va,
    ) -> Option<String> {
        if !in_text {
            return None;
        }
        let kallsyms = self.kallsyms.get_or_init(|| kernel.kallsyms().ok());
        if let Some(Ok(Some((name, off)))) = kallsyms.as_ref().map(|k| k.lookup(kernel.space(), va))
        {
            return Some(format!("{}+{off:#x}", guest_str(&name)));
        }
        let link = va.0.wrapping_sub(kernel.placement().virt_shift);
        image
            .and_then(|i| i.symbolize(link))
            .map(|(name, off)| format!("{name}+{off:#x}"))
    }
}

impl<M: PhysicalMemory> crate::checks::Scan<'_, M> {
    /// `symbol+0xoffset` of an address in kernel text (see [`Names`]).
    pub fn function_name(&self, va: Va) -> Option<String> {
        self.names.name(
            self.kernel,
            self.settings.image.as_deref(),
            self.owners.in_text(va),
            va,
        )
    }
}
