//! The format asked for, written from a context: the native JSON profile, the libVMI
//! stanza or the Volatility 3 ISF.

use std::io::Write;

use vmi_core::profile::needs;

use crate::error::{Error, Result};
use crate::isf::{self, IsfInputs, IsfOptions, IsfTypes};

use super::libvmi::libvmi;
use super::native::native;
use super::{Context, Format, Options, Report, Types};

pub(super) fn write_format(
    ctx: &Context<'_>,
    opts: &Options,
    format: Format,
    out: &mut dyn Write,
) -> Result<Report> {
    match format {
        Format::Native => {
            let built = native(ctx, opts)?;
            out.write_all(built.profile.to_json().as_bytes())
                .map_err(Error::Output)?;
            Ok(Report {
                warnings: built.warnings,
                isf: None,
            })
        }
        Format::Libvmi => {
            let built = native(ctx, opts)?;
            let text = libvmi(&built.profile, opts)?;
            out.write_all(text.as_bytes()).map_err(Error::Output)?;
            Ok(Report {
                warnings: built.warnings,
                isf: None,
            })
        }
        Format::Isf => {
            let mut warnings = ctx.warnings.clone();
            let banner = ctx.banner.as_ref().map(|b| {
                let mut bytes = b.clone().into_bytes();
                bytes.push(0);
                bytes
            });
            if banner.is_none() {
                warnings.push(
                    "linux_banner could not be read: Volatility will not match this ISF to a memory image".into(),
                );
            }
            let mut types: Vec<String> =
                needs::types().iter().map(|t| t.name.to_string()).collect();
            types.extend(opts.types.iter().cloned());
            let mut typed: Vec<String> = needs::symbols()
                .iter()
                .flat_map(|s| s.aliases.iter().map(|a| a.to_string()))
                .collect();
            typed.extend(opts.symbols.iter().cloned());
            let iopts = IsfOptions {
                full: opts.full,
                types,
                typed_symbols: typed,
                datetime: None,
            };
            let inputs = IsfInputs {
                types: (
                    match ctx.types {
                        #[cfg(feature = "dwarf")]
                        Types::Dwarf(_) => "dwarf",
                        Types::Btf(_) => "btf",
                    },
                    &ctx.inputs[0],
                ),
                symbols: (ctx.symbols_kind, &ctx.inputs[ctx.symbols_input]),
            };
            let types = match ctx.types {
                #[cfg(feature = "dwarf")]
                Types::Dwarf(l) => IsfTypes::Dwarf(l),
                Types::Btf(b) => IsfTypes::Btf(b),
            };
            let stats =
                isf::write_isf(out, types, &ctx.symbols, banner.as_deref(), &inputs, &iopts)?;
            Ok(Report {
                warnings,
                isf: Some(stats),
            })
        }
    }
}
