use super::*;

#[test]
fn a_difference_of_proportions_and_its_interval() {
    // 10/100 against 20/200: no difference, interval ±1.96·sqrt(.09/100 + .09/200).
    let d = difference((10, 100), (20, 200)).unwrap();
    assert!(d.estimate.abs() < 1e-12);
    let half = 1.96 * (0.09f64 / 100.0 + 0.09 / 200.0).sqrt();
    assert!((d.high - half).abs() < 1e-12 && (d.low + half).abs() < 1e-12);
    assert_eq!(difference((1, 0), (1, 10)), None);
    let d = difference((30, 100), (10, 100)).unwrap();
    assert!((d.estimate - 0.2).abs() < 1e-12 && d.low > 0.0);
}

#[test]
fn a_named_caller_always_lands_in_the_same_arm() {
    for id in 0..200 {
        let first = candidate_arm("iris", Sticky::User(id), 0.3);
        assert!((0..5).all(|_| candidate_arm("iris", Sticky::User(id), 0.3) == first));
    }
}

#[test]
fn the_share_of_named_callers_is_the_policys() {
    // 20,000 users at 10%: the count is binomial (mean 2,000, sd 42); 5 sd either side.
    let n = (0..20_000)
        .filter(|id| candidate_arm("iris", Sticky::User(*id), 0.1))
        .count();
    assert!(
        (1790..=2210).contains(&n),
        "{n} of 20,000 in the candidate arm"
    );
    // Tokens and users with the same id, and other models, are drawn apart.
    let both = (0..20_000)
        .filter(|id| {
            candidate_arm("iris", Sticky::User(*id), 0.5)
                == candidate_arm("iris", Sticky::Token(*id), 0.5)
        })
        .count();
    assert!((9_600..=10_400).contains(&both), "{both}");
    let other = (0..20_000)
        .filter(|id| {
            candidate_arm("iris", Sticky::User(*id), 0.5)
                == candidate_arm("wine", Sticky::User(*id), 0.5)
        })
        .count();
    assert!((9_600..=10_400).contains(&other), "{other}");
}

#[test]
fn the_edges_of_the_share() {
    assert!(!(0..1000).any(|id| candidate_arm("m", Sticky::User(id), 0.0)));
    assert!((0..1000).all(|id| candidate_arm("m", Sticky::User(id), 1.0)));
    assert!((0..1000).all(|_| candidate_arm("m", Sticky::Anonymous, 1.0)));
}
