//! `SVMClassifier` and `SVMRegressor` (ONNX-ML): libsvm's one-against-one machines with their
//! kernels, Platt probabilities and pairwise coupling, and liblinear's linear models. Where the
//! spec leaves the output layout open (votes, two classes) this follows onnxruntime.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::{
    built, check_columns, f32_matrix, matrix_of, named, Dims, Kernel, Labels, Output, PostTransform,
};

mod regressor;

pub use regressor::regressor;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelFn {
    Linear,
    Poly { gamma: f64, coef0: f64, degree: f64 },
    Rbf { gamma: f64 },
    Sigmoid { gamma: f64, coef0: f64 },
}

impl KernelFn {
    fn parse(node: &NodeProto) -> TractResult<KernelFn> {
        let params: Vec<f32> = node.get_attr_opt_vec("kernel_params")?.unwrap_or_default();
        let p = |i: usize| params.get(i).copied().unwrap_or(0.0) as f64;
        Ok(
            match node
                .get_attr_opt::<&str>("kernel_type")?
                .unwrap_or("LINEAR")
            {
                "LINEAR" => KernelFn::Linear,
                "POLY" => KernelFn::Poly {
                    gamma: p(0),
                    coef0: p(1),
                    degree: p(2),
                },
                "RBF" => KernelFn::Rbf { gamma: p(0) },
                "SIGMOID" => KernelFn::Sigmoid {
                    gamma: p(0),
                    coef0: p(1),
                },
                other => bail!("{}: unknown kernel_type {other:?}", named(node)),
            },
        )
    }

    fn eval(self, x: &[f32], v: &[f32]) -> f64 {
        let dot = || {
            x.iter()
                .zip(v)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>()
        };
        match self {
            KernelFn::Linear => dot(),
            KernelFn::Poly {
                gamma,
                coef0,
                degree,
            } => (gamma * dot() + coef0).powf(degree),
            KernelFn::Rbf { gamma } => {
                let d: f64 = x
                    .iter()
                    .zip(v)
                    .map(|(a, b)| {
                        let d = *a as f64 - *b as f64;
                        d * d
                    })
                    .sum();
                (-gamma * d).exp()
            }
            KernelFn::Sigmoid { gamma, coef0 } => (gamma * dot() + coef0).tanh(),
        }
    }
}

fn floats(node: &NodeProto, name: &str) -> TractResult<Vec<f32>> {
    Ok(node.get_attr_opt_vec(name)?.unwrap_or_default())
}

/// `SVMClassifier`.
#[derive(Debug)]
pub struct Classifier {
    kernel: KernelFn,
    labels: Labels,
    /// Support vectors by class (`vectors_per_class`); empty for a linear model.
    per_class: Vec<usize>,
    start: Vec<usize>,
    vectors: Vec<f32>,
    coefficients: Vec<f32>,
    rho: Vec<f32>,
    prob_a: Vec<f32>,
    prob_b: Vec<f32>,
    features: usize,
    post_transform: PostTransform,
    weights_all_positive: bool,
}

