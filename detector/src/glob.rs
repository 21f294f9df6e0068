//! Globs over a whole name or path, as the policy and the service's configuration
//! write them: `*` any run of bytes (slashes included), `?` one byte, every other
//! character itself.
//!
//! Matching is globset's (a compiled regex over bytes): linear in the text, so a hostile
//! guest path costs no backtracking, and names that are not UTF-8 match byte for byte.

use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

/// A compiled glob; equal to another when written the same.
#[derive(Debug, Clone)]
pub struct Glob {
    text: String,
    matcher: globset::GlobMatcher,
}

impl Glob {
    /// Compile `pattern` (globset's brackets and braces are taken literally).
    pub fn new(pattern: &str) -> Result<Glob, globset::Error> {
        let mut escaped = String::with_capacity(pattern.len() + 8);
        let mut last = None;
        for c in pattern.chars() {
            match c {
                // `**` means the same as `*` here, but is a path component to globset
                '*' if last == Some('*') => continue,
                '*' | '?' => escaped.push(c),
                c => escaped.push_str(&globset::escape(c.encode_utf8(&mut [0; 4]))),
            }
            last = Some(c);
        }
        let matcher = globset::GlobBuilder::new(&escaped)
            .literal_separator(false)
            .backslash_escape(false)
            .build()?
            .compile_matcher();
        Ok(Glob {
            text: pattern.to_string(),
            matcher,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the glob matches all of `text`.
    pub fn is_match(&self, text: &[u8]) -> bool {
        self.matcher
            .is_match(Path::new(std::ffi::OsStr::from_bytes(text)))
    }
}

impl PartialEq for Glob {
    fn eq(&self, other: &Glob) -> bool {
        self.text == other.text
    }
}

impl Eq for Glob {}

impl PartialEq<&str> for Glob {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(pattern: &[u8], text: &[u8]) -> bool {
        Glob::new(std::str::from_utf8(pattern).unwrap())
            .unwrap()
            .is_match(text)
    }

    #[test]
    fn star_and_question_mark_over_whole_paths() {
        assert!(glob(b"/tmp/*", b"/tmp/x/y"));
        assert!(!glob(b"/tmp/*", b"/usr/tmp/x"));
        assert!(glob(b"*/.*/*", b"/home/u/.cache/miner"));
        assert!(glob(b"/bin/?s", b"/bin/ls"));
        assert!(!glob(b"/bin/?s", b"/bin/lss"));
        assert!(glob(b"*", b""));
        assert!(glob(b"a*b*c", b"aXXbYYc"));
        assert!(!glob(b"a*b*c", b"aXXbYY"));
        assert!(glob(b"build-*", b"build-42"));
        assert!(!glob(b"build-*", b"web"));
        assert!(glob(b"w?b", b"web"));
    }

    #[test]
    fn guest_bytes_match_byte_for_byte() {
        // not UTF-8, a newline, and `?` taking one byte of a multi-byte character
        assert!(glob(b"/tmp/*", b"/tmp/\xff\xfe"));
        assert!(glob(b"/tmp/?", b"/tmp/\xff"));
        assert!(glob(b"/tmp/*", b"/tmp/a\nb"));
        assert!(glob(b"/tmp/??", "/tmp/é".as_bytes()));
        assert!(!glob(b"/tmp/?", "/tmp/é".as_bytes()));
    }

    #[test]
    fn everything_but_star_and_question_mark_is_literal() {
        assert!(glob(b"/x/[ab]", b"/x/[ab]"));
        assert!(!glob(b"/x/[ab]", b"/x/a"));
        assert!(glob(b"/x/{a,b}", b"/x/{a,b}"));
        assert!(!glob(b"/x/{a,b}", b"/x/a"));
        assert!(glob(b"/x/a\\*", b"/x/a\\yz"));
        assert!(glob(b"!x", b"!x"));
        // `**` is `*`, also between slashes
        assert!(glob(b"/a/**/b", b"/a//b"));
        assert!(!glob(b"/a/**/b", b"/a/b"));
        assert!(glob(b"**", b"/any/thing"));
    }

    #[test]
    fn hostile_input_stays_fast() {
        let long = vec![b'a'; 100_000];
        assert!(!glob(b"*a*a*a*b", &long));
        assert!(!glob("*a".repeat(40).as_bytes(), "a".repeat(39).as_bytes()));
    }
}
