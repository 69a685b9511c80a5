//! A problem in a spec: [`Issue`] before it is located (a JSON pointer), [`Diagnostic`] after
//! (file:line:col and a key path).

use std::fmt;

use super::source_map::{Pos, SourceMap};

/// One problem in a spec, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub pos: Pos,
    /// The key path, `source.count` or `transforms[0].config.fields`; empty for the document.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.pos.line, self.pos.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// A problem before it is located: a JSON pointer, whether it points at a key, and a message.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Issue {
    pub pointer: String,
    pub at_key: bool,
    pub message: String,
}

impl Issue {
    pub fn locate(self, file: &str, map: &SourceMap) -> Diagnostic {
        let pos = if self.pointer.is_empty() {
            Pos { line: 1, column: 1 }
        } else if self.at_key {
            map.key_pos(&self.pointer)
        } else {
            map.value_pos(&self.pointer)
        };
        Diagnostic {
            file: file.to_string(),
            pos,
            path: dotted(&self.pointer),
            message: self.message,
        }
    }
}

/// `/transforms/0/config` → `transforms[0].config`.
pub fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_become_key_paths() {
        assert_eq!(
            dotted("/transforms/0/config/fields"),
            "transforms[0].config.fields"
        );
        assert_eq!(dotted(""), "");
    }
}