pub fn classifier(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let labels = Labels::parse(node, "classlabels_ints", "classlabels_strings")?;
    let c = labels.len();
    ensure!(c >= 1, "{}: the classifier has no classes", named(node));
    let per_class: Vec<usize> = node
        .get_attr_opt_vec::<i64>("vectors_per_class")?
        .unwrap_or_default()
        .iter()
        .map(|v| {
            usize::try_from(*v)
                .map_err(|_| format_err!("{}: negative vectors_per_class", named(node)))
        })
        .collect::<TractResult<_>>()?;
    let vectors = floats(node, "support_vectors")?;
    // Every support vector has at least one value: more than that is a lie.
    let count = per_class
        .iter()
        .try_fold(0usize, |acc, n| acc.checked_add(*n))
        .filter(|n| *n <= vectors.len())
        .ok_or_else(|| {
            format_err!(
                "{}: vectors_per_class names more support vectors than support_vectors holds",
                named(node)
            )
        })?;
    let coefficients = floats(node, "coefficients")?;
    let rho = floats(node, "rho")?;
    let (prob_a, prob_b) = (floats(node, "prob_a")?, floats(node, "prob_b")?);
    ensure!(
        !coefficients.is_empty(),
        "{}: coefficients are empty",
        named(node)
    );
    ensure!(
        prob_a.len() == prob_b.len(),
        "{}: prob_a and prob_b differ in length",
        named(node)
    );
    let pairs = c * (c - 1) / 2;
    let features = if count > 0 {
        ensure!(
            per_class.len() == c,
            "{}: vectors_per_class must have one entry per class",
            named(node)
        );
        ensure!(
            vectors.len() % count == 0,
            "{}: support_vectors is not a whole number of vectors",
            named(node)
        );
        ensure!(
            (c - 1)
                .checked_mul(count)
                .is_some_and(|needed| coefficients.len() >= needed),
            "{}: too few coefficients",
            named(node)
        );
        ensure!(
            rho.len() >= pairs,
            "{}: rho needs one entry per pair of classes",
            named(node)
        );
        ensure!(
            prob_a.is_empty() || prob_a.len() >= pairs,
            "{}: prob_a needs one entry per pair of classes",
            named(node)
        );
        vectors.len() / count
    } else {
        ensure!(
            coefficients.len() % c == 0,
            "{}: coefficients must be classes × features",
            named(node)
        );
        ensure!(!rho.is_empty(), "{}: rho is empty", named(node));
        coefficients.len() / c
    };
    let start = starts(&per_class);
    let kernel = if count > 0 {
        KernelFn::parse(node)?
    } else {
        KernelFn::Linear
    };
    built(Classifier {
        kernel,
        weights_all_positive: coefficients.iter().all(|w| *w >= 0.0),
        labels,
        per_class,
        start,
        vectors,
        coefficients,
        rho,
        prob_a,
        prob_b,
        features,
        post_transform: PostTransform::parse(node)?,
    })
}

/// Where each class's support vectors start.
fn starts(per_class: &[usize]) -> Vec<usize> {
    per_class
        .iter()
        .scan(0, |at, n| {
            let start = *at;
            *at += n;
            Some(start)
        })
        .collect()
}

impl Classifier {
    fn svc(&self) -> bool {
        !self.per_class.is_empty() && self.per_class.iter().sum::<usize>() > 0
    }

    fn score_columns(&self) -> usize {
        let c = self.labels.len();
        if self.svc() && self.prob_a.is_empty() {
            if c > 2 {
                c * (c - 1) / 2
            } else {
                2
            }
        } else {
            c
        }
    }

    /// The class index and output scores of one row.
    fn row(&self, x: &[f32]) -> (usize, Vec<f64>) {
        let c = self.labels.len();
        if !self.svc() {
            let mut scores: Vec<f64> = (0..c)
                .map(|k| {
                    KernelFn::Linear.eval(
                        x,
                        &self.coefficients[k * self.features..(k + 1) * self.features],
                    ) + self.rho[0] as f64
                })
                .collect();
            let (best, max) = first_max(&scores);
            let class = if c == 2 {
                if (self.weights_all_positive && max >= 0.5)
                    || (max > 0.0 && !self.weights_all_positive)
                {
                    1
                } else {
                    best
                }
            } else {
                best
            };
            self.post_transform.apply(&mut scores);
            return (class, scores);
        }
        let count: usize = self.per_class.iter().sum();
        let kernels: Vec<f64> = (0..count)
            .map(|v| {
                self.kernel
                    .eval(x, &self.vectors[v * self.features..(v + 1) * self.features])
            })
            .collect();
        let mut decisions = Vec::with_capacity(c * (c - 1) / 2);
        let mut votes = vec![0u32; c];
        let mut pair = 0;
        for i in 0..c {
            for j in i + 1..c {
                let mut sum = 0.0f64;
                for m in 0..self.per_class[i] {
                    let v = self.start[i] + m;
                    sum += self.coefficients[(j - 1) * count + v] as f64 * kernels[v];
                }
                for m in 0..self.per_class[j] {
                    let v = self.start[j] + m;
                    sum += self.coefficients[i * count + v] as f64 * kernels[v];
                }
                sum += self.rho[pair] as f64;
                pair += 1;
                // onnxruntime keeps each decision value as a float.
                decisions.push(sum as f32 as f64);
                votes[if sum > 0.0 { i } else { j }] += 1;
            }
        }
        let class = first_max_votes(&votes);
        if !self.prob_a.is_empty() {
            let mut scores = self.probabilities(&decisions);
            self.post_transform.apply(&mut scores);
            return (class, scores);
        }
        if c <= 2 {
            let s = decisions.first().copied().unwrap_or(0.0);
            let scores = match self.post_transform {
                PostTransform::None => vec![-s, s],
                t => {
                    let mut v = [s];
                    t.apply(&mut v);
                    vec![1.0 - v[0], v[0]]
                }
            };
            return (class, scores);
        }
        let mut scores = decisions;
        self.post_transform.apply(&mut scores);
        (class, scores)
    }

