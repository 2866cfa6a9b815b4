//! The streams' Kafka clients: the brokers, and TLS and SASL for managed services (Confluent
//! Cloud, Amazon MSK, Azure Event Hubs' Kafka endpoint), turned into librdkafka properties.

use std::path::Path;

use super::ConfigError;

/// The SASL mechanisms librdkafka speaks here without other libraries.
const MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// Property names whose values are secrets: never logged.
const SECRET_KEYS: [&str; 4] = [
    "sasl.password",
    "ssl.key.password",
    "sasl.oauthbearer.client.secret",
    "ssl.keystore.password",
];

/// The librdkafka properties that `PLINTH_KAFKA_SECURITY_PROTOCOL`, `_SASL_MECHANISM`,
/// `_SASL_USERNAME`, `_SASL_PASSWORD` (or `_FILE`), `_CA_FILE`, `_CERT_FILE` and `_KEY_FILE`
/// ask for, followed by `PLINTH_KAFKA_CONFIG`'s (which win).
pub(super) fn properties(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let err = |name: &'static str, message: String| ConfigError { name, message };
    let mechanism = match get("PLINTH_KAFKA_SASL_MECHANISM") {
        None => None,
        Some(m) => {
            let m = m.trim().to_ascii_uppercase();
            if m == "OAUTHBEARER" {
                return Err(err(
                    "PLINTH_KAFKA_SASL_MECHANISM",
                    "OAUTHBEARER is not built in (librdkafka fetches OIDC tokens with libcurl, \
                     which this build leaves out); use PLAIN (Confluent Cloud API keys, Event \
                     Hubs connection strings), SCRAM-SHA-256/512 (MSK), or client certificates"
                        .into(),
                ));
            }
            if !MECHANISMS.contains(&m.as_str()) {
                return Err(err(
                    "PLINTH_KAFKA_SASL_MECHANISM",
                    format!("{m:?}: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
                ));
            }
            Some(m)
        }
    };
    let username = get("PLINTH_KAFKA_SASL_USERNAME");
    let password = get("PLINTH_KAFKA_SASL_PASSWORD");
    match (&mechanism, &username, &password) {
        (Some(_), None, _) => {
            return Err(err(
                "PLINTH_KAFKA_SASL_USERNAME",
                "is required with PLINTH_KAFKA_SASL_MECHANISM".into(),
            ))
        }
        (Some(_), _, None) => {
            return Err(err(
                "PLINTH_KAFKA_SASL_PASSWORD",
                "is required with PLINTH_KAFKA_SASL_MECHANISM (or PLINTH_KAFKA_SASL_PASSWORD_FILE)"
                    .into(),
            ))
        }
        (None, Some(_), _) | (None, _, Some(_)) => {
            return Err(err(
                "PLINTH_KAFKA_SASL_MECHANISM",
                "is required with a SASL user name or password: PLAIN, SCRAM-SHA-256 or \
                 SCRAM-SHA-512"
                    .into(),
            ))
        }
        _ => {}
    }
    let file = |name: &'static str| -> Result<Option<String>, ConfigError> {
        match get(name) {
            None => Ok(None),
            Some(path) => {
                let path = path.trim().to_string();
                std::fs::File::open(Path::new(&path))
                    .map(|_| Some(path.clone()))
                    .map_err(|e| err(name, format!("cannot read {path}: {e}")))
            }
        }
    };
    let ca = file("PLINTH_KAFKA_CA_FILE")?;
    let cert = file("PLINTH_KAFKA_CERT_FILE")?;
    let key = file("PLINTH_KAFKA_KEY_FILE")?;
    if cert.is_some() != key.is_some() {
        let missing = if cert.is_none() {
            "PLINTH_KAFKA_CERT_FILE"
        } else {
            "PLINTH_KAFKA_KEY_FILE"
        };
        return Err(err(
            missing,
            "client certificates need both PLINTH_KAFKA_CERT_FILE and PLINTH_KAFKA_KEY_FILE".into(),
        ));
    }
    let tls_files = ca.is_some() || cert.is_some();
    let protocol = match get("PLINTH_KAFKA_SECURITY_PROTOCOL") {
        Some(p) => {
            let p = p.trim().to_ascii_uppercase();
            match p.as_str() {
                "PLAINTEXT" | "SSL" | "SASL_PLAINTEXT" | "SASL_SSL" => p,
                _ => {
                    return Err(err(
                        "PLINTH_KAFKA_SECURITY_PROTOCOL",
                        format!("{p:?}: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
                    ))
                }
            }
        }
        // Managed brokers take SASL over TLS: SASL alone means SASL_SSL.
        None if mechanism.is_some() => "SASL_SSL".into(),
        None if tls_files => "SSL".into(),
        None => "PLAINTEXT".into(),
    };
    let tls = protocol.ends_with("SSL");
    if !tls && tls_files {
        return Err(err(
            "PLINTH_KAFKA_SECURITY_PROTOCOL",
            format!("{protocol} does not use TLS, but a CA or client certificate is set"),
        ));
    }
    if protocol.starts_with("SASL") != mechanism.is_some() {
        return Err(err(
            "PLINTH_KAFKA_SECURITY_PROTOCOL",
            if mechanism.is_some() {
                format!("{protocol} does not use SASL, but PLINTH_KAFKA_SASL_MECHANISM is set")
            } else {
                format!("{protocol} needs PLINTH_KAFKA_SASL_MECHANISM, _USERNAME and _PASSWORD")
            },
        ));
    }
    let mut out = vec![(
        "security.protocol".to_string(),
        protocol.to_ascii_lowercase(),
    )];
    if tls {
        // Without a CA file, the system's trust store: `probe` finds it where the OpenSSL
        // build would not look (the scratch image keeps only /etc/ssl/certs).
        out.push((
            "ssl.ca.location".into(),
            ca.unwrap_or_else(|| "probe".into()),
        ));
        out.push((
            "ssl.endpoint.identification.algorithm".into(),
            "https".into(),
        ));
        if let (Some(cert), Some(key)) = (cert, key) {
            out.push(("ssl.certificate.location".into(), cert));
            out.push(("ssl.key.location".into(), key));
        }
    }
    if let (Some(m), Some(u), Some(p)) = (mechanism, username, password) {
        out.push(("sasl.mechanism".into(), m));
        out.push(("sasl.username".into(), u.trim().to_string()));
        out.push(("sasl.password".into(), p));
    }
    let extra = super::values::parse_or(get, "PLINTH_KAFKA_CONFIG", Some(Vec::new()), |v| {
        v.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .filter(|(k, _)| !k.is_empty())
                    .ok_or_else(|| format!("{p:?} is not key=value"))
            })
            .collect::<Result<Vec<_>, String>>()
    })?;
    out.extend(extra);
    Ok(out)
}

/// The properties as `key=value` for a log line, secrets replaced by `***`.
pub fn redacted(properties: &[(String, String)]) -> Vec<String> {
    properties
        .iter()
        .map(|(k, v)| {
            if SECRET_KEYS.contains(&k.as_str()) || k.contains("jaas") {
                format!("{k}=***")
            } else {
                format!("{k}={v}")
            }
        })
        .collect()
}
