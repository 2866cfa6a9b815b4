use super::*;
use std::collections::HashMap;

fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_lookup(|k| map.get(k).cloned())
}

#[test]
fn defaults_need_no_configuration() {
    let s = settings(&[]).expect("defaults are valid");
    assert_eq!(s.addr.to_string(), "127.0.0.1:8000");
    assert_eq!(s.database_url, "postgres://postgres@127.0.0.1:5432/plinth");
    assert_eq!(s.signup, SignupPolicy::Open);
    assert!(!s.insecure_cookies);
    assert_eq!(s.session_idle, Duration::from_secs(1800));
    assert_eq!(s.session_max_age, Duration::from_secs(12 * 3600));
}

#[test]
fn a_bad_value_names_its_variable() {
    let err = settings(&[("PLINTH_ADDR", "nowhere")]).unwrap_err();
    assert_eq!(err.name, "PLINTH_ADDR");
    let err = settings(&[("PLINTH_SIGNUP", "maybe")]).unwrap_err();
    assert_eq!(err.name, "PLINTH_SIGNUP");
    let err = settings(&[("PLINTH_SECRET_KEY", "short")]).unwrap_err();
    assert_eq!(err.name, "PLINTH_SECRET_KEY");
    let err = settings(&[("PLINTH_SESSION_IDLE_MINUTES", "0")]).unwrap_err();
    assert_eq!(err.name, "PLINTH_SESSION_IDLE_MINUTES");
    let err = settings(&[("PLINTH_ARTIFACTS", "ftp://host/models")]).unwrap_err();
    assert_eq!(err.name, "PLINTH_ARTIFACTS");
    assert!(err.message.contains("ftp://"), "{}", err.message);
}

#[test]
fn the_clouds_port_variables_make_plinth_listen_on_every_interface() {
    let s = settings(&[("PORT", "9000")]).expect("valid");
    assert_eq!(s.addr.to_string(), "0.0.0.0:9000");
    assert_eq!(s.platform, None);
    assert!(!s.public_inference);
    // PLINTH_ADDR wins.
    let s = settings(&[("PORT", "9000"), ("PLINTH_ADDR", "127.0.0.1:7000")]).expect("valid");
    assert_eq!(s.addr.to_string(), "127.0.0.1:7000");
    let err = settings(&[("PORT", "http")]).unwrap_err();
    assert_eq!(err.name, "PORT");
}

#[test]
fn platforms_are_recognised_by_the_variables_they_set() {
    let s = settings(&[
        ("AIP_HTTP_PORT", "8081"),
        (
            "AIP_PREDICT_ROUTE",
            "/v1/endpoints/1/deployedModels/2:predict",
        ),
        ("AIP_STORAGE_URI", "gs://bucket/models"),
    ])
    .expect("valid");
    assert_eq!(s.platform, Some(Platform::Vertex));
    assert_eq!(s.addr.to_string(), "0.0.0.0:8081");
    assert_eq!(s.vertex_routes.0, "/health");
    assert_eq!(
        s.vertex_routes.1,
        "/v1/endpoints/1/deployedModels/2:predict"
    );
    assert_eq!(s.models_uri.as_deref(), Some("gs://bucket/models"));
    assert!(s.public_inference, "the platform authenticates callers");

    let s = settings(&[("SM_MODEL_DIR", "/opt/ml/model")]).expect("valid");
    assert_eq!(s.platform, Some(Platform::SageMaker));
    assert_eq!(s.addr.to_string(), "0.0.0.0:8080");
    assert_eq!(s.models_dir, std::path::Path::new("/opt/ml/model"));

    let s = settings(&[("AZUREML_MODEL_DIR", "/var/azureml-app/models")]).expect("valid");
    assert_eq!(s.platform, Some(Platform::AzureMl));
    assert_eq!(
        s.models_dir,
        std::path::Path::new("/var/azureml-app/models")
    );

    let s = settings(&[("AZUREML_MODEL_DIR", "/m"), ("PLINTH_PLATFORM", "none")]).expect("valid");
    assert_eq!(s.platform, None);
    let err = settings(&[("AIP_HTTP_PORT", "1"), ("AIP_HEALTH_ROUTE", "health")]).unwrap_err();
    assert_eq!(err.name, "AIP_HEALTH_ROUTE");
}

#[test]
fn secrets_can_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let key = "k".repeat(64);
    std::fs::write(dir.path().join("key"), format!("{key}\n")).unwrap();
    std::fs::write(dir.path().join("url"), "postgres://u:p@db/plinth\r\n").unwrap();
    let key_file = dir.path().join("key").display().to_string();
    let url_file = dir.path().join("url").display().to_string();
    let s = settings(&[
        ("PLINTH_SECRET_KEY_FILE", &key_file),
        ("PLINTH_DATABASE_URL_FILE", &url_file),
        ("PLINTH_MIGRATE", "0"),
    ])
    .expect("valid");
    assert_eq!(s.secret_key.as_deref(), Some(key.as_bytes()));
    assert_eq!(s.database_url, "postgres://u:p@db/plinth");
    assert!(!s.migrate);
    // The variable itself wins over its file.
    let s = settings(&[
        ("PLINTH_DATABASE_URL", "postgres://x@y/z"),
        ("PLINTH_DATABASE_URL_FILE", &url_file),
    ])
    .expect("valid");
    assert_eq!(s.database_url, "postgres://x@y/z");
    let err = settings(&[("PLINTH_ADMIN_PASSWORD_FILE", "/no/such/file")]).unwrap_err();
    assert_eq!(err.name, "PLINTH_ADMIN_PASSWORD_FILE");
}

