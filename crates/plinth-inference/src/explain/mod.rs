//! Explanations: why a model answered what it did, computed exactly from the model itself.
//!
//! At load, the graph is searched for a part Plinth can explain exactly:
//!
//! - **Trees**: one tree ensemble (`TreeEnsembleClassifier`, `TreeEnsembleRegressor`, opset 5's
//!   `TreeEnsemble`) reading the model's one input (directly, or through `Cast`, `Identity`,
//!   `Reshape`, `Flatten`). Each prediction gets exact path-dependent TreeSHAP values
//!   ([`crate::ml::tree::shap`]) per feature, in the ensemble's raw score (before
//!   its base values' post-transform, named in the answer), with the covers counted on the
//!   version's reference data: the exporters do not write `nodes_hitrates`, so Plinth counts.
//!
//! - **Linear models**: one `LinearRegressor` or `LinearClassifier` reading the input through
//!   column-wise steps only (`Scaler`, `Imputer`, and the pass-through nodes above). Each
//!   feature's contribution is `coefficient × (z − mean z)`, where `z` is the value the linear
//!   node sees (after scaling and imputing) and the mean is over the reference data; as the steps
//!   act column by column, each contribution belongs to the input column it came from. This is
//!   what `shap.LinearExplainer` computes (independent features).
//!
//! Any other graph has no explanation, and says why ([`Explainer::from_onnx`]) rather than
//! approximating silently.

use tract_onnx::pb::{GraphProto, ModelProto, NodeProto};

use crate::ml::tree::{self, shap::Explanation, Trees};
use crate::ml::{Labels, PostTransform};

/// What a model's explanations are computed from.
#[derive(Debug)]
pub enum Explainer {
    Trees {
        /// The graph input the trees read (one row per prediction).
        input: String,
        trees: Box<Trees>,
    },
    Linear {
        input: String,
        linear: Linear,
    },
}

/// A linear node and the column-wise steps before it.
#[derive(Debug)]
pub struct Linear {
    /// `[targets × features]`.
    coefficients: Vec<f64>,
    intercepts: Vec<f64>,
    features: usize,
    /// The steps from the input to the linear node, in order.
    steps: Vec<Step>,
    post_transform: PostTransform,
    classes: Option<Labels>,
}

/// A column-wise step before a linear node.
#[derive(Debug)]
enum Step {
    /// `(x − offset) × scale`, per column (one value for every column when there is one).
    Scale { offset: Vec<f64>, scale: Vec<f64> },
    /// A missing value (NaN, or the marker) replaced by the column's imputed value.
    Impute { values: Vec<f64>, marker: f64 },
}

impl Step {
    fn apply(&self, x: f64, column: usize) -> f64 {
        let at = |v: &[f64]| v.get(column).or_else(|| v.first()).copied();
        match self {
            Step::Scale { offset, scale } => {
                (x - at(offset).unwrap_or(0.0)) * at(scale).unwrap_or(1.0)
            }
            Step::Impute { values, marker } => {
                let missing = if marker.is_nan() {
                    x.is_nan()
                } else {
                    x == *marker
                };
                if missing {
                    at(values).unwrap_or(x)
                } else {
                    x
                }
            }
        }
    }
}

