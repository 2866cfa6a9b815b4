//! The statistics behind drift detection, written to give what scipy gives (the reference
//! implementation Evidently uses): the two-sample Kolmogorov-Smirnov test with its exact p-value,
//! Pearson's chi-squared test, the Wasserstein distance, the Jensen-Shannon distance, PSI, and
//! numpy's histogram conventions. Checked against fixtures written by scipy
//! (`tests/fixtures/drift_stats.py`).

/// Sorted copy, NaN last.
fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s
}

/// Number of elements of sorted `s` that are `<= x` (numpy's `searchsorted(side="right")`).
fn count_le(s: &[f64], x: f64) -> usize {
    s.partition_point(|v| *v <= x)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Result of a two-sample test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Test {
    pub statistic: f64,
    pub p_value: f64,
}

/// Two-sided two-sample Kolmogorov-Smirnov test, as `scipy.stats.ks_2samp(a, b)`: the exact
/// p-value (Hodges' lattice paths) for samples up to 10,000, Kolmogorov's limit beyond.
pub fn ks_2samp(a: &[f64], b: &[f64]) -> Test {
    let (a, b) = (sorted(a), sorted(b));
    let (n1, n2) = (a.len(), b.len());
    if n1 == 0 || n2 == 0 {
        return Test {
            statistic: 0.0,
            p_value: 1.0,
        };
    }
    let mut d: f64 = 0.0;
    for x in a.iter().chain(&b) {
        let diff = count_le(&a, *x) as f64 / n1 as f64 - count_le(&b, *x) as f64 / n2 as f64;
        d = d.max(diff.abs());
    }
    let d = d.clamp(0.0, 1.0);
    if n1.max(n2) <= 10_000 {
        if let Some((d_exact, p)) = ks_exact(n1 as u64, n2 as u64, d) {
            return Test {
                statistic: d_exact,
                p_value: p.clamp(0.0, 1.0),
            };
        }
    }
    let (m, n) = (n1.max(n2) as f64, n1.min(n2) as f64);
    let en = m * n / (m + n);
    Test {
        statistic: d,
        p_value: kolmogorov_sf(d * en.sqrt()).clamp(0.0, 1.0),
    }
}

/// The exact two-sided p-value; `None` when the computation leaves the floating-point range.
fn ks_exact(n1: u64, n2: u64, d: f64) -> Option<(f64, f64)> {
    let g = gcd(n1, n2);
    let lcm = (n1 / g) * n2;
    let h = (d * lcm as f64).round_ties_even() as u64;
    let d = h as f64 / lcm as f64;
    if h == 0 {
        return Some((d, 1.0));
    }
    let p = if n1 == n2 {
        prob_outside_square(n1, h)
    } else {
        outer_prob_inside(n1, n2, g, h)
    };
    (p.is_finite() && (0.0..=1.0).contains(&p)).then_some((d, p))
}

/// Share of lattice paths leaving the band |x − y| < h, for equal sample sizes n.
fn prob_outside_square(n: u64, h: u64) -> f64 {
    let (n, h) = (n as f64, h as f64);
    let mut p = 0.0;
    let mut k = (n / h).floor();
    while k >= 0.0 {
        let mut p1 = 1.0;
        let mut j = 0.0;
        while j < h {
            p1 = (n - k * h - j) * p1 / (n + k * h + j + 1.0);
            j += 1.0;
        }
        p = p1 * (1.0 - p);
        k -= 1.0;
    }
    2.0 * p
}

/// Share of lattice paths from (0, 0) to (m, n) that do not stay strictly inside the band
/// |x/m − y/n| < h/lcm(m, n): Hodges' inside method with Viehmann's recursion for 1 − p.
fn outer_prob_inside(m: u64, n: u64, g: u64, h: u64) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (mg, ng) = ((m / g) as f64, (n / g) as f64);
    let (n, h) = (n as i64, h as f64);
    let mut minj: i64 = 0;
    let mut maxj: i64 = ((h / mg).ceil() as i64).min(n + 1);
    let mut curlen = maxj - minj;
    let len = ((2 * maxj + 2).min(n + 1)) as usize;
    let mut a = vec![1.0f64; len];
    for v in a.iter_mut().take(maxj.max(0) as usize) {
        *v = 0.0;
    }
    for i in 1..=m as i64 {
        let (lastminj, lastlen) = (minj, curlen);
        minj = ((((ng * i as f64 - h) / mg).floor() as i64) + 1)
            .max(0)
            .min(n);
        maxj = (((ng * i as f64 + h) / mg).ceil() as i64).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        for jj in 0..(maxj - minj) {
            let j = (jj + minj) as f64;
            let prev = a
                .get((jj + minj - lastminj) as usize)
                .copied()
                .unwrap_or(1.0);
            val = (prev * i as f64 + val * j) / (i as f64 + j);
            a[jj as usize] = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            let from = (maxj - minj) as usize;
            let to = (from + (lastlen - curlen) as usize).min(a.len());
            for v in &mut a[from..to] {
                *v = 1.0;
            }
        }
    }
    a[(maxj - minj - 1) as usize]
}

