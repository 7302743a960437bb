//! The relay's REST API as the CLI uses it. Every failure becomes a [`CliError`] whose
//! message is the one line the user sees.

use crate::sse;
use reqwest::multipart::{Form, Part};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use std::time::Duration;

/// Why a command failed, with the process exit code for each kind.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line is wrong in a way clap cannot see (a bad `--param`).
    #[error("{0}")]
    Usage(String),
    /// The relay answered with an error (problem+json when it is a Starling relay).
    #[error("{status} {title}: {detail}{}", field.as_ref().map(|f| format!(" (field {f})")).unwrap_or_default())]
    Api {
        /// HTTP status.
        status: u16,
        /// Short title.
        title: String,
        /// What went wrong.
        detail: String,
        /// The request field at fault, if the relay named one.
        field: Option<String>,
    },
    /// The relay could not be reached or the connection broke.
    #[error("cannot reach the relay at {url}: {source}")]
    Network {
        /// The relay URL.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The event stream closed before the job ended (the relay stopped or restarted).
    #[error(
        "the event stream of job {0} closed before the job ended; run `starling watch {0}` again"
    )]
    StreamClosed(String),
    /// The relay's answer is not what the API promises.
    #[error("unexpected answer from the relay: {0}")]
    Protocol(String),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The job ended without a result.
    #[error("job {id} {state}{}", error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    JobEnded {
        /// Job id.
        id: String,
        /// `failed` or `cancelled`.
        state: String,
        /// The relay's reason, for failed jobs.
        error: Option<String>,
    },
}

impl CliError {
    /// The exit code: 2 usage, 3 API refusal, 4 network, 5 job failed or cancelled, 6 file.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Api { .. } | Self::Protocol(_) => 3,
            Self::Network { .. } | Self::StreamClosed(_) => 4,
            Self::JobEnded { .. } => 5,
            Self::File { .. } => 6,
        }
    }
}

/// A client for one relay.
pub struct Client {
    base: String,
    api_key: Option<String>,
    http: reqwest::Client,
}

/// A named input to upload.
pub struct Input {
    /// Input name (`a`, `weights`…).
    pub name: String,
    /// File name, for the relay's logs.
    pub file_name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl Client {
    /// A client for the relay at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, api_key: Option<String>) -> Result<Self, CliError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // The relay closes connections idle for its header-read timeout (10 s by
            // default); reusing one as it closes would fail the request.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| CliError::Protocol(format!("HTTP client: {e}")))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            api_key,
            http,
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends and turns non-2xx answers into [`CliError::Api`].
    async fn send(&self, request: RequestBuilder) -> Result<Response, CliError> {
        let response = request.send().await.map_err(|e| self.network(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.map_err(|e| self.network(e))?;
        let problem: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let str_of = |key: &str| problem[key].as_str().map(str::to_owned);
        Err(CliError::Api {
            status: status.as_u16(),
            title: str_of("title")
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned()),
            detail: str_of("detail").unwrap_or_else(|| text.trim().chars().take(200).collect()),
            field: str_of("field"),
        })
    }

    fn network(&self, source: reqwest::Error) -> CliError {
        CliError::Network {
            url: self.base.clone(),
            source,
        }
    }

    async fn json(&self, request: RequestBuilder) -> Result<Value, CliError> {
        self.send(request)
            .await?
            .json()
            .await
            .map_err(|e| CliError::Protocol(e.to_string()))
    }

    /// `GET /api/v1/kernels`.
    pub async fn kernels(&self) -> Result<Value, CliError> {
        self.json(self.request(Method::GET, "/api/v1/kernels"))
            .await
    }

    /// `POST /api/v1/jobs` as multipart: the job as JSON, each input as raw bytes.
    pub async fn submit(
        &self,
        kernel: &str,
        params: Value,
        inputs: Vec<Input>,
        quorum: Option<u32>,
        idempotency_key: Option<&str>,
    ) -> Result<Value, CliError> {
        let mut job = serde_json::json!({"kernel": kernel, "params": params});
        if let Some(quorum) = quorum {
            job["verification"] = serde_json::json!({ "quorum": quorum });
        }
        let job = job.to_string();
        let mut form = Form::new().part(
            "job",
            Part::text(job)
                .mime_str("application/json")
                .map_err(|e| CliError::Protocol(e.to_string()))?,
        );
        for input in inputs {
            form = form.part(
                input.name,
                Part::bytes(input.bytes).file_name(input.file_name),
            );
        }
        let mut request = self.request(Method::POST, "/api/v1/jobs").multipart(form);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        self.json(request).await
    }

    /// `GET /api/v1/jobs/{id}`.
    pub async fn job(&self, id: &str) -> Result<Value, CliError> {
        self.json(self.request(Method::GET, &format!("/api/v1/jobs/{id}")))
            .await
    }

    /// `DELETE /api/v1/jobs/{id}/data`.
    pub async fn purge(&self, id: &str) -> Result<Value, CliError> {
        self.json(self.request(Method::DELETE, &format!("/api/v1/jobs/{id}/data")))
            .await
    }

    /// `DELETE /api/v1/jobs/{id}`.
    pub async fn cancel(&self, id: &str) -> Result<Value, CliError> {
        self.json(self.request(Method::DELETE, &format!("/api/v1/jobs/{id}")))
            .await
    }

    /// `GET /api/v1/jobs?state=&limit=&cursor=`.
    pub async fn jobs(
        &self,
        state: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Value, CliError> {
        // Every value is URL-safe as it is: a number, a state name, a base64url cursor.
        let mut path = format!("/api/v1/jobs?limit={limit}");
        for (name, value) in [("state", state), ("cursor", cursor)] {
            if let Some(value) = value {
                path.push_str(&format!("&{name}={value}"));
            }
        }
        self.json(self.request(Method::GET, &path)).await
    }

    /// `GET /api/v1/jobs/{id}/result`: the result bytes.
    pub async fn result(&self, id: &str) -> Result<Vec<u8>, CliError> {
        let response = self
            .send(self.request(Method::GET, &format!("/api/v1/jobs/{id}/result")))
            .await?;
        Ok(response
            .bytes()
            .await
            .map_err(|e| self.network(e))?
            .to_vec())
    }

    /// `GET /api/v1/jobs/{id}/events`: calls `on_event` for each event until the stream
    /// ends; returns the last event.
    pub async fn events(
        &self,
        id: &str,
        mut on_event: impl FnMut(&sse::Event),
    ) -> Result<Option<sse::Event>, CliError> {
        let mut response = self
            .send(
                self.request(Method::GET, &format!("/api/v1/jobs/{id}/events"))
                    .header("Accept", "text/event-stream"),
            )
            .await?;
        let mut parser = sse::Parser::default();
        let mut last = None;
        while let Some(chunk) = response.chunk().await.map_err(|e| self.network(e))? {
            for event in parser.feed(&chunk) {
                on_event(&event);
                last = Some(event);
            }
        }
        Ok(last)
    }
}
