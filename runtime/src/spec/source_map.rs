//! Where each key and value of a YAML document stands (line, column), by JSON pointer.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in a spec file; both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        Pos {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

/// What the map knows of one node.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    /// Where the key naming this node stands (none for the root and sequence items).
    pub key: Option<Pos>,
    /// Where the value starts.
    pub value: Pos,
    /// A plain (unquoted) scalar.
    pub plain: bool,
}

/// JSON pointer → node position, for one YAML document.
#[derive(Debug, Default)]
pub struct SourceMap {
    nodes: HashMap<String, Node>,
}

impl SourceMap {
    /// Maps `text`; a document that does not parse gives an empty map (the YAML error is reported
    /// by the real parser).
    pub fn build(text: &str) -> Self {
        let mut b = Builder::default();
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut b, false);
        SourceMap { nodes: b.nodes }
    }

    pub fn get(&self, pointer: &str) -> Option<&Node> {
        self.nodes.get(pointer)
    }

    /// The position of the node at `pointer` or of its nearest mapped ancestor.
    pub fn value_pos(&self, pointer: &str) -> Pos {
        let mut p = pointer;
        loop {
            if let Some(n) = self.nodes.get(p) {
                return n.value;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return Pos { line: 1, column: 1 },
            }
        }
    }

    /// The position of the key naming `pointer` (else of its value or ancestor).
    pub fn key_pos(&self, pointer: &str) -> Pos {
        match self.nodes.get(pointer) {
            Some(Node { key: Some(k), .. }) => *k,
            _ => self.value_pos(pointer),
        }
    }
}

/// Escapes a key for a JSON pointer segment.
pub fn escape(seg: &str) -> String {
    seg.replace('~', "~0").replace('/', "~1")
}

enum Frame {
    Map {
        pointer: String,
        key: Option<(String, Pos)>,
    },
    Seq {
        pointer: String,
        index: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    nodes: HashMap<String, Node>,
    done: bool,
}

impl Builder {
    /// Registers a value node starting at `mark`; returns its pointer.
    fn value(&mut self, mark: Marker, plain: bool) -> Option<String> {
        let (pointer, key) = match self.stack.last_mut() {
            None if self.done => return None,
            None => {
                self.done = true;
                (String::new(), None)
            }
            Some(Frame::Map { pointer, key }) => {
                let (k, pos) = key.take()?;
                (format!("{pointer}/{}", escape(&k)), Some(pos))
            }
            Some(Frame::Seq { pointer, index }) => {
                let p = format!("{pointer}/{index}");
                *index += 1;
                (p, None)
            }
        };
        self.nodes.insert(
            pointer.clone(),
            Node {
                key,
                value: mark.into(),
                plain,
            },
        );
        Some(pointer)
    }

    /// True when the next node in the current mapping is a key.
    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(s, style, _, _) => {
                if self.expecting_key() {
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some((s, mark.into()));
                    }
                } else {
                    self.value(mark, style == TScalarStyle::Plain);
                }
            }
            Event::Alias(_) if !self.expecting_key() => {
                self.value(mark, false);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A complex (non-scalar) key is not addressable by a JSON pointer; map its
                // contents under a placeholder so the frames stay balanced.
                let pointer = if self.expecting_key() {
                    if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                        *key = Some(("?".into(), mark.into()));
                    }
                    "/?".to_string()
                } else {
                    self.value(mark, false).unwrap_or_default()
                };
                self.stack.push(match ev {
                    Event::MappingStart(..) => Frame::Map { pointer, key: None },
                    _ => Frame::Seq { pointer, index: 0 },
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_keys_and_values() {
        let text =
            "version: 1\nsource:\n  type: generator\n  count: 10\nlist:\n  - a\n  - {b: 2}\n";
        let m = SourceMap::build(text);
        let count = m.get("/source/count").expect("mapped");
        assert_eq!(count.key, Some(Pos { line: 4, column: 3 }));
        assert_eq!(
            count.value,
            Pos {
                line: 4,
                column: 10
            }
        );
        assert!(count.plain);
        assert_eq!(m.get("/list/1/b").map(|n| n.value.line), Some(7));
        assert_eq!(
            m.value_pos("/source/missing"),
            m.get("/source").expect("mapped").value
        );
    }

    #[test]
    fn quoted_scalars_are_not_plain() {
        let m = SourceMap::build("a: \"x\"\nb: y\n");
        assert!(!m.get("/a").expect("mapped").plain);
        assert!(m.get("/b").expect("mapped").plain);
    }
}
