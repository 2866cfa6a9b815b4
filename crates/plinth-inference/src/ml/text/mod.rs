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

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::{built, check_output, named, Dims, Kernel, Output};

mod normalizer;
mod tokenizer;

pub use normalizer::{string_normalizer, StringNormalizer};
pub use tokenizer::{fuse_tokenizers, Tokenizer};

/// The longest n-gram, and the most tokens skipped between an n-gram's items.
const MAX_GRAM_LENGTH: i64 = 64;
const MAX_SKIP_COUNT: i64 = 64;
/// The widest vocabulary (output columns) a vectorizer may declare.
const MAX_VOCABULARY: usize = 1 << 20;
/// The largest compiled token expression.
const MAX_REGEX_BYTES: usize = 1 << 20;

/// The prefix of the tokenizer's attributes once moved onto its vectorizer.
const FUSED: &str = "plinth_tokenizer_";

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

#[cfg(test)]
mod tests;