/// Kolmogorov's limiting distribution: P(K > x).
// Hand-written, as `ks_exact`: statrs has no Kolmogorov distribution; both follow scipy's
// `ks_2samp` and are checked against it to 1e-6 (tests/fixtures/drift_stats.py).
fn kolmogorov_sf(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let mut sum = 0.0;
    for k in 1..=100 {
        let k = k as f64;
        let term = 2.0 * (-1f64).powf(k - 1.0) * (-2.0 * k * k * x * x).exp();
        sum += term;
        if term.abs() < 1e-16 {
            break;
        }
    }
    sum
}

/// Pearson's chi-squared test of observed counts against expected counts, as
/// `scipy.stats.chisquare(observed, expected)` (k − 1 degrees of freedom).
pub fn chisquare(observed: &[f64], expected: &[f64]) -> Test {
    let statistic: f64 = observed
        .iter()
        .zip(expected)
        .map(|(o, e)| if *e > 0.0 { (o - e).powi(2) / e } else { 0.0 })
        .sum();
    let df = observed.len().saturating_sub(1).max(1) as f64;
    Test {
        statistic,
        // The chi-squared survival function: Q(df/2, x/2), the regularized upper incomplete gamma.
        p_value: if statistic > 0.0 {
            statrs::function::gamma::gamma_ur(df / 2.0, statistic / 2.0)
        } else {
            1.0
        },
    }
}

/// The first Wasserstein distance between two samples, as `scipy.stats.wasserstein_distance`.
pub fn wasserstein(u: &[f64], v: &[f64]) -> f64 {
    let (u, v) = (sorted(u), sorted(v));
    if u.is_empty() || v.is_empty() {
        return 0.0;
    }
    let mut all: Vec<f64> = u.iter().chain(&v).copied().collect();
    all.sort_by(|a, b| a.total_cmp(b));
    all.windows(2)
        .map(|w| {
            let cu = count_le(&u, w[0]) as f64 / u.len() as f64;
            let cv = count_le(&v, w[0]) as f64 / v.len() as f64;
            (cu - cv).abs() * (w[1] - w[0])
        })
        .sum()
}

pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Population standard deviation (numpy's default, ddof = 0).
pub fn std_dev(v: &[f64]) -> f64 {
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len().max(1) as f64).sqrt()
}

/// The Jensen-Shannon distance (natural log) between two distributions, as
/// `scipy.spatial.distance.jensenshannon(p, q)`.
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    let rel_entr = |x: f64, y: f64| {
        if x > 0.0 && y > 0.0 {
            x * (x / y).ln()
        } else if x == 0.0 && y >= 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    };
    let js: f64 = p
        .iter()
        .zip(q)
        .map(|(a, b)| {
            let (a, b) = (a / sp, b / sq);
            let m = (a + b) / 2.0;
            rel_entr(a, m) + rel_entr(b, m)
        })
        .sum::<f64>()
        / 2.0;
    js.max(0.0).sqrt()
}

/// numpy's `histogram_bin_edges(data, bins="sturges")`.
pub fn sturges_edges(data: &[f64]) -> Vec<f64> {
    let (lo, hi) = data
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        });
    let ptp = hi - lo;
    let (first, last) = if lo == hi {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    };
    let width = ptp / ((data.len() as f64).log2() + 1.0);
    let bins = if width > 0.0 {
        ((last - first) / width).ceil() as usize
    } else {
        1
    };
    linspace(first, last, bins + 1)
}

fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = v.last_mut() {
        *last = stop;
    }
    v
}

/// Counts of `data` in the bins `edges` delimit, numpy style: each bin half-open, the last
/// closed; values outside are not counted.
pub fn histogram(data: &[f64], edges: &[f64]) -> Vec<u64> {
    let bins = edges.len().saturating_sub(1);
    let mut counts = vec![0u64; bins];
    let (Some(first), Some(last)) = (edges.first(), edges.last()) else {
        return counts;
    };
    for x in data {
        if x < first || x > last || x.is_nan() {
            continue;
        }
        let i = edges
            .partition_point(|e| e <= x)
            .saturating_sub(1)
            .min(bins - 1);
        counts[i] += 1;
    }
    counts
}

