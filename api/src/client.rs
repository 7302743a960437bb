//! A small async client for the relay's REST API: one method per call the CLI and the
//! tests make, answers decoded into this crate's types, refusals carrying the relay's
//! [`Problem`].

use crate::events::JobEvent;
use crate::jobs::{Job, JobList, JobState, SubmitJob, UnitPage, IDEMPOTENCY_KEY};
use crate::kernels::KernelCatalog;
use crate::ledger::{Account, LedgerEntry, LedgerPage, TransferRequest, WalletHistory};
use crate::network::{Leaderboard, Stats};
use crate::sites::{Site, SiteRegistration};
use crate::wallets::Wallet;
use crate::{sse, Problem};
use reqwest::multipart::{Form, Part};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use std::fmt::Display;
use std::time::Duration;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The relay answered with an error status; its problem+json body (or, from
    /// something that is not a Starling relay, one made up from the status and text).
    #[error("{problem}")]
    Api {
        /// What the relay said.
        problem: Problem,
    },
    /// The relay could not be reached or the connection broke.
    #[error("cannot reach the relay at {url}: {source}")]
    Network {
        /// The relay's base URL.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The relay's answer is not what the API promises.
    #[error("unexpected answer from the relay: {0}")]
    Decode(String),
    /// The certificate to trust (`--ca-cert`) is unusable.
    #[error(transparent)]
    Trust(#[from] crate::https::TrustError),
}

impl Error {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { problem } => Some(problem.status),
            _ => None,
        }
    }
}

/// A named input to upload as a multipart part.
#[derive(Debug, Clone)]
pub struct Input {
    /// Input name (`a`, `weights`…).
    pub name: String,
    /// File name, for the relay's logs.
    pub file_name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// A finished job's merged result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult {
    /// The kernel's content type (`application/octet-stream`, `image/png`…).
    pub content_type: String,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// How long an idle connection is kept for reuse: under the relay's header-read timeout
/// (10 s by default), which also closes idle kept-alive connections, so a request is
/// never sent on a connection the relay is closing.
const IDLE_CONNECTION: Duration = Duration::from_secs(5);

/// A client for one relay, with or without an API key.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    api_key: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client for the relay at `base` (e.g. `http://127.0.0.1:8080`), sending
    /// `Authorization: Bearer api_key` when given one.
    pub fn new(base: &str, api_key: Option<String>) -> Result<Self, Error> {
        Self::trusting(base, api_key, None)
    }

