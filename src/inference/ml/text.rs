//! Free text: `StringNormalizer` (ai.onnx), the `Tokenizer` of onnxruntime's contrib operators
//! (com.microsoft) and `TfIdfVectorizer` (ai.onnx), what skl2onnx writes for a
//! `TfidfVectorizer` or a `CountVectorizer`.
//!
//! A `Tokenizer` gives each string as many columns as the longest string of the batch has
//! tokens (the others padded), a shape tract cannot know before the run. Followed by a
//! `TfIdfVectorizer` (through `Flatten` or `Identity`), as skl2onnx writes it, the two become
//! one operator instead ([`fuse_tokenizers`]): the tokenizer's settings move to the
//! vectorizer, which tokenizes each row's text itself and counts its n-grams, giving a fixed
//! `[N, vocabulary]`. A row's answer then never depends on the other rows of its batch (with
//! onnxruntime, padding tokens are counted too when the pad value is one of the n-grams; the
//! tokenizers skl2onnx writes never make a token of it).

use std::collections::HashMap;

use regex::Regex;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{AttributeProto, ModelProto, NodeProto};
use tract_onnx::tract_hir::internal::*;

use super::{built, check_output, named, Dims, Kernel, Output};

/// The longest n-gram, and the most tokens skipped between an n-gram's items.
const MAX_GRAM_LENGTH: i64 = 64;
const MAX_SKIP_COUNT: i64 = 64;
/// The widest vocabulary (output columns) a vectorizer may declare.
const MAX_VOCABULARY: usize = 1 << 20;
/// The largest compiled token expression.
const MAX_REGEX_BYTES: usize = 1 << 20;

/// The prefix of the tokenizer's attributes once moved onto its vectorizer.
const FUSED: &str = "plinth_tokenizer_";

// --- StringNormalizer -----------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Lower,
    Upper,
    None,
}

#[derive(Debug)]
pub struct StringNormalizer {
    case: Case,
}

pub fn string_normalizer(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let case = match node
        .get_attr_opt::<&str>("case_change_action")?
        .unwrap_or("NONE")
    {
        "LOWER" => Case::Lower,
        "UPPER" => Case::Upper,
        "NONE" => Case::None,
        other => bail!("{}: unknown case_change_action {other:?}", named(node)),
    };
    let stopwords = node
        .get_attr_opt_vec::<String>("stopwords")?
        .unwrap_or_default();
    ensure!(
        stopwords.is_empty(),
        "{}: removing stopwords changes how many strings there are, and Plinth gives one answer a row; export without stopwords (skl2onnx leaves them out of the vocabulary)",
        named(node)
    );
    built(StringNormalizer { case })
}

/// Changes the case a character at a time, as onnxruntime does (a character that would become
/// several, such as `İ`, is kept).
fn change_case(text: &str, case: Case) -> String {
    fn single(mut changed: impl Iterator<Item = char>, c: char) -> char {
        match (changed.next(), changed.next()) {
            (Some(x), None) => x,
            _ => c,
        }
    }
    match case {
        Case::None => text.to_string(),
        Case::Lower => text.chars().map(|c| single(c.to_lowercase(), c)).collect(),
        Case::Upper => text.chars().map(|c| single(c.to_uppercase(), c)).collect(),
    }
}

impl Kernel for StringNormalizer {
    fn name(&self) -> &'static str {
        "StringNormalizer"
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::new(DatumType::String, Dims::Input)]
    }

    fn check(&self, input: &TypedFact) -> TractResult<()> {
        ensure!(
            input.datum_type == DatumType::String,
            "StringNormalizer takes text, not {:?}",
            input.datum_type
        );
        Ok(())
    }

    fn eval(&self, inputs: TVec<TValue>) -> TractResult<TVec<Tensor>> {
        let x = &inputs[0];
        let out: Vec<String> = x
            .try_as_plain_ram()?
            .as_slice::<String>()?
            .iter()
            .map(|s| change_case(s, self.case))
            .collect();
        Ok(tvec![tract_ndarray::ArrayD::from_shape_vec(
            x.shape().to_vec(),
            out
        )?
        .into_tensor()])
    }
}

