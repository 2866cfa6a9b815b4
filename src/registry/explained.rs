//! Which of the card's features an explanation covers, and explanations of rows of them, in the
//! explained input's column order (the result page and the APIs sort them; batch jobs and
//! `plinth score` write them as columns).

use crate::registry::card::Card;
use crate::registry::encode::explained_input;
use plinth_inference::explain::Explainer;
use plinth_inference::LoadedModel;

/// Where the explained input's columns sit among the card's features: the first, and how many.
pub fn explained_span(loaded: &LoadedModel, explainer: &Explainer) -> (usize, usize) {
    let mut offset = 0;
    for spec in &loaded.signature.inputs {
        if spec.name == explainer.input() {
            return (offset, spec.row_width());
        }
        offset += spec.row_width();
    }
    (offset, 0)
}

/// The names of the features an explanation gives contributions for, in its columns' order.
pub fn explained_features(card: &Card, loaded: &LoadedModel, explainer: &Explainer) -> Vec<String> {
    let (offset, width) = explained_span(loaded, explainer);
    (0..width)
        .map(|c| {
            card.features
                .get(offset + c)
                .map_or_else(|| format!("column {c}"), |f| f.name.clone())
        })
        .collect()
}

/// One row's explanation, its contributions in the explained input's column order.
pub struct RowExplained {
    /// The explained class's name (a classifier's).
    pub target: Option<String>,
    pub base: f64,
    pub output: f64,
    pub contributions: Vec<f64>,
}

/// What explaining answered rows needs: the version's card, graph, explainer and reference
/// covers, and the rows (card features) with the class each was answered with (a classifier's
/// label; the explainer's own choice where there is none).
pub struct Answered<'a> {
    pub card: &'a Card,
    pub loaded: &'a LoadedModel,
    pub explainer: &'a Explainer,
    pub covers: &'a [f64],
    pub rows: &'a [Vec<f64>],
    pub labels: &'a [Option<String>],
}

/// Explains each answered row for the class it was answered with.
pub fn explain_columns(answered: &Answered) -> Result<Vec<RowExplained>, String> {
    let Answered {
        card,
        loaded,
        explainer,
        covers,
        rows,
        labels,
    } = *answered;
    let (x, width) = explained_input(card, loaded, explainer, rows)?;
    // A classifier's labels as answers give them: the card's, when it names as many.
    let names: Vec<String> = match (explainer.class_labels(), &card.labels) {
        (Some(model), Some(card)) if card.len() == model.len() => card.clone(),
        (Some(model), _) => model,
        (None, _) => Vec::new(),
    };
    let mut out = Vec::with_capacity(rows.len());
    for (r, row) in x.chunks_exact(width.max(1)).enumerate() {
        let e = explainer.explain(covers, row)?;
        let label = labels.get(r).and_then(|l| l.as_deref());
        let k = explainer.target_for(&e, label, &names);
        let t = e.n_targets;
        out.push(RowExplained {
            target: explainer
                .class_of(k, &e)
                .and_then(|c| names.get(c).cloned()),
            base: e.expected[k],
            output: e.score[k],
            contributions: (0..width).map(|c| e.contributions[c * t + k]).collect(),
        });
    }
    Ok(out)
}