    /// [`Client::new`] also trusting the certificates in the PEM file `ca_cert` (a
    /// relay's self-signed certificate, or a private CA's), beside the system's roots.
    pub fn trusting(
        base: &str,
        api_key: Option<String>,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<Self, Error> {
        let http = crate::https::http_client_builder(ca_cert)?
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(IDLE_CONNECTION)
            .build()
            .map_err(|e| Error::Decode(format!("HTTP client: {e}")))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            api_key,
            http,
        })
    }

    /// A client for the relay at `base` on an HTTP client of the caller's (default
    /// headers, timeouts), sending `Authorization: Bearer api_key` when given one.
    pub fn with_http(base: &str, api_key: Option<String>, http: reqwest::Client) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            api_key,
            http,
        }
    }

    /// The relay's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The underlying HTTP client, for requests this client has no method for.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A request to `path` under the base URL, with the API key.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends and turns non-2xx answers into [`Error::Api`].
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, Error> {
        let response = request.send().await.map_err(|e| self.network(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.map_err(|e| self.network(e))?;
        let problem = serde_json::from_str(&text).unwrap_or_else(|_| Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("error").to_owned(),
            status: status.as_u16(),
            detail: text.trim().chars().take(200).collect(),
            field: None,
        });
        Err(Error::Api { problem })
    }

    fn network(&self, source: reqwest::Error) -> Error {
        Error::Network {
            url: self.base.clone(),
            source,
        }
    }

    async fn decode<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, Error> {
        let response = self.send(request).await?;
        let bytes = response.bytes().await.map_err(|e| self.network(e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode(e.to_string()))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        self.decode(self.request(Method::GET, path)).await
    }

    /// `GET /api/v1/kernels`.
    pub async fn kernels(&self) -> Result<KernelCatalog, Error> {
        self.get("/api/v1/kernels").await
    }

    /// `POST /api/v1/kernels`: registers a WGSL kernel; the relay's answer is the kernel
    /// (created, or the one already under the same content address).
    pub async fn register_kernel(
        &self,
        kernel: &crate::RegisterKernel,
    ) -> Result<crate::CustomKernel, Error> {
        self.decode(self.request(Method::POST, "/api/v1/kernels").json(kernel))
            .await
    }

    /// `GET /api/v1/kernels/{id}`: a registered kernel with its manifest and source.
    pub async fn custom_kernel(&self, id: &str) -> Result<crate::CustomKernel, Error> {
        self.get(&format!("/api/v1/kernels/{id}")).await
    }

    /// `POST /api/v1/jobs` with a JSON body (inputs in base64 inside it).
    pub async fn submit(
        &self,
        job: &SubmitJob,
        idempotency_key: Option<&str>,
    ) -> Result<Job, Error> {
        let mut request = self.request(Method::POST, "/api/v1/jobs").json(job);
        if let Some(key) = idempotency_key {
            request = request.header(IDEMPOTENCY_KEY, key);
        }
        self.decode(request).await
    }

    /// `POST /api/v1/jobs/quote`: what submitting `job` would cost, nothing stored.
    pub async fn quote(&self, job: &SubmitJob) -> Result<crate::Quote, Error> {
        self.decode(self.request(Method::POST, "/api/v1/jobs/quote").json(job))
            .await
    }

    /// `POST /api/v1/jobs` as multipart: the job as JSON, each input as raw bytes (so
    /// large inputs are not inflated by base64).
    pub async fn submit_multipart(
        &self,
        job: &SubmitJob,
        inputs: Vec<Input>,
        idempotency_key: Option<&str>,
    ) -> Result<Job, Error> {
        let job = serde_json::to_string(job).map_err(|e| Error::Decode(e.to_string()))?;
        let mut form = Form::new().part(
            "job",
            Part::text(job)
                .mime_str("application/json")
                .map_err(|e| Error::Decode(e.to_string()))?,
        );
        for input in inputs {
            form = form.part(
                input.name,
                Part::bytes(input.bytes).file_name(input.file_name),
            );
        }
        let mut request = self.request(Method::POST, "/api/v1/jobs").multipart(form);
        if let Some(key) = idempotency_key {
            request = request.header(IDEMPOTENCY_KEY, key);
        }
        self.decode(request).await
    }

    /// `GET /api/v1/jobs/{id}`.
    pub async fn job(&self, id: impl Display) -> Result<Job, Error> {
        self.get(&format!("/api/v1/jobs/{id}")).await
    }

    /// `GET /api/v1/jobs?limit=&state=&cursor=`.
    pub async fn jobs(
        &self,
        state: Option<JobState>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<JobList, Error> {
        // Every value is URL-safe as it is: a number, a state name, a base64url cursor.
        let mut path = format!("/api/v1/jobs?limit={limit}");
        if let Some(state) = state {
            path.push_str(&format!("&state={state}"));
        }
        if let Some(cursor) = cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        self.get(&path).await
    }

    /// `DELETE /api/v1/jobs/{id}`: cancels the job.
    pub async fn cancel(&self, id: impl Display) -> Result<Job, Error> {
        self.decode(self.request(Method::DELETE, &format!("/api/v1/jobs/{id}")))
            .await
    }

    /// `DELETE /api/v1/jobs/{id}/data`: erases an ended job's data.
    pub async fn purge(&self, id: impl Display) -> Result<Job, Error> {
        self.decode(self.request(Method::DELETE, &format!("/api/v1/jobs/{id}/data")))
            .await
    }

    /// `GET /api/v1/jobs/{id}/units?after=`: one page of the job's units.
    pub async fn units_page(
        &self,
        id: impl Display,
        after: Option<i64>,
    ) -> Result<UnitPage, Error> {
        let path = match after {
            Some(after) => format!("/api/v1/jobs/{id}/units?after={after}"),
            None => format!("/api/v1/jobs/{id}/units"),
        };
        self.get(&path).await
    }

    /// Every unit of the job, page after page.
    pub async fn units(&self, id: impl Display) -> Result<Vec<crate::UnitSummary>, Error> {
        let mut units = Vec::new();
        let mut after = None;
        loop {
            let page = self.units_page(&id, after).await?;
            units.extend(page.units);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(units),
            }
        }
    }

    /// `GET /api/v1/jobs/{id}/result`: the merged result of a done job.
    pub async fn result(&self, id: impl Display) -> Result<JobResult, Error> {
        let response = self
            .send(self.request(Method::GET, &format!("/api/v1/jobs/{id}/result")))
            .await?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response.bytes().await.map_err(|e| self.network(e))?;
        Ok(JobResult {
            content_type,
            bytes: bytes.to_vec(),
        })
    }

    /// `GET /api/v1/jobs/{id}/events`: the job's event stream, opened.
    pub async fn events(&self, id: impl Display) -> Result<EventStream, Error> {
        let response = self
            .send(
                self.request(Method::GET, &format!("/api/v1/jobs/{id}/events"))
                    .header("Accept", "text/event-stream"),
            )
            .await?;
        Ok(EventStream {
            response,
            parser: sse::Parser::default(),
            ready: std::collections::VecDeque::new(),
            url: self.base.clone(),
        })
    }

    /// `GET /api/v1/stats`.
    pub async fn stats(&self) -> Result<Stats, Error> {
        self.get("/api/v1/stats").await
    }

    /// `GET /api/v1/stats/history`.
    pub async fn stats_history(&self) -> Result<crate::StatsHistory, Error> {
        self.get("/api/v1/stats/history").await
    }

    /// `GET /api/v1/leaderboard?limit=`.
    pub async fn leaderboard(&self, limit: Option<u32>) -> Result<Leaderboard, Error> {
        match limit {
            Some(limit) => {
                self.get(&format!("/api/v1/leaderboard?limit={limit}"))
                    .await
            }
            None => self.get("/api/v1/leaderboard").await,
        }
    }

    /// `GET /api/v1/wallets/{address}`.
    pub async fn wallet(&self, address: impl Display) -> Result<Wallet, Error> {
        self.get(&format!("/api/v1/wallets/{address}")).await
    }

    /// `GET /api/v1/wallets/{address}/history?after=&limit=`.
    pub async fn wallet_history(
        &self,
        address: impl Display,
        after: u64,
        limit: u32,
    ) -> Result<WalletHistory, Error> {
        self.get(&format!(
            "/api/v1/wallets/{address}/history?after={after}&limit={limit}"
        ))
        .await
    }

    /// `GET /api/v1/ledger?after=&limit=`.
    pub async fn ledger(&self, after: u64, limit: u32) -> Result<LedgerPage, Error> {
        self.get(&format!("/api/v1/ledger?after={after}&limit={limit}"))
            .await
    }

    /// `GET /api/v1/account`: the caller's own account.
    pub async fn account(&self) -> Result<Account, Error> {
        self.get("/api/v1/account").await
    }

    /// `POST /api/v1/transfers`.
    pub async fn transfer(&self, transfer: &TransferRequest) -> Result<LedgerEntry, Error> {
        self.decode(
            self.request(Method::POST, "/api/v1/transfers")
                .json(transfer),
        )
        .await
    }

    /// `POST /api/v1/sites`.
    pub async fn register_site(&self, site: &SiteRegistration) -> Result<Site, Error> {
        self.decode(self.request(Method::POST, "/api/v1/sites").json(site))
            .await
    }
}

/// A job's open event stream.
#[derive(Debug)]
pub struct EventStream {
    response: Response,
    parser: sse::Parser,
    ready: std::collections::VecDeque<sse::Event>,
    url: String,
}

impl EventStream {
    /// The next raw event; `None` once the relay closed the stream.
    pub async fn next_raw(&mut self) -> Result<Option<sse::Event>, Error> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            let chunk = self
                .response
                .chunk()
                .await
                .map_err(|source| Error::Network {
                    url: self.url.clone(),
                    source,
                })?;
            match chunk {
                Some(chunk) => self.ready.extend(self.parser.feed(&chunk)),
                None => return Ok(None),
            }
        }
    }

    /// The next event, decoded; `None` once the relay closed the stream.
    pub async fn next(&mut self) -> Result<Option<JobEvent>, Error> {
        match self.next_raw().await? {
            Some(event) => JobEvent::parse(&event.name, &event.data)
                .map(Some)
                .map_err(|e| Error::Decode(e.to_string())),
            None => Ok(None),
        }
    }
}
