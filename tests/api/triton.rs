//! tritonclient's own HTTP client (PyPI `tritonclient[http]`) against Plinth, unchanged.
//! `PLINTH_PYTHON` names a Python with it installed (`.ci/run` makes one). The test is
//! `#[ignore]`d, so it runs only with `--include-ignored`, and then fails without that Python.

use std::process::Command;

use sqlx::PgPool;

use crate::helpers::spawn_app;

fn python() -> String {
    let python = std::env::var("PLINTH_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import tritonclient.http, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{python} cannot import tritonclient.http; pip install -r tests/requirements.txt and set PLINTH_PYTHON"
    );
    python
}

#[sqlx::test]
#[ignore = "needs a Python with tritonclient[http] (PLINTH_PYTHON); .ci/run runs it"]
async fn tritonclient_reads_metadata_and_infers_unchanged(pool: PgPool) {
    let python = python();
    let app = spawn_app(pool).await;
    app.import_models().await;
    let token = app.token_for("ada", false).await;
    let host = app.address.trim_start_matches("http://").to_string();

    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args([
                "tests/triton/client.py",
                &host,
                &token,
                "tests/fixtures/iris.json",
            ])
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();

    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("tritonclient: ok"));
    let v2_rows: i64 =
        sqlx::query_scalar("select sum(n)::bigint from prediction where source = 'v2'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(v2_rows, 12, "every row tritonclient sent was stored");
}