impl Linear {
    fn read(node: &NodeProto, steps: Vec<Step>) -> Result<Linear, String> {
        let floats = |name: &str| -> Result<Vec<f64>, String> {
            Ok(node
                .get_attr_opt_vec::<f32>(name)
                .map_err(|e| e.to_string())?
                .unwrap_or_default()
                .into_iter()
                .map(f64::from)
                .collect())
        };
        let coefficients = floats("coefficients")?;
        let intercepts = floats("intercepts")?;
        let classes = if node.op_type == "LinearClassifier" {
            let ints: Option<Vec<i64>> = node
                .get_attr_opt_vec("classlabels_ints")
                .map_err(|e| e.to_string())?;
            let strings: Option<Vec<String>> = node
                .get_attr_opt_vec("classlabels_strings")
                .map_err(|e| e.to_string())?;
            Some(match (ints, strings) {
                (Some(i), _) if !i.is_empty() => Labels::Ints(i),
                (_, Some(s)) => Labels::Strings(s),
                _ => return Err("the classifier has no labels".into()),
            })
        } else {
            None
        };
        let targets = match &classes {
            Some(_) => intercepts.len(),
            None => node
                .get_attr_opt::<i64>("targets")
                .map_err(|e| e.to_string())?
                .unwrap_or(1)
                .max(1) as usize,
        };
        if targets == 0 || coefficients.is_empty() || !coefficients.len().is_multiple_of(targets) {
            return Err("the linear model's coefficients do not fit its targets".into());
        }
        let post_transform = match node
            .get_attr_opt::<&str>("post_transform")
            .map_err(|e| e.to_string())?
            .unwrap_or("NONE")
        {
            "SOFTMAX" => PostTransform::Softmax,
            "LOGISTIC" => PostTransform::Logistic,
            "SOFTMAX_ZERO" => PostTransform::SoftmaxZero,
            "PROBIT" => PostTransform::Probit,
            _ => PostTransform::None,
        };
        Ok(Linear {
            features: coefficients.len() / targets,
            intercepts: (0..targets)
                .map(|k| intercepts.get(k).copied().unwrap_or(0.0))
                .collect(),
            coefficients,
            steps,
            post_transform,
            classes,
        })
    }

    /// What the linear node sees of one input row.
    fn z(&self, row: &[f32]) -> Vec<f64> {
        (0..self.features)
            .map(|c| {
                let x = row.get(c).map_or(f64::NAN, |v| f64::from(*v));
                self.steps.iter().fold(x, |x, s| s.apply(x, c))
            })
            .collect()
    }

    /// The mean of `z` over the reference rows (gaps imputed as the model imputes them).
    fn means(&self, x: &[f32], n: usize, width: usize) -> Result<Vec<f64>, String> {
        if width < self.features {
            return Err(format!(
                "the linear model reads {} columns but the input has {width}",
                self.features
            ));
        }
        let mut sums = vec![0.0; self.features];
        let mut counts = vec![0usize; self.features];
        for row in x.chunks_exact(width).take(n) {
            for (c, z) in self.z(row).into_iter().enumerate() {
                if z.is_finite() {
                    sums[c] += z;
                    counts[c] += 1;
                }
            }
        }
        if counts.contains(&0) {
            return Err("a column of the reference data has no value to average".into());
        }
        Ok(sums
            .iter()
            .zip(&counts)
            .map(|(s, c)| s / *c as f64)
            .collect())
    }

    fn explain(&self, means: &[f64], row: &[f32]) -> Result<Explanation, String> {
        let z = self.z(row);
        if let Some(c) = z.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "column {c} has no value the linear model can weigh"
            ));
        }
        let (t, f) = (self.intercepts.len(), self.features);
        let mut e = Explanation {
            expected: self.intercepts.clone(),
            contributions: vec![0.0; row.len().max(f) * t],
            score: self.intercepts.clone(),
            n_targets: t,
        };
        for k in 0..t {
            for c in 0..f {
                let w = self.coefficients[k * f + c];
                e.expected[k] += w * means[c];
                e.score[k] += w * z[c];
                e.contributions[c * t + k] = w * (z[c] - means[c]);
            }
        }
        Ok(e)
    }
}

/// Nodes that pass a row on unchanged in value (a tree may read the input through them).
const PASS_THROUGH: &[&str] = &["Cast", "Identity", "Reshape", "Flatten"];

impl Explainer {
    /// The explainable part of an ONNX file, or why there is none. Built when a version's
    /// predictions are first explained, not at load: a model nobody asks about keeps one copy of
    /// its trees.
    pub fn from_onnx(bytes: &[u8]) -> Result<Explainer, String> {
        use tract_onnx::prelude::Framework;
        let read = std::panic::catch_unwind(|| {
            tract_onnx::onnx().proto_model_for_read(&mut std::io::Cursor::new(bytes))
        });
        match read {
            Ok(Ok(mut proto)) => {
                // A map input read as the columns the model serves (see `ml::maps`).
                crate::ml::maps::densify(&mut proto, crate::MAX_INPUT_COLUMNS)?;
                Explainer::find(&proto)
            }
            Ok(Err(e)) => Err(format!("the model file cannot be read: {e}")),
            Err(_) => Err("the model file cannot be read".into()),
        }
    }