    /// Platt probabilities per pair, coupled into class probabilities (libsvm's method, in
    /// `f32` as onnxruntime computes it).
    fn probabilities(&self, decisions: &[f64]) -> Vec<f64> {
        let c = self.labels.len();
        let mut r = vec![0f32; c * c];
        let mut index = 0;
        for i in 0..c {
            for j in i + 1..c {
                let z = decisions[index] as f32 * self.prob_a[index] + self.prob_b[index];
                let p = 1.0 - super::logistic(z as f64) as f32;
                let p = p.clamp(1.0e-7, 1.0 - 1.0e-7);
                r[i * c + j] = p;
                r[j * c + i] = 1.0 - p;
                index += 1;
            }
        }
        couple(c, &r).into_iter().map(f64::from).collect()
    }
}

/// Pairwise coupling: class probabilities from pairwise ones (Wu, Lin and Weng, method 2).
fn couple(k: usize, r: &[f32]) -> Vec<f32> {
    let mut q = vec![0f32; k * k];
    let mut qp = vec![0f32; k];
    let mut p = vec![1.0 / k as f32; k];
    let eps = 0.005 / k as f32;
    for t in 0..k {
        for j in 0..t {
            q[t * k + t] += r[j * k + t] * r[j * k + t];
            q[t * k + j] = q[j * k + t];
        }
        for j in t + 1..k {
            q[t * k + t] += r[j * k + t] * r[j * k + t];
            q[t * k + j] = -r[j * k + t] * r[t * k + j];
        }
    }
    for _ in 0..100 {
        let mut pqp = 0f32;
        for t in 0..k {
            qp[t] = (0..k).map(|j| q[t * k + j] * p[j]).sum();
            pqp += p[t] * qp[t];
        }
        let max_error = (0..k).map(|t| (qp[t] - pqp).abs()).fold(0f32, f32::max);
        if max_error < eps {
            break;
        }
        for t in 0..k {
            let diff = (-qp[t] + pqp) / q[t * k + t];
            p[t] += diff;
            pqp = (pqp + diff * (diff * q[t * k + t] + 2.0 * qp[t])) / (1.0 + diff) / (1.0 + diff);
            for j in 0..k {
                qp[j] = (qp[j] + diff * q[t * k + j]) / (1.0 + diff);
                p[j] /= 1.0 + diff;
            }
        }
    }
    p
}

fn first_max(v: &[f64]) -> (usize, f64) {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    (best, v.get(best).copied().unwrap_or(0.0))
}

fn first_max_votes(v: &[u32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

impl Kernel for Classifier {
    fn name(&self) -> &'static str {
        "SVMClassifier"
    }

    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::new(self.labels.datum_type(), Dims::Rows),
            Output::new(DatumType::F32, Dims::Columns(self.score_columns())),
        ]
    }

    fn check(&self, input: &TypedFact) -> TractResult<()> {
        check_columns(input, self.features, "SVM")
    }

    fn eval(&self, inputs: TVec<TValue>) -> TractResult<TVec<Tensor>> {
        let (n, x) = matrix_of(&inputs[0], self.features, "SVM")?;
        let width = self.features;
        let cols = self.score_columns();
        super::check_output("SVMClassifier", n, cols)?;
        let mut classes = Vec::with_capacity(n);
        let mut scores = Vec::with_capacity(n * cols);
        for r in 0..n {
            let (class, s) = self.row(&x[r * width..(r + 1) * width]);
            classes.push(class);
            scores.extend(s.into_iter().chain(std::iter::repeat(0.0)).take(cols));
        }
        Ok(tvec![
            self.labels.pick(&classes),
            f32_matrix(n, cols, &scores)?
        ])
    }
}

#[cfg(test)]
mod tests;
