//! What the binaries' command lines share: man pages and shell completions generated
//! from a binary's own clap definition, so the Debian package documents exactly the
//! command line the binary parses; and how an error is printed ([`error_text`]).
//!
//! A binary parses its command line with [`parse`] instead of `Parser::parse`: that
//! adds a hidden `generate-docs DIR` subcommand to its definition ([`parser`]) and runs
//! it when asked ([`generate_if_asked`]). The hidden subcommand is added only there: the definition the pages and
//! completions are made from does not have it, so they never mention it.
//! `scripts/package.sh` runs `detector generate-docs` and `profile-gen generate-docs`.
#![deny(missing_docs)]

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Arg, ArgMatches, Command, Parser};

mod report;

use clap_complete::Shell;
pub use report::error_text;

/// The hidden subcommand.
pub const SUBCOMMAND: &str = "generate-docs";

/// The shells completions are written for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// The command line as `T`, exiting as clap does on an error or `--help`; or, when it
/// is the hidden subcommand, the documentation written and `Err` with the exit status.
pub fn parse<T: Parser>() -> Result<T, ExitCode> {
    let matches = parser(T::command()).get_matches();
    if let Some(code) = generate_if_asked(&matches, T::command()) {
        return Err(code);
    }
    Ok(T::from_arg_matches(&matches)
        .map_err(|e| e.format(&mut T::command()))
        .unwrap_or_else(|e| e.exit()))
}

/// `cmd` as the binary parses it: with the hidden [`SUBCOMMAND`].
pub fn parser(cmd: Command) -> Command {
    // a command without subcommands must not grow a visible `help` subcommand, and its
    // required arguments are not required by the hidden one
    let cmd = if cmd.has_subcommands() {
        cmd
    } else {
        cmd.disable_help_subcommand(true)
            .subcommand_negates_reqs(true)
    };
    cmd.subcommand(
        Command::new(SUBCOMMAND)
            .hide(true)
            .about("Write man pages (DIR/man) and bash, zsh and fish completions (DIR/completions)")
            .arg(
                Arg::new("dir")
                    .value_name("DIR")
                    .required(true)
                    .value_parser(clap::value_parser!(PathBuf)),
            ),
    )
}

/// When `matches` (from [`parser`]) are the hidden subcommand: write the documentation
/// of `cmd` (the definition without it), list the files on standard output and return
/// the exit status (2 when writing failed). `None` otherwise.
pub fn generate_if_asked(matches: &ArgMatches, cmd: Command) -> Option<ExitCode> {
    let (SUBCOMMAND, sub) = matches.subcommand()? else {
        return None;
    };
    let dir = sub.get_one::<PathBuf>("dir")?;
    Some(match write(cmd, dir) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{SUBCOMMAND}: writing into {}: {e}", dir.display());
            ExitCode::from(2)
        }
    })
}

/// Write `DIR/man/<name>.1` (one page per visible subcommand too, `<name>-<sub>.1`) and
/// `DIR/completions/` (`<name>.bash`, `_<name>`, `<name>.fish`).
pub fn write(cmd: Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let mut cmd = cmd;
    clap_mangen::generate_to(cmd.clone(), &man)?;
    let mut written: Vec<PathBuf> = std::fs::read_dir(&man)?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<_>>()?;
    let name = cmd.get_name().to_string();
    for shell in SHELLS {
        written.push(clap_complete::generate_to(
            shell,
            &mut cmd,
            &name,
            &completions,
        )?);
    }
    written.sort();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Command {
        Command::new("tool")
            .version("1.0")
            .about("A tool")
            .arg(Arg::new("input").required(true))
    }

    #[test]
    fn the_hidden_subcommand_parses_but_is_in_no_page_or_completion() {
        let dir = tempfile::tempdir().expect("temp dir");
        let m = parser(example())
            .try_get_matches_from([
                std::ffi::OsString::from("tool"),
                SUBCOMMAND.into(),
                dir.path().into(),
            ])
            .expect("the hidden subcommand parses without the required input");
        // the usual parse still needs the input and offers no `help` subcommand
        let err = parser(example())
            .try_get_matches_from(["tool"])
            .expect_err("input required");
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let help = parser(example()).render_help().to_string();
        assert!(
            !help.contains(SUBCOMMAND) && !help.contains("Commands:"),
            "{help}"
        );
        assert!(parser(example())
            .try_get_matches_from(["tool", "in"])
            .is_ok_and(|m| generate_if_asked(&m, example()).is_none()));

        assert_eq!(generate_if_asked(&m, example()), Some(ExitCode::SUCCESS));
        let files = write(example(), dir.path()).expect("written");
        let names: Vec<String> = files
            .iter()
            .map(|p| {
                let rel = p.strip_prefix(dir.path()).unwrap();
                rel.to_string_lossy().into_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "completions/_tool",
                "completions/tool.bash",
                "completions/tool.fish",
                "man/tool.1"
            ]
        );
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(text.contains("tool"), "{}", f.display());
            assert!(!text.contains(SUBCOMMAND), "{}", f.display());
        }
    }
}