    /// The explainable part of a graph, or why there is none.
    pub fn find(proto: &ModelProto) -> Result<Explainer, String> {
        let none = "no explanation for this model type (Plinth explains tree ensembles and \
                    linear models exactly; this graph is neither, on one input)";
        let graph = proto.graph.as_ref().ok_or(none)?;
        let initializers: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<&str> = graph
            .input
            .iter()
            .map(|i| i.name.as_str())
            .filter(|n| !initializers.contains(n))
            .collect();
        let [input] = inputs.as_slice() else {
            return Err(none.into());
        };
        let mut found = None;
        for node in &graph.node {
            match tree::trees_of(node) {
                Ok(Some(trees)) if found.is_none() => found = Some((node, trees)),
                Ok(Some(_)) => return Err(none.into()),
                Ok(None) => {}
                Err(e) => return Err(format!("the trees cannot be read: {e}")),
            }
        }
        if let Some((node, trees)) = found {
            if !reads_through(graph, node, input) {
                return Err(none.into());
            }
            trees.ensemble.explainable()?;
            return Ok(Explainer::Trees {
                input: input.to_string(),
                trees: Box::new(trees),
            });
        }
        let linear: Vec<&NodeProto> = graph
            .node
            .iter()
            .filter(|n| matches!(n.op_type.as_str(), "LinearRegressor" | "LinearClassifier"))
            .collect();
        let [node] = linear.as_slice() else {
            return Err(none.into());
        };
        let steps = column_steps(graph, node, input).ok_or(none)?;
        Ok(Explainer::Linear {
            input: input.to_string(),
            linear: Linear::read(node, steps)?,
        })
    }

    /// The graph input whose rows are explained.
    pub fn input(&self) -> &str {
        match self {
            Explainer::Trees { input, .. } | Explainer::Linear { input, .. } => input,
        }
    }

    /// What the explanation needs of the reference data (`n` rows of `width` values of the
    /// explained input): the trees' covers, or the linear model's mean inputs.
    pub fn covers(&self, x: &[f32], n: usize, width: usize) -> Result<Vec<f64>, String> {
        if n == 0 {
            return Err("the reference data has no rows the model can read".into());
        }
        match self {
            Explainer::Trees { trees, .. } => trees.ensemble.covers(x, n, width),
            Explainer::Linear { linear, .. } => linear.means(x, n, width),
        }
    }

    /// One row's explanation, checked to add up.
    pub fn explain(&self, covers: &[f64], row: &[f32]) -> Result<Explanation, String> {
        match self {
            Explainer::Trees { trees, .. } => {
                let mut e = trees.ensemble.explain(covers, row)?;
                e.check_additivity()?;
                // The base values are part of the raw score: they go into the expected value.
                if trees.base_values.len() == e.n_targets {
                    for (k, b) in trees.base_values.iter().enumerate() {
                        e.expected[k] += b;
                        e.score[k] += b;
                    }
                }
                Ok(e)
            }
            Explainer::Linear { linear, .. } => {
                let e = linear.explain(covers, row)?;
                e.check_additivity()?;
                Ok(e)
            }
        }
    }

    /// The classifier's labels, if it is one.
    fn classes(&self) -> Option<&Labels> {
        match self {
            Explainer::Trees { trees, .. } => trees.classes.as_ref(),
            Explainer::Linear { linear, .. } => linear.classes.as_ref(),
        }
    }

    /// The class labels as the model names them (a classifier's), in target order.
    pub fn class_labels(&self) -> Option<Vec<String>> {
        let classes = self.classes()?;
        Some((0..classes.len()).map(|k| classes.text(k)).collect())
    }

    /// The class whose score target `k` is (an index into the labels): with one score for two
    /// classes, the second (the positive class's margin).
    pub fn class_of(&self, k: usize, e: &Explanation) -> Option<usize> {
        let classes = self.classes()?;
        let scored = (0..e.n_targets).filter(|&j| self.scored(e, j)).count();
        if classes.len() == 2 && (e.n_targets == 1 || scored == 1) {
            return Some(1);
        }
        Some(k)
    }

