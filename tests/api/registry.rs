use reqwest::multipart::Form;
use sqlx::PgPool;

use crate::helpers::{file_part, location, prediction_id, spawn_app, spawn_client_for, TestApp};

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn iris_row() -> Vec<(&'static str, String)> {
    vec![
        ("sepal_length", "5.9".into()),
        ("sepal_width", "3.0".into()),
        ("petal_length", "5.1".into()),
        ("petal_width", "1.8".into()),
    ]
}

async fn version_of(app: &TestApp, prediction: i64) -> i32 {
    sqlx::query_scalar(
        "select v.version from prediction p join model_version v on v.id = p.version_id where p.id <= $1 and $1 < p.id + p.n",
    )
    .bind(prediction)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

async fn upload_iris_v2(app: &TestApp) -> reqwest::Response {
    let form = Form::new()
        .part(
            "model",
            file_part(read("tests/fixtures/iris_v2.onnx"), "model.onnx"),
        )
        .part(
            "card",
            file_part(read("models/iris/1/card.toml"), "card.toml"),
        )
        .part(
            "reference",
            file_part(read("models/iris/1/reference.csv"), "reference.csv"),
        );
    app.post_multipart("/admin/models/iris", "/admin/models/iris/versions", form)
        .await
}

async fn move_alias(app: &TestApp, alias: &str, version: &str) -> reqwest::Response {
    app.post_form_from(
        "/admin/models/iris",
        "/admin/models/iris/aliases",
        &[("alias", alias), ("version", version)],
    )
    .await
}

#[sqlx::test]
async fn a_new_version_serves_once_production_points_at_it_and_rolls_back(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("root", true).await;
    let user = spawn_client_for(&app);
    user.sign_in("ada", false).await;
    let before = prediction_id(&user.predict("iris", &iris_row()).await);
    assert_eq!(version_of(&app, before).await, 1);

    // Upload: stored, but production does not move by itself.
    let res = upload_iris_v2(&app).await;
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(location(&res), "/admin/models/iris");
    let page = app.get_html("/admin/models/iris").await;
    assert!(page.contains("Version 2 uploaded"), "{page}");
    let still = prediction_id(&user.predict("iris", &iris_row()).await);
    assert_eq!(version_of(&app, still).await, 1);

    // Staff can try version 2 before promoting it; users cannot.
    let tried = app.get_html("/models/iris?version=2").await;
    assert!(tried.contains("trying version 2"));
    assert_eq!(
        user.get("/models/iris?version=2").await.status().as_u16(),
        403
    );

    // Promote: the very next prediction uses version 2.
    let res = move_alias(&app, "production", "2").await;
    assert_eq!(res.status().as_u16(), 303);
    let after = prediction_id(&user.predict("iris", &iris_row()).await);
    assert_eq!(version_of(&app, after).await, 2);

    // Roll back: one click, version 1 again.
    let res = app
        .post_form_from("/admin/models/iris", "/admin/models/iris/rollback", &[])
        .await;
    assert_eq!(res.status().as_u16(), 303);
    let back = prediction_id(&user.predict("iris", &iris_row()).await);
    assert_eq!(version_of(&app, back).await, 1);

    // Every move is recorded with who made it.
    let moves: Vec<(Option<i32>, i32, Option<String>)> = sqlx::query_as(
        "select f.version, t.version, u.username from alias_event e
         left join model_version f on f.id = e.from_version_id
         join model_version t on t.id = e.to_version_id
         left join app_user u on u.id = e.actor_id
         join model m on m.id = e.model_id
         where m.name = 'iris' order by e.id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        moves,
        vec![
            (None, 1, None),
            (Some(1), 2, Some("root".into())),
            (Some(2), 1, Some("root".into()))
        ]
    );
    let page = app.get_html("/admin/models/iris").await;
    assert!(page.contains("Roll back production to version 2"));
}

#[sqlx::test]
async fn any_alias_can_point_anywhere(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("root", true).await;
    upload_iris_v2(&app).await;

    let res = move_alias(&app, "staging", "2").await;
    assert_eq!(res.status().as_u16(), 303);
    let aliases: Vec<(String, i32)> = sqlx::query_as(
        "select a.alias, v.version from model_alias a join model_version v on v.id = a.version_id
         join model m on m.id = a.model_id where m.name = 'iris' order by a.alias",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        aliases,
        vec![("production".into(), 1), ("staging".into(), 2)]
    );

    let res = move_alias(&app, "Bad Alias!", "2").await;
    assert_eq!(res.status().as_u16(), 422);
    let res = move_alias(&app, "staging", "9").await;
    assert_eq!(res.status().as_u16(), 422);
    assert!(res.text().await.unwrap().contains("iris has no version 9."));
}

async fn refused_upload(app: &TestApp, form: Form) -> String {
    let versions = app.count("model_version").await;
    let res = app
        .post_multipart("/admin/models/iris", "/admin/models/iris/versions", form)
        .await;
    assert_eq!(res.status().as_u16(), 422);
    assert_eq!(app.count("model_version").await, versions, "nothing stored");
    res.text().await.unwrap()
}

#[sqlx::test]
async fn bad_uploads_say_what_is_wrong_and_store_nothing(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("root", true).await;
    let artifacts_before = walk(std::path::Path::new(&app.settings.artifacts));

    let html = refused_upload(
        &app,
        Form::new().part(
            "model",
            file_part(b"hello, I am a text file".to_vec(), "model.onnx"),
        ),
    )
    .await;
    assert!(html.contains("This is not an ONNX model file"), "{html}");

    let iris = read("models/iris/1/model.onnx");
    let html = refused_upload(
        &app,
        Form::new().part(
            "model",
            file_part(iris[..iris.len() / 2].to_vec(), "model.onnx"),
        ),
    )
    .await;
    assert!(html.contains("ONNX"), "{html}");

    let html = refused_upload(
        &app,
        Form::new().part(
            "model",
            file_part(read("tests/fixtures/unknown_operator.onnx"), "model.onnx"),
        ),
    )
    .await;
    assert!(html.contains(
        "The model uses the operator FusedGemm (com.microsoft), which Plinth cannot run."
    ));

    // A tree ensemble whose tree loops back on itself is refused with the reason, not run.
    let html = refused_upload(
        &app,
        Form::new().part(
            "model",
            file_part(read("tests/fixtures/looping_tree.onnx"), "model.onnx"),
        ),
    )
    .await;
    assert!(html.contains("tree 0 has a cycle through node"), "{html}");

    let form = Form::new()
        .part(
            "model",
            file_part(read("tests/fixtures/iris_v2.onnx"), "model.onnx"),
        )
        .part(
            "card",
            file_part(read("models/diabetes/1/card.toml"), "card.toml"),
        );
    let html = refused_upload(&app, form).await;
    assert!(
        html.contains("The card lists 10 features but the model&#39;s input X takes 4 columns."),
        "{html}"
    );

    let form = Form::new()
        .part(
            "model",
            file_part(read("tests/fixtures/iris_v2.onnx"), "model.onnx"),
        )
        .part(
            "card",
            file_part(b"title = \"x\"\nflavour = 1\n".to_vec(), "card.toml"),
        );
    assert!(refused_upload(&app, form).await.contains("flavour"));

    let html = refused_upload(&app, Form::new().text("nothing", "here")).await;
    assert!(html.contains("Choose the model file"));

    assert_eq!(
        walk(std::path::Path::new(&app.settings.artifacts)),
        artifacts_before,
        "no artifact written"
    );
}

#[sqlx::test]
async fn an_upload_over_the_limit_is_refused(pool: PgPool) {
    let app = crate::helpers::spawn_app_with(pool, |s| s.max_upload_bytes = 2000).await;
    app.import_models().await;
    app.sign_in("root", true).await;

    let form = Form::new().part("model", file_part(vec![0u8; 5000], "model.onnx"));
    let res = app
        .post_multipart("/admin/models/iris", "/admin/models/iris/versions", form)
        .await;

    assert_eq!(res.status().as_u16(), 413);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("larger than this server accepts"));
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[sqlx::test]
async fn a_model_without_a_card_gets_a_form_from_its_signature(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.sign_in("root", true).await;

    let form = Form::new().text("name", "mystery").part(
        "model",
        file_part(read("tests/fixtures/iris_v2.onnx"), "model.onnx"),
    );
    let res = app
        .post_multipart("/admin/models", "/admin/models", form)
        .await;
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(location(&res), "/admin/models/mystery");

    let html = app.get_html("/models/mystery").await;
    assert!(html.contains(r#"name="x0""#) && html.contains(r#"name="x3""#));
    let res = app
        .predict(
            "mystery",
            &[
                ("x0", "5.1".into()),
                ("x1", "3.5".into()),
                ("x2", "1.4".into()),
                ("x3", "0.2".into()),
            ],
        )
        .await;
    assert_eq!(res.status().as_u16(), 303);
    let html = app.get_html(&location(&res)).await;
    assert!(
        html.contains(r#"<p class="headline">0</p>"#),
        "labels come from the signature"
    );
}

#[sqlx::test]
async fn model_names_are_checked_and_unique(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("root", true).await;

    for (name, message) in [
        ("Bad Name", "Model names use lowercase"),
        ("iris", "exists already"),
    ] {
        let form = Form::new().text("name", name).part(
            "model",
            file_part(read("tests/fixtures/iris_v2.onnx"), "model.onnx"),
        );
        let res = app
            .post_multipart("/admin/models", "/admin/models", form)
            .await;
        assert_eq!(res.status().as_u16(), 422);
        assert!(res.text().await.unwrap().contains(message));
    }
}

#[sqlx::test]
async fn registry_pages_are_for_staff(pool: PgPool) {
    let app = spawn_app(pool).await;
    app.import_models().await;
    app.sign_in("ada", false).await;

    assert_eq!(app.get("/admin/models").await.status().as_u16(), 403);
    assert_eq!(app.get("/admin/models/iris").await.status().as_u16(), 403);
    let res = app
        .post_form_from(
            "/",
            "/admin/models/iris/aliases",
            &[("alias", "production"), ("version", "1")],
        )
        .await;
    assert_eq!(res.status().as_u16(), 403);
}