// --- Tokenizer settings (carried by the vectorizer) ------------------------------------------

#[derive(Debug)]
enum Split {
    /// Every match of the expression is a token.
    Tokens(Regex),
    /// The text between matches of any separator is a token.
    Separators(Regex),
    /// Every character is a token (an empty separator).
    Characters,
}

#[derive(Debug)]
pub struct Tokenizer {
    split: Split,
    /// Tokens of fewer characters are dropped.
    min_chars: usize,
    /// Start and end marks (U+0002, U+0003) around each text's tokens.
    mark: bool,
}

fn compile(node: &NodeProto, pattern: &str) -> TractResult<Regex> {
    regex::RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_BYTES)
        .build()
        .map_err(|e| format_err!("{}: the token expression cannot be used: {e}", named(node)))
}

impl Tokenizer {
    /// The tokenizer's settings from its attributes (named `prefix…`).
    fn parse(node: &NodeProto, prefix: &str) -> TractResult<Tokenizer> {
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
    fn tokens<'t>(&self, text: &'t str, out: &mut Vec<&'t str>) {
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

// --- TfIdfVectorizer -------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Tf,
    Idf,
    TfIdf,
}

/// The n-grams as a trie: node 0 is the root; a node's id is its n-gram's output column + 1
/// (0 for a node that only begins longer n-grams).
#[derive(Debug, Default)]
struct Trie<K: std::hash::Hash + Eq> {
    children: Vec<HashMap<K, usize>>,
    ids: Vec<usize>,
}

impl<K: std::hash::Hash + Eq> Trie<K> {
    fn new() -> Self {
        Trie {
            children: vec![HashMap::new()],
            ids: vec![0],
        }
    }

