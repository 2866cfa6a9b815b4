//! What librdkafka reports beside the records: a broker that refuses the credentials, a
//! certificate that is not trusted, no broker answering. librdkafka retries these quietly and
//! a consumer just receives nothing, so the clients keep the last one here, in words for an
//! operator, and the stream's loop puts it on the stream's admin page and in the log.

use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// The last error of a stream's clients, shared by its consumer and producer.
#[derive(Clone, Default)]
pub struct Trouble(Arc<Mutex<Option<Reported>>>);

/// An error as the stream reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reported {
    /// In words, with what to check.
    pub message: String,
    /// The stream cannot work until someone changes a setting (credentials, certificates):
    /// its clients are stopped and made again later rather than left retrying.
    pub fatal: bool,
}

impl Trouble {
    /// Keeps `error` (librdkafka's `reason` says which broker and what it answered).
    pub fn note(&self, error: &KafkaError, reason: &str) {
        let Some(reported) = explain(error, reason) else {
            return;
        };
        if let Ok(mut slot) = self.0.lock() {
            // A refusal outranks the "all brokers down" that follows it.
            if slot.as_ref().is_some_and(|r| r.fatal) && !reported.fatal {
                return;
            }
            *slot = Some(reported);
        }
    }

    /// A consumer's error in words: the one the clients reported (with the broker's reason)
    /// when it is the same trouble, else `error` explained, else as librdkafka says it.
    pub fn reading(&self, topic: &str, error: &KafkaError) -> String {
        let reported = self.take().filter(|r| r.fatal);
        match reported.or_else(|| explain(error, &error.to_string())) {
            Some(r) => r.message,
            None => format!("reading {topic}: {error}"),
        }
    }

    /// The error kept since the last call, if any.
    pub fn take(&self) -> Option<Reported> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// An operator's reading of a librdkafka error; `None` for those that are not worth one
/// (a broker connection closed while idle, which librdkafka reopens).
pub fn explain(error: &KafkaError, reason: &str) -> Option<Reported> {
    let code = error.rdkafka_error_code()?;
    let (message, fatal) = match code {
        RDKafkaErrorCode::Authentication
        | RDKafkaErrorCode::SaslAuthenticationFailed
        | RDKafkaErrorCode::IllegalSASLState
        | RDKafkaErrorCode::UnsupportedSASLMechanism => (
            format!(
                "the broker refused the SASL credentials: {reason}. Check \
                 PLINTH_KAFKA_SASL_USERNAME, PLINTH_KAFKA_SASL_PASSWORD and \
                 PLINTH_KAFKA_SASL_MECHANISM"
            ),
            true,
        ),
        RDKafkaErrorCode::SSL => (tls_failure(reason), true),
        RDKafkaErrorCode::TopicAuthorizationFailed
        | RDKafkaErrorCode::GroupAuthorizationFailed
        | RDKafkaErrorCode::ClusterAuthorizationFailed => (
            format!("the broker does not allow this user to use the topic or group: {reason}"),
            true,
        ),
        RDKafkaErrorCode::AllBrokersDown => (format!("no broker answers: {reason}"), false),
        RDKafkaErrorCode::Resolve => (
            format!("a broker's address cannot be resolved: {reason}"),
            false,
        ),
        RDKafkaErrorCode::BrokerTransportFailure => {
            // librdkafka says "SSL handshake failed" here when TLS meets a plaintext listener,
            // and "Disconnected" when an idle connection closes.
            if reason.contains("SSL") || reason.contains("ssl") {
                (tls_failure(reason), true)
            } else if reason.contains("SASL") || reason.contains("sasl") {
                (
                    format!("the SASL exchange with the broker failed: {reason}"),
                    true,
                )
            } else {
                return None;
            }
        }
        _ => return None,
    };
    Some(Reported { message, fatal })
}

/// A failed TLS handshake in words: an untrusted certificate says what to check.
fn tls_failure(reason: &str) -> String {
    if reason.contains("verify failed") {
        format!(
            "the broker's TLS certificate is not trusted: {reason}. Check PLINTH_KAFKA_CA_FILE \
             (the CA that signed the broker's certificate) and that the broker's address is a \
             name its certificate holds"
        )
    } else {
        format!("the TLS connection to the broker failed: {reason}")
    }
}

/// The producer's context: its errors kept with the consumer's.
pub struct ProducerTrouble(pub Trouble);

impl ClientContext for ProducerTrouble {
    fn error(&self, error: KafkaError, reason: &str) {
        self.0.note(&error, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::{explain, Trouble};
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    #[test]
    fn refusals_are_fatal_and_say_what_to_check_and_idle_disconnects_are_not_reported() {
        let untrusted = "ssl://b:9093/bootstrap: SSL handshake failed: error:0A000086:SSL \
                         routines::certificate verify failed (after 1ms in state SSL_HANDSHAKE)";
        for code in [
            RDKafkaErrorCode::SSL,
            RDKafkaErrorCode::BrokerTransportFailure,
        ] {
            let r = explain(&KafkaError::Global(code), untrusted).expect("explained");
            assert!(r.fatal);
            assert!(r.message.contains("not trusted"), "{}", r.message);
            assert!(r.message.contains("PLINTH_KAFKA_CA_FILE"), "{}", r.message);
        }
        let refused = explain(
            &KafkaError::MessageConsumption(RDKafkaErrorCode::Authentication),
            "SASL authentication error",
        )
        .expect("explained");
        assert!(refused.fatal && refused.message.contains("PLINTH_KAFKA_SASL_PASSWORD"));
        let idle = KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure);
        assert_eq!(
            explain(&idle, "b:9092/1: Disconnected (after 600000ms)"),
            None
        );

        // A refusal is not hidden by the "all brokers down" that follows it.
        let trouble = Trouble::default();
        trouble.note(&KafkaError::Global(RDKafkaErrorCode::SSL), untrusted);
        trouble.note(
            &KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert!(trouble.take().is_some_and(|r| r.fatal));
        assert_eq!(trouble.take(), None);
    }
}