/// Shares per bin, with empty bins set to 0.0001 as Evidently does before comparing.
pub fn shares(counts: &[u64], total: usize) -> Vec<f64> {
    counts
        .iter()
        .map(|c| {
            let p = *c as f64 / total.max(1) as f64;
            if p == 0.0 {
                0.0001
            } else {
                p
            }
        })
        .collect()
}

/// The population stability index between reference and current shares.
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    reference
        .iter()
        .zip(current)
        .map(|(r, c)| {
            let (r, c) = (r.max(0.0001), c.max(0.0001));
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// Decile edges of a sample (linear interpolation, numpy's default quantile method).
pub fn decile_edges(data: &[f64]) -> Vec<f64> {
    let s = sorted(data);
    if s.is_empty() {
        return Vec::new();
    }
    (0..=10)
        .map(|k| {
            let pos = k as f64 / 10.0 * (s.len() - 1) as f64;
            let (lo, frac) = (pos.floor() as usize, pos - pos.floor());
            let hi = (lo + 1).min(s.len() - 1);
            s[lo] + (s[hi] - s[lo]) * frac
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string("tests/fixtures/drift_stats.json").unwrap())
            .unwrap()
    }

    fn floats(v: &serde_json::Value) -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    }

    fn close(got: f64, want: f64, what: &str) {
        assert!((got - want).abs() <= 1e-6, "{what}: {got} vs scipy {want}");
    }

    #[test]
    fn numeric_statistics_match_scipy() {
        let fx = fixtures();
        for (i, case) in fx["numeric"].as_array().unwrap().iter().enumerate() {
            let (r, c) = (floats(&case["reference"]), floats(&case["current"]));
            let ks = ks_2samp(&r, &c);
            close(
                ks.statistic,
                case["ks_statistic"].as_f64().unwrap(),
                &format!("case {i} KS statistic"),
            );
            close(
                ks.p_value,
                case["ks_pvalue"].as_f64().unwrap(),
                &format!("case {i} KS p-value"),
            );
            close(
                wasserstein(&r, &c),
                case["wasserstein"].as_f64().unwrap(),
                &format!("case {i} Wasserstein"),
            );
            close(
                wasserstein(&r, &c) / std_dev(&r),
                case["wasserstein_normed"].as_f64().unwrap(),
                &format!("case {i} normed"),
            );
            let all: Vec<f64> = r.iter().chain(&c).copied().collect();
            let edges = sturges_edges(&all);
            let want = floats(&case["sturges_edges"]);
            assert_eq!(edges.len(), want.len(), "case {i} bins");
            for (e, w) in edges.iter().zip(&want) {
                close(*e, *w, &format!("case {i} edge"));
            }
            let (rp, cp) = (
                shares(&histogram(&r, &edges), r.len()),
                shares(&histogram(&c, &edges), c.len()),
            );
            close(
                jensen_shannon(&rp, &cp),
                case["jensenshannon"].as_f64().unwrap(),
                &format!("case {i} Jensen-Shannon"),
            );
        }
    }

    #[test]
    fn chi_squared_matches_scipy() {
        for case in fixtures()["chisquare"].as_array().unwrap() {
            let t = chisquare(&floats(&case["observed"]), &floats(&case["expected"]));
            close(
                t.statistic,
                case["statistic"].as_f64().unwrap(),
                "chi-squared statistic",
            );
            close(
                t.p_value,
                case["pvalue"].as_f64().unwrap(),
                "chi-squared p-value",
            );
        }
    }

    #[test]
    fn identical_samples_do_not_drift() {
        let a: Vec<f64> = (0..200).map(|i| (i as f64 * 0.37).sin()).collect();
        let t = ks_2samp(&a, &a);
        assert_eq!(t.statistic, 0.0);
        assert_eq!(t.p_value, 1.0);
        assert_eq!(wasserstein(&a, &a), 0.0);
        let p = shares(&histogram(&a, &sturges_edges(&a)), a.len());
        assert!(jensen_shannon(&p, &p) < 1e-12);
        assert!(psi(&p, &p).abs() < 1e-12);
    }

    #[test]
    fn deciles_and_psi_see_a_shift() {
        let reference: Vec<f64> = (0..1000).map(|i| i as f64 / 10.0).collect();
        let edges = decile_edges(&reference);
        assert_eq!(edges.len(), 11);
        assert!((edges[5] - 49.95).abs() < 1e-9);
        let shifted: Vec<f64> = reference.iter().map(|x| x + 30.0).collect();
        let r = shares(&histogram(&reference, &edges), reference.len());
        let c = shares(&histogram(&shifted, &edges), shifted.len());
        assert!(psi(&r, &c) > 0.25, "{}", psi(&r, &c));
    }
}