    fn insert(&mut self, gram: impl IntoIterator<Item = K>, column: usize) {
        let mut node = 0;
        for item in gram {
            let next = self.children.len();
            node = *self.children[node].entry(item).or_insert(next);
            if node == next {
                self.children.push(HashMap::new());
                self.ids.push(0);
            }
        }
        self.ids[node] = column + 1;
    }
}

#[derive(Debug)]
enum Pool {
    Strings(Trie<String>),
    Ints(Trie<i64>),
}

#[derive(Debug)]
pub struct TfIdfVectorizer {
    pool: Pool,
    min_gram: usize,
    max_gram: usize,
    max_skip: usize,
    mode: Mode,
    weights: Vec<f32>,
    columns: usize,
    tokenizer: Option<Tokenizer>,
}

pub fn tfidf_vectorizer(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    built(TfIdfVectorizer::parse(node)?)
}

impl TfIdfVectorizer {
    /// The vectorizer an ONNX node describes, its sizes checked.
    fn parse(node: &NodeProto) -> TractResult<TfIdfVectorizer> {
        let int = |name: &str, default: i64| -> TractResult<i64> {
            Ok(node.get_attr_opt::<i64>(name)?.unwrap_or(default))
        };
        let (min_gram, max_gram, max_skip) = (
            int("min_gram_length", 1)?,
            int("max_gram_length", 1)?,
            int("max_skip_count", 0)?,
        );
        ensure!(
            1 <= min_gram && min_gram <= max_gram && max_gram <= MAX_GRAM_LENGTH,
            "{}: n-gram lengths {min_gram} to {max_gram} are not within 1 to {MAX_GRAM_LENGTH}",
            named(node)
        );
        ensure!(
            (0..=MAX_SKIP_COUNT).contains(&max_skip),
            "{}: max_skip_count {max_skip} is not within 0 to {MAX_SKIP_COUNT}",
            named(node)
        );
        let mode = match node.get_attr_opt::<&str>("mode")?.unwrap_or("TF") {
            "TF" => Mode::Tf,
            "IDF" => Mode::Idf,
            "TFIDF" => Mode::TfIdf,
            other => bail!("{}: unknown mode {other:?}", named(node)),
        };
        let counts: Vec<i64> = node.get_attr_opt_vec("ngram_counts")?.unwrap_or_default();
        let indexes: Vec<i64> = node.get_attr_opt_vec("ngram_indexes")?.unwrap_or_default();
        let strings: Option<Vec<String>> = node.get_attr_opt_vec("pool_strings")?;
        let ints: Option<Vec<i64>> = node.get_attr_opt_vec("pool_int64s")?;
        let weights: Vec<f32> = node.get_attr_opt_vec("weights")?.unwrap_or_default();
        let pool_len = match (&strings, &ints) {
            (Some(s), None) => s.len(),
            (None, Some(i)) => i.len(),
            _ => bail!(
                "{}: exactly one of pool_strings and pool_int64s must be given",
                named(node)
            ),
        };
        ensure!(
        !counts.is_empty() && counts.len() <= max_gram as usize,
        "{}: ngram_counts must give where each n-gram length starts in the pool (1 to {max_gram} of them)",
        named(node)
    );
        // The pool's n-grams: length n from counts[n-1] to counts[n] (or the pool's end).
        let mut grams: Vec<(usize, usize)> = Vec::new(); // (start in the pool, length)
        for (i, &start) in counts.iter().enumerate() {
            let n = i + 1;
            let end = counts.get(i + 1).copied().unwrap_or(pool_len as i64);
            ensure!(
                0 <= start
                    && start <= end
                    && end <= pool_len as i64
                    && (end - start) % n as i64 == 0,
                "{}: ngram_counts {counts:?} do not cut a pool of {pool_len} into whole {n}-grams",
                named(node)
            );
            let mut at = start as usize;
            while at < end as usize {
                grams.push((at, n));
                at += n;
            }
        }
        ensure!(
            grams.len() == indexes.len(),
            "{}: the pool has {} n-grams but ngram_indexes gives {}",
            named(node),
            grams.len(),
            indexes.len()
        );
        let columns = indexes.iter().copied().max().unwrap_or(-1) + 1;
        ensure!(
            indexes.iter().all(|&i| i >= 0) && columns as usize <= MAX_VOCABULARY,
            "{}: ngram_indexes must be columns from 0 to {}",
            named(node),
            MAX_VOCABULARY - 1
        );
        let columns = columns as usize;
        ensure!(
            weights.is_empty() || weights.len() >= columns,
            "{}: {} weights for {columns} columns",
            named(node),
            weights.len()
        );
        let pool = match (strings, ints) {
            (Some(s), _) => {
                let mut trie = Trie::new();
                for (&(at, n), &column) in grams.iter().zip(&indexes) {
                    trie.insert(s[at..at + n].iter().cloned(), column as usize);
                }
                Pool::Strings(trie)
            }
            (None, Some(i)) => {
                let mut trie = Trie::new();
                for (&(at, n), &column) in grams.iter().zip(&indexes) {
                    trie.insert(i[at..at + n].iter().copied(), column as usize);
                }
                Pool::Ints(trie)
            }
            _ => unreachable!("checked above"),
        };
        let tokenizer = if node.attribute.iter().any(|a| a.name.starts_with(FUSED)) {
            ensure!(
                matches!(pool, Pool::Strings(_)),
                "{}: a tokenizer gives text, and the pool holds integers",
                named(node)
            );
            Some(Tokenizer::parse(node, FUSED)?)
        } else {
            None
        };
        Ok(TfIdfVectorizer {
            pool,
            min_gram: min_gram as usize,
            max_gram: max_gram as usize,
            max_skip: max_skip as usize,
            mode,
            weights,
            columns,
            tokenizer,
        })
    }

    /// Adds one row's n-gram counts to `counts`, as onnxruntime counts them: each skip
    /// distance from 0 to `max_skip` in turn, every start position, the n-grams of each length
    /// from the first to be counted; unigrams once (they have no skip).
    fn count<K: std::hash::Hash + Eq + std::borrow::Borrow<Q>, Q: std::hash::Hash + Eq + ?Sized>(
        &self,
        trie: &Trie<K>,
        row: &[&Q],
        counts: &mut [f32],
    ) {
        let mut first = self.min_gram;
        for skip in 0..=self.max_skip {
            for start in 0..row.len() {
                // The first n-gram counted needs this many items at this distance.
                if start + skip * (first - 1) >= row.len() {
                    break;
                }
                let mut node = 0;
                let mut at = start;
                let mut n = 1;
                while n <= self.max_gram && at < row.len() {
                    let Some(&next) = trie.children[node].get(row[at]) else {
                        break;
                    };
                    node = next;
                    if n >= first && trie.ids[node] != 0 {
                        counts[trie.ids[node] - 1] += 1.0;
                    }
                    n += 1;
                    at += skip + 1;
                }
            }
            if first == 1 {
                first = 2;
                if first > self.max_gram {
                    break;
                }
            }
        }
    }

