//! Evaluation: rows through trees in the order that suits the ensemble's layout.

use super::{Aggregate, Ensemble, Mode, Perfect, GROUP, MIXED, SHALLOW_DEPTH};

impl Ensemble {
    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }

    /// Is node `at` a leaf?
    #[inline(always)]
    fn is_leaf(&self, at: u32) -> bool {
        at >= self.first_leaf
    }

    /// Aggregated scores `[n, n_targets]` before base values and transforms, and whether each
    /// target got any weight.
    pub fn aggregate(&self, x: &[f32], n: usize, width: usize) -> (Vec<f64>, Vec<bool>) {
        // The mode as a constant where every branch uses the same one, and the missing-value
        // test only where some node needs it.
        macro_rules! with_mode {
            ($missing:literal) => {
                match self.uniform {
                    Some(Mode::Leq) => self.aggregate_with::<0, $missing>(x, n, width),
                    Some(Mode::Lt) => self.aggregate_with::<1, $missing>(x, n, width),
                    Some(Mode::Gte) => self.aggregate_with::<2, $missing>(x, n, width),
                    Some(Mode::Gt) => self.aggregate_with::<3, $missing>(x, n, width),
                    Some(Mode::Eq) => self.aggregate_with::<4, $missing>(x, n, width),
                    Some(Mode::Neq) => self.aggregate_with::<5, $missing>(x, n, width),
                    None => self.aggregate_with::<MIXED, $missing>(x, n, width),
                }
            };
        }
        if self.any_missing_true {
            with_mode!(true)
        } else {
            with_mode!(false)
        }
    }

    fn aggregate_with<const M: u8, const NAN: bool>(
        &self,
        x: &[f32],
        n: usize,
        width: usize,
    ) -> (Vec<f64>, Vec<bool>) {
        let t = self.n_targets;
        let mut scores = vec![0.0f64; n * t];
        let mut has = vec![false; n * t];
        if let (Some(perfect), Aggregate::Sum | Aggregate::Average) =
            (&self.perfect, self.aggregate)
        {
            perfect.sum::<M, NAN>(x, n, width, &mut scores);
            has.fill(!self.roots.is_empty());
        } else if n == 1 || self.batch_rows_first {
            self.rows_first::<M, NAN>(x, n, width, &mut scores, &mut has);
        } else {
            self.trees_first::<M, NAN>(x, n, width, &mut scores, &mut has);
        }
        (scores, has)
    }

    /// The scores by every evaluation order, for tests: whichever `aggregate` picks must agree.
    #[cfg(test)]
    pub(crate) fn aggregate_every_way(
        &self,
        x: &[f32],
        n: usize,
        width: usize,
    ) -> Vec<(Vec<f64>, Vec<bool>)> {
        let t = self.n_targets;
        let mut ways = vec![self.aggregate(x, n, width)];
        let (mut s, mut h) = (vec![0.0; n * t], vec![false; n * t]);
        self.rows_first::<MIXED, true>(x, n, width, &mut s, &mut h);
        ways.push((s, h));
        let (mut s, mut h) = (vec![0.0; n * t], vec![false; n * t]);
        self.trees_first::<MIXED, true>(x, n, width, &mut s, &mut h);
        ways.push((s, h));
        if let Some(perfect) = &self.perfect {
            if matches!(self.aggregate, Aggregate::Sum | Aggregate::Average) {
                let mut s = vec![0.0; n * t];
                perfect.sum::<MIXED, true>(x, n, width, &mut s);
                ways.push((s, vec![!self.roots.is_empty(); n * t]));
            }
        }
        ways
    }

    /// Tree by tree, for ensembles too large to stay in cache: a tree's nodes stay in cache for
    /// the whole batch, and rows walk it in groups, so that their memory loads overlap.
    fn trees_first<const M: u8, const NAN: bool>(
        &self,
        x: &[f32],
        n: usize,
        width: usize,
        scores: &mut [f64],
        has: &mut [bool],
    ) {
        let t = self.n_targets;
        for &root in &self.roots {
            for first in (0..n).step_by(GROUP) {
                let rows = GROUP.min(n - first);
                let block = &x[first * width..(first + rows) * width];
                let mut at = [root; GROUP];
                at = self.walk_to_leaves::<M, NAN>(at, rows, block, width, width);
                for (k, at) in at.iter().enumerate().take(rows) {
                    let r = first + k;
                    self.add_leaf(
                        (*at - self.first_leaf) as usize,
                        &mut scores[r * t..(r + 1) * t],
                        &mut has[r * t..(r + 1) * t],
                    );
                }
            }
        }
    }

    /// Row by row, for one row or for shallow ensembles small enough to stay in cache whole:
    /// each row walks groups of trees together (shallow ones a fixed number of steps, the
    /// group's depth), so that the trees' memory loads overlap and the row's score stays in a
    /// register.
    fn rows_first<const M: u8, const NAN: bool>(
        &self,
        x: &[f32],
        n: usize,
        width: usize,
        scores: &mut [f64],
        has: &mut [bool],
    ) {
        let t = self.n_targets;
        let sum_of_single =
            self.single.is_some() && matches!(self.aggregate, Aggregate::Sum | Aggregate::Average);
        for r in 0..n {
            let row = &x[r * width..(r + 1) * width];
            let (scores, has) = (
                &mut scores[r * t..(r + 1) * t],
                &mut has[r * t..(r + 1) * t],
            );
            let mut acc = 0.0f64;
            for (roots, &depth) in self.roots.chunks(GROUP).zip(&self.group_depths) {
                let mut at = [0u32; GROUP];
                at[..roots.len()].copy_from_slice(roots);
                if roots.len() == GROUP && depth <= SHALLOW_DEPTH {
                    // A whole group of shallow trees: fixed sizes, so the loop unrolls.
                    for _ in 0..depth {
                        for at in at.iter_mut() {
                            *at = self.step::<M, NAN>(*at, row);
                        }
                    }
                } else if depth <= SHALLOW_DEPTH {
                    for _ in 0..depth {
                        for at in at.iter_mut().take(roots.len()) {
                            *at = self.step::<M, NAN>(*at, row);
                        }
                    }
                } else {
                    at = self.walk_to_leaves::<M, NAN>(at, roots.len(), row, width, 0);
                }
                if sum_of_single {
                    for at in at.iter().take(roots.len()) {
                        // SAFETY: as in `step`.
                        acc +=
                            unsafe { self.branches.get_unchecked(*at as usize) }.threshold as f64;
                    }
                } else {
                    for at in at.iter().take(roots.len()) {
                        self.add_leaf((*at - self.first_leaf) as usize, scores, has);
                    }
                }
            }
            if sum_of_single {
                scores[0] = acc;
                has[0] = !self.roots.is_empty();
            }
        }
    }

    /// Steps the first `live` walkers until each stands on a leaf; walker `k` reads the `width`
    /// values at `k * stride` in `x` (a stride of 0: all read the same row). The walkers go in
    /// and out by value, so that they stay in registers.
    #[inline(always)]
    fn walk_to_leaves<const M: u8, const NAN: bool>(
        &self,
        mut at: [u32; GROUP],
        live: usize,
        x: &[f32],
        width: usize,
        stride: usize,
    ) -> [u32; GROUP] {
        loop {
            let mut walking = false;
            for (k, at) in at.iter_mut().enumerate().take(live) {
                if !self.is_leaf(*at) {
                    walking = true;
                    *at = self.step::<M, NAN>(*at, &x[k * stride..k * stride + width]);
                }
            }
            if !walking {
                return at;
            }
        }
    }

    /// One step from node `at` (a leaf stays where it is).
    #[inline(always)]
    fn step<const M: u8, const NAN: bool>(&self, at: u32, row: &[f32]) -> u32 {
        // SAFETY: node indices and their children were made by `place`, and features were
        // checked against the row width before evaluation (a leaf reads feature 0, and rows
        // have at least one column).
        let b = unsafe { self.branches.get_unchecked(at as usize) };
        let x = unsafe { *row.get_unchecked(b.feature as usize) };
        let m = if M == MIXED {
            unsafe { *self.modes.get_unchecked(at as usize) }
        } else {
            Mode::from_u8(M)
        };
        let yes = if NAN && x.is_nan() {
            (unsafe { *self.missing_true.get_unchecked(at as usize) }) || m.holds(x, b.threshold)
        } else {
            m.holds(x, b.threshold)
        };
        if yes {
            b.yes
        } else {
            b.no
        }
    }

    /// Adds a leaf's weights to one row's scores.
    #[inline(always)]
    fn add_leaf(&self, leaf: usize, scores: &mut [f64], has: &mut [bool]) {
        if let (Some(single), Aggregate::Sum | Aggregate::Average) = (&self.single, self.aggregate)
        {
            scores[0] += single[leaf];
            has[0] = true;
            return;
        }
        let (from, to) = (
            self.leaf_start[leaf] as usize,
            self.leaf_start[leaf + 1] as usize,
        );
        for k in from..to {
            let (target, w) = (self.targets[k] as usize, self.weights[k]);
            let s = &mut scores[target];
            match self.aggregate {
                Aggregate::Sum | Aggregate::Average => *s += w,
                Aggregate::Min => *s = if has[target] { s.min(w) } else { w },
                Aggregate::Max => *s = if has[target] { s.max(w) } else { w },
            }
            has[target] = true;
        }
    }

    /// Checks that rows of `width` values hold every feature the trees read.
    pub fn check_width(&self, width: usize) -> Result<(), String> {
        if width < self.n_features {
            Err(format!(
                "the trees read feature {} but the input has {width} columns",
                self.n_features - 1
            ))
        } else {
            Ok(())
        }
    }
}

