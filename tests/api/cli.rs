use std::io::Write;
use std::process::{Command, Stdio};

use sqlx::PgPool;

use crate::helpers::{database_url, free_port};

fn plinth(database_url: &str, args: &[&str], stdin: &str) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(args)
        .env("PLINTH_DATABASE_URL", database_url)
        .env_remove("PLINTH_SUPERUSER_PASSWORD")
        .env("PLINTH_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[sqlx::test]
async fn createsuperuser_creates_a_staff_account_from_stdin(pool: PgPool) {
    let url = database_url(&pool).await;

    let (code, out) = plinth(
        &url,
        &["createsuperuser", "--username", "grace"],
        "a-staff-secret-9\n",
    );

    assert_eq!(code, 0, "{out}");
    let staff: bool = sqlx::query_scalar("select is_staff from app_user where username = 'grace'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(staff);
    let (code, out) = plinth(
        &url,
        &["createsuperuser", "--username", "GRACE"],
        "a-staff-secret-9\n",
    );
    assert_eq!(code, 1);
    assert!(out.contains("already exists"), "{out}");
    let (code, out) = plinth(
        &url,
        &["createsuperuser", "--username", "weak"],
        "password\n",
    );
    assert_eq!(code, 1);
    assert!(out.contains("too common"), "{out}");
}

#[sqlx::test]
async fn check_passes_on_a_migrated_database(pool: PgPool) {
    let url = database_url(&pool).await;

    let (code, out) = plinth(&url, &["check"], "");

    assert_eq!(code, 0, "{out}");
    assert!(out.contains("migrations: ok"));
}

#[sqlx::test(migrations = false)]
async fn check_reports_pending_migrations_then_migrate_fixes_them(pool: PgPool) {
    let url = database_url(&pool).await;

    let (code, out) = plinth(&url, &["check"], "");
    assert_eq!(code, 4, "{out}");

    let (code, out) = plinth(&url, &["migrate"], "");
    assert_eq!(code, 0, "{out}");
    let (code, _) = plinth(&url, &["check"], "");
    assert_eq!(code, 0);
}

#[test]
fn check_reports_an_unreachable_database_and_bad_configuration() {
    let (code, out) = plinth("postgres://postgres@127.0.0.1:1/plinth", &["check"], "");
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("database: unreachable"));

    let out = Command::new(env!("CARGO_BIN_EXE_plinth"))
        .arg("check")
        .env("PLINTH_ADDR", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PLINTH_ADDR"));
}

#[sqlx::test]
async fn models_import_and_list_work_by_hand(pool: PgPool) {
    let url = database_url(&pool).await;
    let scratch = tempfile::tempdir().unwrap();
    let artifacts = scratch.path().to_path_buf();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_plinth"))
            .args(args)
            .env("PLINTH_DATABASE_URL", &url)
            .env("PLINTH_ARTIFACTS", &artifacts)
            .env("PLINTH_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };

    let (code, out) = run(&["models", "import", "models"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("iris: imported as version 1"));
    let (_, again) = run(&["models", "import", "models"]);
    assert!(again.contains("iris: already there as version 1"));
    let (code, list) = run(&["models", "list"]);
    assert_eq!(code, Some(0));
    assert!(list.contains("iris\t1 version(s)\tproduction=1"), "{list}");
}

#[sqlx::test]
async fn createtoken_prints_a_working_secret_once(pool: PgPool) {
    let url = database_url(&pool).await;
    plinth(
        &url,
        &["createsuperuser", "--username", "grace"],
        "a-staff-secret-9\n",
    );

    let out = Command::new(env!("CARGO_BIN_EXE_plinth"))
        .args(["createtoken", "--username", "grace", "--name", "ci"])
        .env("PLINTH_DATABASE_URL", &url)
        .env("PLINTH_LOG", "warn")
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(0));
    let secret = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let found = plinth_store::tokens::authenticate(&pool, &plinth::auth::tokens::hash(&secret))
        .await
        .unwrap();
    assert_eq!(found.map(|(_, u)| u.username), Some("grace".to_string()));
    let (code, out) = plinth(&url, &["createtoken", "--username", "nobody"], "");
    assert_eq!(code, 1);
    assert!(out.contains("no active user"), "{out}");
}

#[sqlx::test(migrations = false)]
async fn check_says_when_the_database_is_not_created_yet(pool: PgPool) {
    let url = database_url(&pool).await;
    let (base, query) = url.split_once('?').unwrap_or((&url, ""));
    let (server, _) = base.rsplit_once('/').unwrap();
    let missing = format!("{server}/plinth_never_created?{query}");

    let (code, out) = plinth(&missing, &["check"], "");

    assert_eq!(code, 4, "{out}");
    assert!(out.contains("database: not created yet"), "{out}");
    assert!(out.contains("configured by PLINTH_DATABASE_URL"), "{out}");
}

#[sqlx::test]
async fn sigterm_drains_readyz_first_then_stops(pool: PgPool) {
    // Arrange: the real binary, with a two-second drain.
    let url = database_url(&pool).await;
    let port = free_port();
    let scratch = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_plinth"))
        .arg("serve")
        .env("PLINTH_DATABASE_URL", &url)
        .env("PLINTH_ADDR", format!("127.0.0.1:{port}"))
        .env("PLINTH_ARTIFACTS", scratch.path().join("artifacts"))
        .env("PLINTH_ADMIN_PASSWORD", "a-staff-secret-9")
        .env("PLINTH_DRAIN_SECONDS", "2")
        .env("PLINTH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary runs");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let status = |path: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            client
                .get(format!("{base}{path}"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .ok()
        }
    };
    let mut ready = None;
    for _ in 0..200 {
        ready = status("/readyz").await;
        if ready == Some(200) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(ready, Some(200), "Plinth became ready");

    // Act
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    // Assert: while draining, /readyz says 503 and pages are still served.
    assert_eq!(status("/readyz").await, Some(503));
    assert_eq!(status("/healthz").await, Some(200));
    // Each answer now closes its connection, so a balancer's kept-alive pool moves away.
    let res = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(
        res.headers().get("connection").map(|v| v.to_str().unwrap()),
        Some("close")
    );
    assert!(child.try_wait().unwrap().is_none(), "still running");
    // Then it stops by itself, cleanly.
    let mut exited = None;
    for _ in 0..100 {
        if let Some(code) = child.try_wait().unwrap() {
            exited = Some(code);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let code = exited.expect("Plinth stopped after the drain");
    assert!(code.success(), "{code:?}");
    assert_eq!(status("/healthz").await, None, "no longer accepting");
}

#[sqlx::test]
async fn score_scores_a_file_from_a_model_directory_or_the_registry(pool: PgPool) {
    let url = database_url(&pool).await;
    let scratch = tempfile::tempdir().unwrap();
    let input = scratch.path().join("flowers.csv");
    std::fs::write(
        &input,
        "petal_width,name,sepal_length,sepal_width,petal_length\n\
         0.2,first,5.1,3.5,1.4\n\
         2.3,second,6.9,3.1,5.4\n\
         0.2,third,nine,3.5,1.4\n",
    )
    .unwrap();
    let output = scratch.path().join("out.csv");
    let run = |args: &[&str], database: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_plinth"));
        cmd.args(args)
            .env("PLINTH_ARTIFACTS", scratch.path().join("artifacts"))
            .env("PLINTH_LOG", "warn");
        match database {
            Some(url) => cmd.env("PLINTH_DATABASE_URL", url),
            // A model on disk needs no database at all.
            None => cmd
                .env("PLINTH_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
                .env("PLINTH_LOCAL_POSTGRES", "off"),
        };
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let out_path = output.display().to_string();
    let in_path = input.display().to_string();
    let (code, _, err) = run(
        &["score", "models/iris/1", &in_path, "--output", &out_path],
        None,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("line 4: sepal_length: Enter a number."),
        "{err}"
    );
    assert!(err.contains("scored 2 rows (1 refused)"), "{err}");
    let text = std::fs::read_to_string(&output).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "petal_width,name,sepal_length,sepal_width,petal_length,prediction,\
         probability_setosa,probability_versicolor,probability_virginica,error"
    );
    assert!(
        lines[1].starts_with("0.2,first,5.1,3.5,1.4,setosa,"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("2.3,second,6.9,3.1,5.4,virginica,"),
        "{text}"
    );
    assert!(
        lines[3].ends_with(",,,,,sepal_length: Enter a number."),
        "{text}"
    );

    // With no output, CSV on standard output; a budget of 0 refused rows stops it (status 1).
    let (code, stdout, err) = run(
        &["score", "models/iris/1", &in_path, "--max-errors", "0"],
        None,
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("error budget of 0"), "{err}");
    assert!(stdout.starts_with("petal_width,name,"), "{stdout}");

    // A registry model by name, from the database and the artifact store.
    let (code, _, err) = run(&["models", "import", "models"], Some(&url));
    assert_eq!(code, Some(0), "{err}");
    let (code, stdout, err) = run(&["score", "iris", &in_path], Some(&url));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(stdout, text, "the same results either way");
    let (code, _, err) = run(&["score", "no-such-model", &in_path], Some(&url));
    assert_eq!(code, Some(1));
    assert!(err.contains("no-such-model"), "{err}");

    // --explain adds the contributions, counted on the directory's reference.csv, the same
    // whether the model is read from its directory or from the registry.
    let (code, explained, err) = run(&["score", "models/iris/1", &in_path, "--explain"], None);
    assert_eq!(code, Some(0), "{err}");
    let header = explained.lines().next().unwrap();
    assert!(
        header.ends_with(
            "probability_virginica,explanation_base,contribution_sepal_length,\
             contribution_sepal_width,contribution_petal_length,contribution_petal_width,error"
        ),
        "{header}"
    );
    let (code, from_registry, err) = run(&["score", "iris", &in_path, "--explain"], Some(&url));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(from_registry, explained);
    // A model directory without reference data cannot explain, and says why.
    let bare = scratch.path().join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::copy("models/iris/1/model.onnx", bare.join("model.onnx")).unwrap();
    std::fs::copy("models/iris/1/card.toml", bare.join("card.toml")).unwrap();
    let (code, _, err) = run(
        &["score", bare.to_str().unwrap(), &in_path, "--explain"],
        None,
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("reference.csv cannot be read"), "{err}");
    // A file that does not fit.
    std::fs::write(&input, "sepal_length\n5.1\n").unwrap();
    let (code, _, err) = run(&["score", "models/iris/1", &in_path], None);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("\"sepal_width\", \"petal_length\", \"petal_width\""),
        "{err}"
    );
}

#[sqlx::test]
async fn datasets_add_and_list_work_by_hand(pool: PgPool) {
    let url = database_url(&pool).await;
    let scratch = tempfile::tempdir().unwrap();
    let artifacts = scratch.path().join("artifacts");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_plinth"))
            .args(args)
            .env("PLINTH_DATABASE_URL", &url)
            .env("PLINTH_ARTIFACTS", &artifacts)
            .env("PLINTH_CACHE_DIR", scratch.path().join("cache"))
            .env("PLINTH_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let file = "models/iris/1/reference.csv";
    let (code, out) = run(&[
        "datasets",
        "add",
        "iris-train",
        file,
        "--description",
        "iris",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("iris-train: added as version 1 (105 rows)"),
        "{out}"
    );
    let (code, again) = run(&["datasets", "add", "iris-train", file]);
    assert_eq!(code, Some(0), "{again}");
    assert!(
        again.contains("iris-train: already there as version 1"),
        "{again}"
    );
    // The file is in the artifact store, under its SHA-256.
    let sha = plinth::registry::artifacts::sha256_hex(&std::fs::read(file).unwrap());
    let stored: String = sqlx::query_scalar("select location from dataset_version")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, sha);
    let (code, list) = run(&["datasets", "list"]);
    assert_eq!(code, Some(0));
    assert!(
        list.contains(&format!("iris-train\tv1\t105 rows\t{}", &sha[..12])),
        "{list}"
    );
    // What is wrong is named, with a non-zero status.
    let (code, out) = run(&[
        "datasets",
        "add",
        "iris-train",
        file,
        "--key",
        "sepal_length",
    ]);
    assert_ne!(code, Some(0));
    assert!(out.contains("The key column \"sepal_length\" has"), "{out}");
    let (code, out) = run(&["datasets", "add", "iris-train", "no/such/file.csv"]);
    assert_ne!(code, Some(0));
    assert!(out.contains("no/such/file.csv"), "{out}");
}