#[test]
fn artifacts_take_a_directory_or_an_object_store_url() {
    let s = settings(&[]).expect("valid");
    assert_eq!(s.artifacts, "data/artifacts");
    assert_eq!(s.cache_dir, std::path::Path::new("data/cache"));
    let s = settings(&[
        ("PLINTH_ARTIFACTS", "s3://models/plinth"),
        ("PLINTH_CACHE_DIR", "/var/cache/plinth"),
    ])
    .expect("valid");
    assert_eq!(s.artifacts, "s3://models/plinth");
    assert_eq!(s.cache_dir, std::path::Path::new("/var/cache/plinth"));
}

#[test]
fn signup_can_be_closed_and_cookies_made_insecure() {
    let s = settings(&[
        ("PLINTH_SIGNUP", "closed"),
        ("PLINTH_INSECURE_COOKIES", "1"),
    ])
    .expect("valid");
    assert_eq!(s.signup, SignupPolicy::Closed);
    assert!(s.insecure_cookies);
}

#[test]
fn kafka_sasl_over_tls_becomes_librdkafka_properties_with_the_password_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, secret) = (dir.path().join("ca.pem"), dir.path().join("password"));
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    std::fs::write(&secret, "s3cret-from-a-file\n").unwrap();
    let s = settings(&[
        ("PLINTH_KAFKA_SASL_MECHANISM", "scram-sha-512"),
        ("PLINTH_KAFKA_SASL_USERNAME", "plinth"),
        ("PLINTH_KAFKA_SASL_PASSWORD_FILE", secret.to_str().unwrap()),
        ("PLINTH_KAFKA_CA_FILE", ca.to_str().unwrap()),
        ("PLINTH_KAFKA_CONFIG", "client.id=plinth-a"),
    ])
    .expect("valid");
    let get = |k: &str| {
        s.kafka_config
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("security.protocol"), Some("sasl_ssl"));
    assert_eq!(get("sasl.mechanism"), Some("SCRAM-SHA-512"));
    assert_eq!(get("sasl.password"), Some("s3cret-from-a-file"));
    assert_eq!(get("ssl.ca.location"), ca.to_str());
    assert_eq!(get("ssl.endpoint.identification.algorithm"), Some("https"));
    assert_eq!(get("client.id"), Some("plinth-a"));
    let logged = redacted_kafka_config(&s.kafka_config).join(",");
    assert!(logged.contains("sasl.password=***"), "{logged}");
    assert!(!logged.contains("s3cret"), "{logged}");
    // TLS alone: the system's trust store unless a CA is named.
    let s = settings(&[("PLINTH_KAFKA_SECURITY_PROTOCOL", "ssl")]).expect("valid");
    assert!(s
        .kafka_config
        .contains(&("ssl.ca.location".into(), "probe".into())));
}

#[test]
fn kafka_security_settings_that_cannot_work_name_their_variable() {
    let refused = |vars: &[(&str, &str)]| settings(vars).unwrap_err();
    let e = refused(&[("PLINTH_KAFKA_SASL_MECHANISM", "GSSAPI")]);
    assert_eq!(e.name, "PLINTH_KAFKA_SASL_MECHANISM");
    assert!(e.message.contains("SCRAM-SHA-256"), "{}", e.message);
    let e = refused(&[("PLINTH_KAFKA_SASL_MECHANISM", "OAUTHBEARER")]);
    assert!(e.message.contains("libcurl"), "{}", e.message);
    let e = refused(&[("PLINTH_KAFKA_SASL_MECHANISM", "PLAIN")]);
    assert_eq!(e.name, "PLINTH_KAFKA_SASL_USERNAME");
    let e = refused(&[
        ("PLINTH_KAFKA_SASL_MECHANISM", "PLAIN"),
        ("PLINTH_KAFKA_SASL_USERNAME", "$ConnectionString"),
    ]);
    assert_eq!(e.name, "PLINTH_KAFKA_SASL_PASSWORD");
    let e = refused(&[("PLINTH_KAFKA_SASL_PASSWORD_FILE", "/no/such/file")]);
    assert_eq!(e.name, "PLINTH_KAFKA_SASL_PASSWORD_FILE");
    let e = refused(&[("PLINTH_KAFKA_CA_FILE", "/no/such/ca.pem")]);
    assert_eq!(e.name, "PLINTH_KAFKA_CA_FILE");
    assert!(e.message.contains("/no/such/ca.pem"), "{}", e.message);
    let e = refused(&[("PLINTH_KAFKA_SECURITY_PROTOCOL", "tls")]);
    assert_eq!(e.name, "PLINTH_KAFKA_SECURITY_PROTOCOL");
    let e = refused(&[
        ("PLINTH_KAFKA_SECURITY_PROTOCOL", "plaintext"),
        ("PLINTH_KAFKA_SASL_MECHANISM", "PLAIN"),
        ("PLINTH_KAFKA_SASL_USERNAME", "u"),
        ("PLINTH_KAFKA_SASL_PASSWORD", "p"),
    ]);
    assert!(e.message.contains("does not use SASL"), "{}", e.message);
    let e = refused(&[("PLINTH_KAFKA_CONFIG", "security.protocol")]);
    assert_eq!(e.name, "PLINTH_KAFKA_CONFIG");
}
