use tract_onnx::pb::{AttributeProto, ModelProto};

use super::normalizer::{change_case, Case};
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
        crate::load(&model.encode_to_vec())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    // The model loads as it is.
    assert!(crate::load(&bytes).is_ok());
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
