//! The Tokenizer (com.microsoft): text split by separators or a token expression, fused into
//! the TfIdfVectorizer that reads it.

use regex::Regex;
use tract_onnx::pb::{AttributeProto, ModelProto, NodeProto};
use tract_onnx::tract_hir::internal::*;

use super::super::named;
use super::{FUSED, MAX_REGEX_BYTES};

// --- Tokenizer settings (carried by the vectorizer) ------------------------------------------

#[derive(Debug)]
pub(super) enum Split {
    /// Every match of the expression is a token.
    Tokens(Regex),
    /// The text between matches of any separator is a token.
    Separators(Regex),
    /// Every character is a token (an empty separator).
    Characters,
}

#[derive(Debug)]
pub struct Tokenizer {
    pub(super) split: Split,
    /// Tokens of fewer characters are dropped.
    pub(super) min_chars: usize,
    /// Start and end marks (U+0002, U+0003) around each text's tokens.
    pub(super) mark: bool,
}

pub(super) fn compile(node: &NodeProto, pattern: &str) -> TractResult<Regex> {
    regex::RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_BYTES)
        .build()
        .map_err(|e| format_err!("{}: the token expression cannot be used: {e}", named(node)))
}

impl Tokenizer {
    /// The tokenizer's settings from its attributes (named `prefix…`).
    pub(super) fn parse(node: &NodeProto, prefix: &str) -> TractResult<Tokenizer> {
        let find = |name: &str| {
            node.attribute
                .iter()
                .find(|a| a.name == format!("{prefix}{name}"))
        };
        let text = |a: &AttributeProto| String::from_utf8_lossy(&a.s).into_owned();
        let separators: Vec<String> = find("separators")
            .map(|a| {
                a.strings
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let tokenexp = find("tokenexp").map(text).filter(|t| !t.is_empty());
        let split = match (tokenexp, separators.is_empty()) {
            (Some(_), false) => bail!("{}: give separators or tokenexp, not both", named(node)),
            (Some(exp), true) => Split::Tokens(compile(node, &exp)?),
            (None, false) if separators.iter().any(String::is_empty) => Split::Characters,
            (None, false) => {
                let any = separators
                    .iter()
                    .map(|s| format!("(?:{s})"))
                    .collect::<Vec<_>>()
                    .join("|");
                Split::Separators(compile(node, &any)?)
            }
            (None, true) => bail!("{}: give separators or tokenexp", named(node)),
        };
        let min_chars = find("mincharnum").map_or(1, |a| a.i);
        ensure!(
            (1..=1 << 16).contains(&min_chars),
            "{}: mincharnum {min_chars} is not between 1 and 65536",
            named(node)
        );
        Ok(Tokenizer {
            split,
            min_chars: min_chars as usize,
            mark: find("mark").is_some_and(|a| a.i != 0),
        })
    }

    /// Appends `text`'s tokens to `out`.
    pub(super) fn tokens<'t>(&self, text: &'t str, out: &mut Vec<&'t str>) {
        if self.mark {
            out.push("\u{2}");
        }
        let long_enough = |t: &&str| t.chars().count() >= self.min_chars;
        match &self.split {
            Split::Tokens(re) => {
                out.extend(re.find_iter(text).map(|m| m.as_str()).filter(long_enough))
            }
            Split::Separators(re) => {
                out.extend(re.split(text).filter(|t| !t.is_empty()).filter(long_enough))
            }
            Split::Characters => out.extend(
                text.char_indices()
                    .map(|(i, c)| &text[i..i + c.len_utf8()])
                    .filter(long_enough),
            ),
        }
        if self.mark {
            out.push("\u{3}");
        }
    }
}

// --- the rewrite -----------------------------------------------------------------------------

/// Moves each `Tokenizer` that feeds a `TfIdfVectorizer` (directly or through `Flatten` and
/// `Identity`) onto the vectorizer, the tokenizer becoming an `Identity`. A tokenizer anywhere
/// else stays, and the model is refused naming it.
pub fn fuse_tokenizers(model: &mut ModelProto) {
    let Some(graph) = model.graph.as_mut() else {
        return;
    };
    let tokenizers: Vec<usize> = graph
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| n.op_type == "Tokenizer")
        .map(|(i, _)| i)
        .collect();
    for t in tokenizers {
        let Some(mut name) = graph.node[t].output.first().cloned() else {
            continue;
        };
        let mut vectorizer = None;
        for _ in 0..8 {
            let consumers: Vec<usize> = graph
                .node
                .iter()
                .enumerate()
                .filter(|(_, n)| n.input.contains(&name))
                .map(|(i, _)| i)
                .collect();
            let [only] = consumers.as_slice() else { break };
            if graph.output.iter().any(|o| o.name == name) {
                break;
            }
            let node = &graph.node[*only];
            match node.op_type.as_str() {
                "TfIdfVectorizer" => {
                    vectorizer = Some(*only);
                    break;
                }
                "Flatten" | "Identity" => match node.output.first() {
                    Some(o) => name = o.clone(),
                    None => break,
                },
                _ => break,
            }
        }
        let Some(v) = vectorizer else { continue };
        if graph.node[v]
            .attribute
            .iter()
            .any(|a| a.name.starts_with(FUSED))
        {
            continue;
        }
        let moved: Vec<AttributeProto> = graph.node[t]
            .attribute
            .iter()
            .map(|a| AttributeProto {
                name: format!("{FUSED}{}", a.name),
                ..a.clone()
            })
            .collect();
        graph.node[v].attribute.extend(moved);
        let tokenizer = &mut graph.node[t];
        tokenizer.op_type = "Identity".into();
        tokenizer.domain.clear();
        tokenizer.attribute.clear();
        tokenizer.input.truncate(1);
    }
}
