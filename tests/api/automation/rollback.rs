//! Production failing on a range of inputs is rolled back by its rule.

use super::*;

/// Production's answers below a 7 cm sepal; a model error (an index out of bounds) from 7 cm.
fn failing_from_7cm(dir: &std::path::Path) -> String {
    let int = |name: &str, i: i64| pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    };
    iris_with(
        dir,
        "failing.onnx",
        vec![
            node("Slice", &["X", "zero", "one", "one"], "sepal", vec![]),
            node("Div", &["sepal", "seven"], "scaled", vec![]),
            node("Floor", &["scaled"], "floored", vec![]),
            node("Cast", &["floored"], "index", vec![int("to", 7)]),
            node(
                "Gather",
                &["table", "index"],
                "looked_up",
                vec![int("axis", 0)],
            ),
            node("Add", &["X", "looked_up"], "plinth_x", vec![]),
        ],
        vec![
            int_tensor("zero", &[0]),
            int_tensor("one", &[1]),
            float_tensor("seven", &[], &[7.0]),
            float_tensor("table", &[1], &[0.0]),
        ],
    )
}

#[sqlx::test]
async fn production_failing_on_a_range_of_inputs_is_rolled_back_within_an_interval(pool: PgPool) {
    let interval = 2;
    let app = app_with_rules(pool, interval).await;
    let scratch = tempfile::tempdir().unwrap();
    let staff = app.token_for("grace", true).await;
    let user = app.token_for("ada", false).await;
    let hook = receiver(0).await;
    app.post_json("/api/v1/webhooks", &staff, json!({"url": hook.url}))
        .await;

    // Version 2 fails on sepals of 7 cm and more; it goes to production by hand.
    let failing = publish(&app, &staff, &failing_from_7cm(scratch.path())).await;
    set_production(&app, &staff, failing).await;
    let (status, body) = app
        .call_json(
            Method::PUT,
            "/api/v1/models/iris/rules/rollback",
            &staff,
            Some(json!({"max_error_rate": 0.135, "window_minutes": 5, "min_predictions": 20})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Short sepals only: healthy, nothing moves.
    let short = |i: usize| {
        let mut f = flower(i);
        f["sepal_length"] = json!(5.0);
        f
    };
    for i in 0..25 {
        let (status, _) = app
            .post_json(
                "/api/v1/models/iris/predict",
                &user,
                json!({"inputs": short(i)}),
            )
            .await;
        assert_eq!(status, 200);
    }
    wait_for_outcome(&app, "rollback", "healthy").await;
    assert_eq!(production(&app).await, failing);
    for i in 25..73 {
        app.post_json(
            "/api/v1/models/iris/predict",
            &user,
            json!({"inputs": short(i)}),
        )
        .await;
    }

    // Then 12 long sepals: each fails; the 12th takes the error rate over 13.5% (12 of 85).
    for i in 0..12 {
        let mut f = flower(i);
        f["sepal_length"] = json!(7.2);
        let (status, body) = app
            .post_json("/api/v1/models/iris/predict", &user, json!({"inputs": f}))
            .await;
        assert_eq!(status, 500, "{body}");
    }
    // The rollback comes within one interval (and the time an evaluation takes).
    let took = wait_for_production(&app, 1, Duration::from_secs(interval + 3)).await;
    println!("rolled back {took:?} after the threshold was crossed (interval {interval} s)");
    assert!(audit_actions(&app, "automation.rolled_back").await.len() == 1);

    // The error rate is SQL over the failures and the stored predictions.
    let (errors, answered): (i64, i64) = sqlx::query_as(
        "select (select count(*) from prediction_failure f join model_version v on v.id = f.version_id
                  where v.version = $1 and f.reason = 'model_error'),
                (select count(*) from prediction p join model_version v on v.id = p.version_id
                  where v.version = $1)",
    )
    .bind(failing)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((errors, answered), (12, 73));
    let rolled = audit_actions(&app, "automation.rolled_back").await;
    assert_eq!(rolled.len(), 1, "{rolled:?}");
    let figures = &rolled[0].1["figures"];
    assert_eq!(figures["model_errors"], 12);
    assert_eq!(figures["requests"], 73);
    assert_eq!(rolled[0].1["to"], 1);
    let reason: String =
        sqlx::query_scalar("select reason from alias_event order by id desc limit 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        reason.contains("error rate 14.1% over 85 requests"),
        "{reason}"
    );

    // Both alerts arrived; after the rollback the rule finds version 1 healthy.
    hook.wait_for("error_rate.crossed").await;
    let body = hook.wait_for("rollback").await;
    assert_eq!(body["acted"], true);
    assert!(body["text"]
        .as_str()
        .unwrap()
        .contains(&format!("from version {failing} to version 1")));
    wait_for_outcome(&app, "rollback", "version 1 is healthy").await;
    predict_many(&app, &user, 10).await;
    assert_eq!(production(&app).await, 1);
}
