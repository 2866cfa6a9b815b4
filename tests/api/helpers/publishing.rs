//! Test helpers for API tokens, publishing versions and calling the API with a token.

use super::*;

impl TestApp {
    /// Creates a user with an API token and returns the secret.
    pub async fn token_for(&self, username: &str, staff: bool) -> String {
        let id = match plinth_store::users::find_by_username(&self.pool, username)
            .await
            .expect("lookup")
        {
            Some(user) => user.id,
            None => {
                self.create_user(username, "plinth-pedestal-42", staff)
                    .await
            }
        };
        let secret = plinth::auth::tokens::generate();
        plinth_store::tokens::create(
            &self.pool,
            id,
            "test",
            &plinth::auth::tokens::visible_prefix(&secret),
            &plinth::auth::tokens::hash(&secret),
        )
        .await
        .expect("token stored");
        secret
    }

    /// Publishes `tests/fixtures/iris_v2.onnx` with iris's card as a new iris version through
    /// the v1 API, with a staff token.
    /// Publishes a version through the JSON API: the model file and, when given, a card.
    pub async fn publish(
        &self,
        staff_token: &str,
        name: &str,
        model: &str,
        card: Option<&str>,
    ) -> reqwest::Response {
        let mut form = reqwest::multipart::Form::new().part(
            "model",
            file_part(std::fs::read(model).expect("model file"), "model.onnx"),
        );
        if let Some(card) = card {
            form = form.part(
                "card",
                file_part(std::fs::read(card).expect("card file"), "card.toml"),
            );
        }
        self.api(
            reqwest::Method::POST,
            &format!("/api/v1/models/{name}/versions"),
            staff_token,
        )
        .multipart(form)
        .send()
        .await
        .expect("request sent")
    }

    /// Publishes a version with its card and reference data through the API: the answer.
    pub async fn publish_with_reference(
        &self,
        staff_token: &str,
        name: &str,
        model: &str,
        card: &[u8],
        reference: Vec<u8>,
    ) -> serde_json::Value {
        let form = reqwest::multipart::Form::new()
            .part(
                "model",
                file_part(std::fs::read(model).expect("model file"), "model.onnx"),
            )
            .part("card", file_part(card.to_vec(), "card.toml"))
            .part("reference", file_part(reference, "reference.csv"));
        let res = self
            .api(
                reqwest::Method::POST,
                &format!("/api/v1/models/{name}/versions"),
                staff_token,
            )
            .multipart(form)
            .send()
            .await
            .expect("request sent");
        assert!(res.status().is_success(), "publish: {}", res.status());
        res.json().await.expect("JSON")
    }

    pub async fn publish_iris_v2(&self, staff_token: &str) -> reqwest::Response {
        self.publish(
            staff_token,
            "iris",
            "tests/fixtures/iris_v2.onnx",
            Some("models/iris/1/card.toml"),
        )
        .await
    }

    /// Publishes zoo model `file` (`tests/fixtures/zoo/{file}.onnx`) as the next iris version,
    /// with iris's card and no reference data; its version number.
    pub async fn publish_zoo(&self, staff_token: &str, file: &str) -> i64 {
        let res = self
            .publish(
                staff_token,
                "iris",
                &format!("tests/fixtures/zoo/{file}.onnx"),
                Some("models/iris/1/card.toml"),
            )
            .await;
        assert_eq!(res.status().as_u16(), 201, "{}", res.text().await.unwrap());
        let body: serde_json::Value = res.json().await.unwrap();
        body["version"].as_i64().unwrap()
    }

    /// A JSON request with a bearer token.
    pub fn api(&self, method: reqwest::Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }
}