    fn weigh(&self, counts: &mut [f32]) {
        let weight = |c: usize| self.weights.get(c).copied().unwrap_or(1.0);
        for (c, v) in counts.iter_mut().enumerate() {
            *v = match self.mode {
                Mode::Tf => *v,
                Mode::Idf if *v > 0.0 => weight(c),
                Mode::Idf => 0.0,
                Mode::TfIdf => *v * weight(c),
            };
        }
    }
}

impl Kernel for TfIdfVectorizer {
    fn name(&self) -> &'static str {
        "TfIdfVectorizer"
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::new(DatumType::F32, Dims::Columns(self.columns))]
    }

    fn check(&self, input: &TypedFact) -> TractResult<()> {
        ensure!(
            input.rank() == 2,
            "TfIdfVectorizer takes rows of tokens [N, tokens]; this input has rank {}",
            input.rank()
        );
        let ok = match self.pool {
            Pool::Strings(_) => input.datum_type == DatumType::String,
            Pool::Ints(_) => matches!(input.datum_type, DatumType::I64 | DatumType::I32),
        };
        ensure!(
            ok,
            "TfIdfVectorizer: its pool and its input ({:?}) are not of one type",
            input.datum_type
        );
        Ok(())
    }

    fn eval(&self, inputs: TVec<TValue>) -> TractResult<TVec<Tensor>> {
        let x = &inputs[0];
        ensure!(x.rank() == 2, "TfIdfVectorizer takes rows of tokens");
        let (rows, width) = (x.shape()[0], x.shape()[1]);
        check_output("TfIdfVectorizer", rows, self.columns)?;
        let mut out = vec![0f32; rows * self.columns];
        match &self.pool {
            Pool::Strings(trie) => {
                let x = x.try_as_plain_ram()?;
                let x = x.as_slice::<String>()?;
                let mut tokens: Vec<&str> = Vec::new();
                for (r, row) in x.chunks(width.max(1)).enumerate().take(rows) {
                    tokens.clear();
                    match &self.tokenizer {
                        Some(t) => row.iter().for_each(|text| t.tokens(text, &mut tokens)),
                        None => tokens.extend(row.iter().map(String::as_str)),
                    }
                    let counts = &mut out[r * self.columns..(r + 1) * self.columns];
                    self.count::<String, str>(trie, &tokens, counts);
                    self.weigh(counts);
                }
            }
            Pool::Ints(trie) => {
                let x = x.cast_to::<i64>()?;
                let x = x.try_as_plain_ram()?;
                let x = x.as_slice::<i64>()?;
                for (r, row) in x.chunks(width.max(1)).enumerate().take(rows) {
                    let tokens: Vec<&i64> = row.iter().collect();
                    let counts = &mut out[r * self.columns..(r + 1) * self.columns];
                    self.count::<i64, i64>(trie, &tokens, counts);
                    self.weigh(counts);
                }
            }
        }
        Ok(tvec![tensor1(&out).into_shape(&[rows, self.columns])?])
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            ints: v.to_vec(),
            r#type: 7,
            ..Default::default()
        }
    }

    fn int(name: &str, i: i64) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            i,
            r#type: 2,
            ..Default::default()
        }
    }

    fn text(name: &str, s: &str) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            s: s.as_bytes().to_vec(),
            r#type: 3,
            ..Default::default()
        }
    }

    fn node(attribute: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            op_type: "TfIdfVectorizer".into(),
            input: vec!["x".into()],
            output: vec!["y".into()],
            attribute,
            ..Default::default()
        }
    }

    fn vectorizer(attribute: Vec<AttributeProto>) -> TfIdfVectorizer {
        TfIdfVectorizer::parse(&node(attribute)).unwrap()
    }

    /// The ONNX specification's examples (onnx/backend/test/case/node/tfidfvectorizer.py): the
    /// pool [2, 3, 5, 4, 5, 6, 7, 8, 6, 7] (four unigrams, three bigrams), columns 0 to 6.
    fn spec(extra: Vec<AttributeProto>) -> TfIdfVectorizer {
        let mut a = vec![
            ints("ngram_counts", &[0, 4]),
            ints("ngram_indexes", &[0, 1, 2, 3, 4, 5, 6]),
            ints("pool_int64s", &[2, 3, 5, 4, 5, 6, 7, 8, 6, 7]),
            text("mode", "TF"),
        ];
        a.extend(extra);
        vectorizer(a)
    }

    fn run(v: &TfIdfVectorizer, rows: &[&[i64]]) -> Vec<Vec<f32>> {
        let Pool::Ints(trie) = &v.pool else { panic!() };
        rows.iter()
            .map(|row| {
                let tokens: Vec<&i64> = row.iter().collect();
                let mut counts = vec![0f32; v.columns];
                v.count::<i64, i64>(trie, &tokens, &mut counts);
                v.weigh(&mut counts);
                counts
            })
            .collect()
    }

    const INPUT: [&[i64]; 2] = [&[1, 1, 3, 3, 3, 7], &[8, 6, 7, 5, 6, 8]];

    #[test]
    fn the_specifications_cases_count_as_written() {
        // tf_batch_onlybigrams_skip0 (7 and 8 are not next to each other in the second row)
        let v = spec(vec![int("min_gram_length", 2), int("max_gram_length", 2)]);
        assert_eq!(
            run(&v, &INPUT),
            [
                vec![0., 0., 0., 0., 0., 0., 0.],
                vec![0., 0., 0., 0., 1., 0., 1.]
            ]
        );
        // tf_only_bigrams_skip0, one row of twelve
        assert_eq!(
            run(&v, &[&[1, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8]]),
            [vec![0., 0., 0., 0., 1., 1., 1.]]
        );
        // tf_batch_onlybigrams_skip5
        let v = spec(vec![
            int("min_gram_length", 2),
            int("max_gram_length", 2),
            int("max_skip_count", 5),
        ]);
        assert_eq!(
            run(&v, &INPUT),
            [
                vec![0., 0., 0., 0., 0., 0., 0.],
                vec![0., 0., 0., 0., 1., 1., 1.]
            ]
        );
        // tf_batch_uniandbigrams_skip5
        let v = spec(vec![
            int("min_gram_length", 1),
            int("max_gram_length", 2),
            int("max_skip_count", 5),
        ]);
        assert_eq!(
            run(&v, &INPUT),
            [
                vec![0., 3., 0., 0., 0., 0., 0.],
                vec![0., 0., 1., 0., 1., 1., 1.]
            ]
        );
        // tf_uniandbigrams_skip5 on the one-row input of the specification.
        let v = spec(vec![
            int("min_gram_length", 1),
            int("max_gram_length", 2),
            int("max_skip_count", 5),
        ]);
        assert_eq!(
            run(&v, &[&[1, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8]]),
            [vec![0., 3., 1., 0., 1., 3., 1.]]
        );
        // tf_onlybigrams_levelempty: an empty pool of unigrams.
        let v = vectorizer(vec![
            ints("ngram_counts", &[0, 0]),
            ints("ngram_indexes", &[0, 1, 2]),
            ints("pool_int64s", &[5, 6, 7, 8, 6, 7]),
            int("min_gram_length", 2),
            int("max_gram_length", 2),
            int("max_skip_count", 0),
        ]);
        assert_eq!(
            run(&v, &[&[1, 1, 3, 3, 3, 7, 8, 6, 7, 5, 6, 8]]),
            [vec![1., 1., 1.]]
        );
    }

    #[test]
    fn idf_and_tfidf_weigh_the_counts() {
        let weights = AttributeProto {
            name: "weights".into(),
            floats: vec![1., 2., 3., 4., 5., 6., 7.],
            r#type: 6,
            ..Default::default()
        };
        let mut v = spec(vec![
            int("min_gram_length", 1),
            int("max_gram_length", 2),
            int("max_skip_count", 5),
            weights,
        ]);
        v.mode = Mode::TfIdf;
        assert_eq!(run(&v, &INPUT)[1], vec![0., 0., 3., 0., 5., 6., 7.]);
        v.mode = Mode::Idf;
        assert_eq!(run(&v, &INPUT)[1], vec![0., 0., 3., 0., 5., 6., 7.]);
    }

    #[test]
    fn the_tokenizer_splits_as_configured() {
        let parse = |attrs: Vec<AttributeProto>| {
            let n = NodeProto {
                op_type: "Tokenizer".into(),
                attribute: attrs,
                ..Default::default()
            };
            Tokenizer::parse(&n, "")
        };
        let tokens = |t: &Tokenizer, s: &str| {
            let mut out = Vec::new();
            t.tokens(s, &mut out);
            out.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        };
        let t = parse(vec![
            text("tokenexp", "[a-zA-Z0-9_]+"),
            int("mincharnum", 2),
        ])
        .unwrap();
        assert_eq!(tokens(&t, "The cat, a dog!"), ["The", "cat", "dog"]);
        let separators = AttributeProto {
            name: "separators".into(),
            strings: vec![b" ".to_vec(), b";".to_vec()],
            ..Default::default()
        };
        let t = parse(vec![separators, int("mark", 1), int("mincharnum", 1)]).unwrap();
        assert_eq!(tokens(&t, "ab c;;d"), ["\u{2}", "ab", "c", "d", "\u{3}"]);
        let every = AttributeProto {
            name: "separators".into(),
            strings: vec![b"".to_vec()],
            ..Default::default()
        };
        let t = parse(vec![every]).unwrap();
        assert_eq!(tokens(&t, "né"), ["n", "é"]);
        assert!(parse(vec![text("tokenexp", "(")]).is_err());
        assert!(parse(vec![]).is_err());
    }

    /// The zoo's TF-IDF pipeline with its vectorizer's or tokenizer's attributes changed: what
    /// the file implies is capped, and refused at load naming the attribute.
    #[test]
    fn sizes_a_file_implies_are_refused_at_load() {
        use prost::Message;
        let bytes = std::fs::read("tests/fixtures/zoo/tfidf_logistic_regression.onnx").unwrap();
        let changed = |op: &str, attr: AttributeProto| {
            let mut model = ModelProto::decode(bytes.as_slice()).unwrap();
            let graph = model.graph.as_mut().unwrap();
            let node = graph.node.iter_mut().find(|n| n.op_type == op).unwrap();
            node.attribute.retain(|a| a.name != attr.name);
            node.attribute.push(attr);
            crate::inference::load(&model.encode_to_vec())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        // The model loads as it is.
        assert!(crate::inference::load(&bytes).is_ok());
        let mut huge = ints("ngram_indexes", &[]);
        huge.ints = vec![1 << 40; 1];
        let e = changed("TfIdfVectorizer", huge);
        assert!(
            e.contains("the pool has") || e.contains("ngram_indexes"),
            "{e}"
        );
        let e = changed("TfIdfVectorizer", int("max_skip_count", 1 << 30));
        assert!(e.contains("max_skip_count"), "{e}");
        let e = changed("TfIdfVectorizer", int("max_gram_length", 1 << 30));
        assert!(e.contains("n-gram lengths"), "{e}");
        let e = changed("Tokenizer", text("tokenexp", "(a{1000}){1000}"));
        assert!(e.contains("token expression"), "{e}");
        let e = changed("Tokenizer", int("mincharnum", 1 << 40));
        assert!(e.contains("mincharnum"), "{e}");
        let e = changed("StringNormalizer", {
            let mut a = text("stopwords", "");
            a.r#type = 8;
            a.strings = vec![b"the".to_vec()];
            a
        });
        assert!(e.contains("stopwords"), "{e}");
    }

    #[test]
    fn case_changes_a_character_at_a_time() {
        assert_eq!(change_case("Straße İS ΣΑΣ", Case::Lower), "straße İs σασ");
        assert_eq!(change_case("straße", Case::Upper), "STRAßE");
    }
}
