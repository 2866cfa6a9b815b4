//! Hardening of model files: missing artifacts answered and restored, imports past refused
//! models, loading bounded in time.

use super::*;

// --- 9. missing artifacts ---------------------------------------------------------------------

/// Removes every stored artifact of the app.
fn wipe_artifacts(app: &crate::helpers::TestApp) {
    let _ = std::fs::remove_dir_all(&app.settings.artifacts);
}

#[sqlx::test]
async fn a_missing_artifact_answers_503_with_the_reason_and_readyz_reports_it(pool: PgPool) {
    let app = spawn_app_with(pool, |s| s.models_dir = "no-such-repository".into()).await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;
    wipe_artifacts(&app);

    let (status, error) = infer(&app, &token, iris_row()).await;
    assert_eq!(status, 503, "{error}");
    assert!(
        error["error"].as_str().unwrap().contains("missing"),
        "{error}"
    );

    let res = app.get("/readyz").await;
    assert_eq!(res.status().as_u16(), 503);
    let ready: Value = res.json().await.unwrap();
    assert!(ready["versions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["model"] == "iris" && v["version"] == 1));

    // plinth check names the version and exits non-zero.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plinth"))
        .arg("check")
        .env(
            "PLINTH_DATABASE_URL",
            crate::helpers::database_url(&app.pool).await,
        )
        .env("PLINTH_ARTIFACTS", &app.settings.artifacts)
        .env("PLINTH_MODELS", "no-such-repository")
        .env("PLINTH_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{text}");
    assert!(text.contains("iris version 1"), "{text}");
}

#[sqlx::test]
async fn a_missing_artifact_is_restored_from_the_model_repository(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;
    wipe_artifacts(&app);

    let (status, _) = infer(&app, &token, iris_row()).await;
    assert_eq!(
        status, 200,
        "the same file was found in models/ and put back"
    );
    assert_eq!(app.get("/readyz").await.status().as_u16(), 200);
}

#[sqlx::test]
async fn a_repository_import_goes_past_refused_models(pool: PgPool) {
    let app = spawn_app(pool).await;
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().to_path_buf();
    for (name, file) in [
        ("aaa-broken", "tests/fixtures/looping_tree.onnx"),
        ("zzz-iris", "models/iris/1/model.onnx"),
    ] {
        std::fs::create_dir_all(dir.join(name).join("1")).unwrap();
        std::fs::copy(file, dir.join(name).join("1/model.onnx")).unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(["models", "import", dir.to_str().unwrap()])
        .env(
            "PLINTH_DATABASE_URL",
            crate::helpers::database_url(&app.pool).await,
        )
        .env("PLINTH_ARTIFACTS", &app.settings.artifacts)
        .env("PLINTH_LOG", "warn")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("aaa-broken") && text.contains("cycle"),
        "{text}"
    );
    assert!(text.contains("zzz-iris: imported as version 1"), "{text}");
}

#[sqlx::test]
async fn loading_is_bounded_in_time_and_a_version_that_cannot_load_is_not_promoted(pool: PgPool) {
    let app = spawn_app_with(pool, |s| s.models_dir = "no-such-repository".into()).await;
    app.import_models().await;
    let staff = app.token_for("root", true).await;
    let token = app.token_for("ada", false).await;

    // A load that takes longer than the policy allows is given up, with the reason.
    let res = app
        .publish(
            &staff,
            "forest",
            "tests/fixtures/zoo/random_forest_classifier.onnx",
            None,
        )
        .await;
    assert_eq!(res.status().as_u16(), 201);
    let mut settings = app.settings.clone();
    settings.model_load_timeout = Duration::from_millis(1);
    let (_, forest) = plinth_store::models::by_number(&app.pool, "forest", 1)
        .await
        .unwrap()
        .unwrap();
    let err = plinth::startup::registry_for(&app.pool, &settings)
        .unwrap()
        .load(&forest)
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("took longer than"), "{err}");

    // Version 2 of iris loses its file; promoting it is refused and version 1 keeps serving.
    assert_eq!(app.publish_iris_v2(&staff).await.status().as_u16(), 201);
    let (_, v2) = plinth_store::models::by_number(&app.pool, "iris", 2)
        .await
        .unwrap()
        .unwrap();
    let file = std::path::Path::new(&app.settings.artifacts)
        .join(&v2.sha256[..2])
        .join(&v2.sha256);
    std::fs::remove_file(file).unwrap();
    let fresh = crate::helpers::spawn_app_with(app.pool.clone(), |s| {
        s.artifacts = app.settings.artifacts.clone();
        s.models_dir = "no-such-repository".into();
    })
    .await;
    let res = fresh
        .api(
            Method::PUT,
            "/api/v1/models/iris/aliases/production",
            &staff,
        )
        .json(&json!({"version": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 422);
    let error: Value = res.json().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("missing"),
        "{error}"
    );
    let (status, answer) = infer(&fresh, &token, iris_row()).await;
    assert_eq!(status, 200);
    assert_eq!(answer["model_version"], "1");
}
