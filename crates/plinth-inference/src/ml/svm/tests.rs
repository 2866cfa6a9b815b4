//! The kernels and the coupling by their definitions, and small machines worked by hand from
//! the ONNX-ML specification.

use super::regressor::Regressor;
use super::*;

#[test]
fn kernels_follow_their_definitions() {
    let (x, v) = ([1.0f32, 2.0], [3.0f32, -1.0]);
    assert_eq!(KernelFn::Linear.eval(&x, &v), 1.0);
    let poly = KernelFn::Poly {
        gamma: 0.5,
        coef0: 1.0,
        degree: 3.0,
    };
    assert_eq!(poly.eval(&x, &v), 1.5f64.powi(3));
    let rbf = KernelFn::Rbf { gamma: 0.1 };
    assert!((rbf.eval(&x, &v) - (-0.1f64 * 13.0).exp()).abs() < 1e-12);
    let sig = KernelFn::Sigmoid {
        gamma: 0.5,
        coef0: 0.0,
    };
    assert!((sig.eval(&x, &v) - 0.5f64.tanh()).abs() < 1e-12);
}

#[test]
fn coupling_gives_a_distribution_that_follows_the_pairs() {
    // Class 0 beats 1 and 2 clearly; 1 and 2 are even.
    let r = [0.0, 0.9, 0.9, 0.1, 0.0, 0.5, 0.1, 0.5, 0.0];
    let p = couple(3, &r);
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{p:?}");
    // libsvm's iteration stops at an error of 0.005 / k.
    assert!(p[0] > 0.8 && (p[1] - p[2]).abs() < 1e-3, "{p:?}");
}

mod spec_cases {
    //! Small machines worked by hand from the ONNX-ML definitions.

    use super::*;

    fn classifier(
        labels: Labels,
        per_class: Vec<usize>,
        vectors: Vec<f32>,
        coefficients: Vec<f32>,
        rho: Vec<f32>,
    ) -> Classifier {
        let count: usize = per_class.iter().sum();
        let features = vectors
            .len()
            .checked_div(count)
            .unwrap_or(coefficients.len() / labels.len());
        let start = starts(&per_class);
        Classifier {
            kernel: KernelFn::Linear,
            weights_all_positive: coefficients.iter().all(|w| *w >= 0.0),
            labels,
            per_class,
            start,
            vectors,
            coefficients,
            rho,
            prob_a: vec![],
            prob_b: vec![],
            features,
            post_transform: PostTransform::None,
        }
    }

    #[test]
    fn a_linear_machine_scores_each_class_and_picks_the_highest() {
        // Three classes over two features: scores x·w_c + rho[0].
        let c = classifier(
            Labels::Strings(vec!["a".into(), "b".into(), "c".into()]),
            vec![],
            vec![],
            vec![1.0, 0.0, 0.0, 1.0, -1.0, -1.0],
            vec![0.5],
        );
        let (class, scores) = c.row(&[2.0, 3.0]);
        assert_eq!(scores, vec![2.5, 3.5, -4.5]);
        assert_eq!(class, 1);
    }

    #[test]
    fn one_against_one_votes_decide_and_the_decisions_are_the_scores() {
        // Three classes, one support vector each, linear kernel: pair (i, j) decides
        // coef[j-1][sv_i]·k(sv_i) + coef[i][sv_j]·k(sv_j) + rho.
        let c = classifier(
            Labels::Ints(vec![10, 20, 30]),
            vec![1, 1, 1],
            vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
            // rows: class-pair coefficient rows (c - 1) × vectors
            vec![1.0, -1.0, -1.0, 1.0, 1.0, -1.0],
            vec![0.0, 0.0, 0.0],
        );
        let x = [2.0f32, 0.0];
        // kernels: sv0·x = 2, sv1·x = 0, sv2·x = 2
        // (0,1): coef[0][0]·2 + coef[0][1]·0 = 2 → votes 0
        // (0,2): coef[1][0]·2 + coef[0][2]·2 = 2 - 2 = 0 → votes 2
        // (1,2): coef[1][1]·0 + coef[1][2]·2 = -2 → votes 2
        let (class, scores) = c.row(&x);
        assert_eq!(scores, vec![2.0, 0.0, -2.0]);
        assert_eq!(class, 2);
    }

    #[test]
    fn the_regressor_sums_kernels_and_one_class_gives_a_sign() {
        let mut r = Regressor {
            kernel: KernelFn::Rbf { gamma: 0.5 },
            supports: 2,
            vectors: vec![0.0, 0.0, 1.0, 1.0],
            coefficients: vec![2.0, -1.0],
            rho: 0.25,
            one_class: false,
            features: 2,
            post_transform: PostTransform::None,
        };
        let out = r
            .eval(tvec![tensor2(&[[0.0f32, 0.0]]).into_tvalue()])
            .unwrap()
            .remove(0);
        let got = out.to_plain_array_view::<f32>().unwrap()[[0, 0]] as f64;
        let want = 2.0 - (-0.5f64 * 2.0).exp() + 0.25;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        r.one_class = true;
        let out = r
            .eval(tvec![tensor2(&[[0.0f32, 0.0]]).into_tvalue()])
            .unwrap()
            .remove(0);
        assert_eq!(out.to_plain_array_view::<f32>().unwrap()[[0, 0]], 1.0);
        // A row of the wrong width is refused, not read out of bounds.
        assert!(r.eval(tvec![tensor2(&[[0.0f32]]).into_tvalue()]).is_err());
    }
}