    fn scored(&self, e: &Explanation, k: usize) -> bool {
        e.contributions
            .iter()
            .skip(k)
            .step_by(e.n_targets)
            .any(|c| *c != 0.0)
            || e.expected[k] != 0.0
    }

    /// How the contributions were computed, given the reference data's size.
    pub fn method(&self, rows: i32, version: i32) -> String {
        match self {
            Explainer::Trees { .. } => format!(
                "Exact TreeSHAP (path-dependent), with each node's cover counted on the {rows} rows \
                 of version {version}'s reference data"
            ),
            Explainer::Linear { .. } => format!(
                "Exact linear contributions: each coefficient times the input's distance from its \
                 mean over the {rows} rows of version {version}'s reference data (after the \
                 model's own scaling and imputing)"
            ),
        }
    }

    /// Which target explains a prediction: a classifier's predicted class (`label`, among
    /// `names`: the labels as the card gives them) when the model scores it, else the one
    /// scored target (a binary model's single margin); a regressor's first.
    pub fn target_for(&self, e: &Explanation, label: Option<&str>, names: &[String]) -> usize {
        if self.classes().is_none() {
            return 0;
        }
        let scored: Vec<usize> = (0..e.n_targets).filter(|&k| self.scored(e, k)).collect();
        let predicted = label.and_then(|l| names.iter().position(|n| n == l));
        match (predicted, scored.as_slice()) {
            (Some(k), _) if scored.contains(&k) => k,
            (_, [only]) => *only,
            (Some(k), _) => k,
            _ => 0,
        }
    }

    /// What the explained score is, in words.
    pub fn scale(&self) -> String {
        let post_transform = match self {
            Explainer::Trees { trees, .. } => trees.post_transform,
            Explainer::Linear { linear, .. } => linear.post_transform,
        };
        let what = if self.classes().is_some() {
            "the class's raw score (margin)"
        } else {
            "the raw prediction"
        };
        match post_transform {
            PostTransform::None => what.to_string(),
            other => format!(
                "{what} before the {} transform",
                other.name().to_lowercase().replace('_', " ")
            ),
        }
    }
}

/// The column-wise steps from the graph input `input` to `node`'s first input, in order; None
/// when anything else is on the way.
fn column_steps(graph: &GraphProto, node: &NodeProto, input: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    let mut name = node.input.first()?.as_str();
    for _ in 0..16 {
        if name == input {
            steps.reverse();
            return Some(steps);
        }
        let producer = graph
            .node
            .iter()
            .find(|n| n.output.iter().any(|o| o == name))?;
        let floats = |attr: &str| -> Option<Vec<f64>> {
            Some(
                producer
                    .get_attr_opt_vec::<f32>(attr)
                    .ok()?
                    .unwrap_or_default()
                    .into_iter()
                    .map(f64::from)
                    .collect(),
            )
        };
        match producer.op_type.as_str() {
            "Scaler" => steps.push(Step::Scale {
                offset: floats("offset")?,
                scale: floats("scale")?,
            }),
            "Imputer" => {
                let values = floats("imputed_value_floats")?;
                if values.is_empty() {
                    return None;
                }
                let marker = producer
                    .get_attr_opt::<f32>("replaced_value_float")
                    .ok()?
                    .map_or(0.0, f64::from);
                steps.push(Step::Impute { values, marker });
            }
            op if PASS_THROUGH.contains(&op) => {}
            _ => return None,
        }
        name = producer.input.first()?.as_str();
    }
    None
}

/// Whether `node`'s first input is the graph input `input`, directly or through nodes that
/// only pass rows on.
fn reads_through(graph: &GraphProto, node: &NodeProto, input: &str) -> bool {
    let mut name = match node.input.first() {
        Some(n) => n.as_str(),
        None => return false,
    };
    for _ in 0..16 {
        if name == input {
            return true;
        }
        let Some(producer) = graph
            .node
            .iter()
            .find(|n| n.output.iter().any(|o| o == name))
        else {
            return false;
        };
        if !PASS_THROUGH.contains(&producer.op_type.as_str()) {
            return false;
        }
        name = match producer.input.first() {
            Some(n) => n.as_str(),
            None => return false,
        };
    }
    false
}

#[cfg(test)]
pub(crate) mod tests;