impl Perfect {
    /// Sums the trees for each row into `scores`.
    fn sum<const M: u8, const NAN: bool>(
        &self,
        x: &[f32],
        n: usize,
        width: usize,
        scores: &mut [f64],
    ) {
        let inner = (1usize << self.depth) - 1;
        let trees = self.leaves.len() / (inner + 1);
        for (r, score) in scores.iter_mut().enumerate().take(n) {
            let row = &x[r * width..(r + 1) * width];
            let mut acc = 0.0f64;
            for first in (0..trees).step_by(GROUP) {
                let live = GROUP.min(trees - first);
                let mut pos = [0usize; GROUP];
                for _ in 0..self.depth {
                    for (k, pos) in pos.iter_mut().enumerate().take(live) {
                        let at = (first + k) * inner + *pos;
                        // SAFETY: `pos` stays below `inner` for `depth` steps, and features
                        // were checked against the row width.
                        let (feature, threshold) = unsafe { *self.nodes.get_unchecked(at) };
                        let x = unsafe { *row.get_unchecked(feature as usize) };
                        let m = if M == MIXED {
                            self.modes[at]
                        } else {
                            Mode::from_u8(M)
                        };
                        let yes = if NAN && x.is_nan() {
                            self.missing_true[at] || m.holds(x, threshold)
                        } else {
                            m.holds(x, threshold)
                        };
                        *pos = 2 * *pos + 1 + usize::from(!yes);
                    }
                }
                for (k, pos) in pos.iter().enumerate().take(live) {
                    acc += self.leaves[(first + k) * (inner + 1) + pos - inner] as f64;
                }
            }
            *score = acc;
        }
    }
}
