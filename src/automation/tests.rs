use super::*;

fn rule() -> RuleRow {
    RuleRow {
        model_id: 1,
        model: "iris".into(),
        kind: "promote".into(),
        mode: "act".into(),
        min_predictions: 100,
        min_agreement: Some(0.95),
        max_mean_abs_difference: None,
        max_error_rate: Some(0.01),
        max_quality_drop: Some(0.02),
        window_minutes: None,
        drift_checks: None,
        last_evaluated_at: None,
        last_outcome: None,
        last_figures: None,
        fired_key: None,
    }
}

#[test]
fn a_shadow_is_judged_on_its_pairs_errors_and_feedback() {
    let shadow = ShadowRecord {
        requests: 120,
        predictions: 150,
        model_errors: 0,
        judged: 50,
        shadow_correct: 45,
        live_correct: 46,
        ..Default::default()
    };
    let agreement = db::shadow::Agreement {
        label_pairs: 150,
        agree: 147,
        ..Default::default()
    };
    let f = candidate_figures(3, true, Some((&shadow, &agreement)), None);
    assert_eq!((f.predictions, f.observed_as.as_str()), (150, "shadow"));
    assert!((f.agreement.unwrap() - 0.98).abs() < 1e-12);
    assert_eq!(f.error_rate, Some(0.0));
    assert!((f.quality_drop.unwrap() - 0.02).abs() < 1e-12);
    assert!(
        unmet(&rule(), &f, true).is_empty(),
        "{:?}",
        unmet(&rule(), &f, true)
    );

    // Short of predictions, a lower agreement, errors: each is named.
    let few = CandidateFigures {
        predictions: 40,
        agreement: Some(0.9),
        error_rate: Some(0.05),
        quality_drop: None,
        ..f.clone()
    };
    let missing = unmet(&rule(), &few, true);
    assert_eq!(missing.len(), 4, "{missing:?}");
    assert!(missing[0].contains("40 of 100"));
    assert!(missing[1].contains("agreement 90.0% < 95.0%"));
    assert!(missing[2].contains("error rate 5.0%"));
    assert!(missing[3].contains("no feedback"));
}

#[test]
fn a_canary_is_judged_on_its_arm_against_production_s() {
    let candidate = LiveRecord {
        requests: 95,
        predictions: 200,
        model_errors: 5,
        judged: 10,
        correct: 9,
        mae: None,
    };
    let production = LiveRecord {
        requests: 900,
        predictions: 1800,
        model_errors: 0,
        judged: 100,
        correct: 95,
        mae: None,
    };
    let f = candidate_figures(4, true, None, Some((&candidate, &production)));
    assert_eq!((f.predictions, f.observed_as.as_str()), (200, "canary"));
    assert_eq!(f.error_rate, Some(0.05));
    assert!((f.quality_drop.unwrap() - 0.05).abs() < 1e-12);
    assert_eq!(f.agreement, None);
    let missing = unmet(&rule(), &f, true);
    assert!(
        missing.iter().any(|m| m.contains("not a shadow")),
        "{missing:?}"
    );

    // Regressors compare mean absolute errors.
    let c = LiveRecord {
        mae: Some(3.0),
        judged: 10,
        ..candidate
    };
    let p = LiveRecord {
        mae: Some(2.5),
        judged: 30,
        ..production
    };
    let f = candidate_figures(4, false, None, Some((&c, &p)));
    assert!((f.quality_drop.unwrap() - 0.5).abs() < 1e-12);
}

#[test]
fn rules_read_as_sentences() {
    assert_eq!(
        describe(&rule()),
        "promote a candidate after 100 predictions, agreement ≥ 95.0%, error rate ≤ 1.0%, live quality not worse by more than 0.02"
    );
    let back = RuleRow {
        kind: "rollback".into(),
        mode: "notify".into(),
        min_predictions: 20,
        max_error_rate: Some(0.1),
        window_minutes: Some(5),
        drift_checks: Some(3),
        ..rule()
    };
    assert_eq!(
        describe(&back),
        "roll production back to the previous version when its error rate over the last 5 minutes exceeds 10.0% (at least 20 requests), or when drift is flagged on 3 checks in a row (notify only)"
    );
}
