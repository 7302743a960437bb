//! The one error type of the HTTP layer, rendered as RFC 9457 `application/problem+json`.

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use starling_api::{Problem, PROBLEM_CONTENT_TYPE};

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not what the endpoint takes (not JSON, wrong shape).
    #[error("{detail}")]
    Malformed {
        /// What is wrong.
        detail: String,
    },
    /// The request is well-formed but a value is not acceptable.
    #[error("{detail}")]
    Invalid {
        /// What is wrong.
        detail: String,
        /// The field at fault.
        field: Option<String>,
    },
    /// The body is over the configured limit.
    #[error("request body is larger than the {limit}-byte limit")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The job's inputs together exceed the configured limit.
    #[error("inputs total {total} bytes, over the {limit}-byte limit on a job's inputs")]
    InputsTooLarge {
        /// Bytes of input submitted.
        total: usize,
        /// The limit.
        limit: usize,
    },
    /// No API key, or one the relay does not know.
    #[error("{0}")]
    Unauthorized(String),
    /// The account cannot cover what it asked for.
    #[error("{0}")]
    PaymentRequired(String),
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// The resource existed and was erased for good (a purged job's data).
    #[error("{0}")]
    Gone(String),
    /// The resource is not in a state that allows this (e.g. result before done).
    #[error("{0}")]
    Conflict(String),
    /// The client sent more requests than its rate limit allows.
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a request will be accepted again.
        retry_after_secs: u64,
    },
    /// The account has as many jobs running as it may.
    #[error("{detail}")]
    QuotaExceeded {
        /// Which quota, and how to get under it.
        detail: String,
        /// Seconds to wait before trying again.
        retry_after_secs: u64,
    },
    /// Too many WebRTC peers answered and not yet proved, from this address or in all.
    #[error("{detail}")]
    PeersPending {
        /// Which cap, and what to do.
        detail: String,
        /// Seconds until pending peers have opened or timed out.
        retry_after_secs: u64,
    },
    /// The request took longer than the relay allows.
    #[error("the request took longer than {limit_secs} s")]
    Timeout {
        /// The limit, in seconds.
        limit_secs: u64,
    },
    /// Too many event streams are open (the relay's, or the account's, limit).
    #[error("{detail}")]
    TooManyStreams {
        /// Which limit, and what to do.
        detail: String,
        /// Seconds to wait before trying again.
        retry_after_secs: u64,
    },
    /// A dependency (the database) does not answer; the relay is not ready.
    #[error("{0}")]
    Unavailable(String),
    /// Something failed on our side; details go to the log, not the client.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::Malformed { .. } => (
                StatusCode::BAD_REQUEST,
                "/problems/malformed-request",
                "Malformed request",
            ),
            Self::Invalid { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "/problems/invalid-value",
                "Invalid value",
            ),
            Self::TooLarge { .. } | Self::InputsTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "/problems/too-large",
                "Request too large",
            ),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "/problems/not-found", "Not found"),
            Self::Gone(_) => (StatusCode::GONE, "/problems/purged", "Erased for good"),
            Self::Conflict(_) => (
                StatusCode::CONFLICT,
                "/problems/conflict",
                "Not in a state that allows this",
            ),
            Self::QuotaExceeded { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "/problems/quota-exceeded",
                "Too many jobs running",
            ),
            Self::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "/problems/unauthorized",
                "API key missing or not valid",
            ),
            Self::PaymentRequired(_) => (
                StatusCode::PAYMENT_REQUIRED,
                "/problems/insufficient-credit",
                "Not enough credit",
            ),
            Self::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "/problems/rate-limited",
                "Too many requests",
            ),
            Self::PeersPending { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "/problems/peers-pending",
                "Too many pending WebRTC peers",
            ),
            Self::Timeout { .. } => (
                StatusCode::REQUEST_TIMEOUT,
                "/problems/timeout",
                "Request took too long",
            ),
            Self::TooManyStreams { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "/problems/too-many-streams",
                "Too many event streams",
            ),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "/problems/unavailable",
                "Service unavailable",
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "/problems/internal",
                "Internal error",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) = &self {
            tracing::error!("internal error: {cause}");
        }
        let (status, kind, title) = self.parts();
        let field = match &self {
            Self::Invalid { field, .. } => field.clone(),
            _ => None,
        };
        let body = Problem {
            kind: kind.to_owned(),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            field,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut response =
            (status, [(header::CONTENT_TYPE, PROBLEM_CONTENT_TYPE)], json).into_response();
        if let Self::Unauthorized(_) = self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        if let Self::QuotaExceeded {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after_secs.into());
        }
        if let Self::PeersPending {
            retry_after_secs, ..
        }
        | Self::TooManyStreams {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after_secs.into());
        }
        if let Self::RateLimited { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after_secs.into());
        }
        response
    }
}

/// A query string that does not fit its endpoint's parameters: 422, whichever handler.
impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::Invalid {
            detail: rejection.body_text(),
            field: None,
        }
    }
}

impl ApiError {
    /// A body that could not be read: 413 when it is over `limit`, else 400.
    pub fn unreadable_body(rejection: BytesRejection, limit: usize) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::TooLarge { limit }
        } else {
            Self::Malformed {
                detail: rejection.body_text(),
            }
        }
    }
}

impl From<crate::storage::StorageError> for ApiError {
    fn from(e: crate::storage::StorageError) -> Self {
        use crate::storage::{LedgerError, StorageError};
        match e {
            StorageError::Ledger(ledger) => match *ledger {
                LedgerError::Overdraft {
                    account,
                    balance,
                    amount,
                } => Self::PaymentRequired(format!(
                    "{account} holds {balance} credits; this needs {amount}"
                )),
                other => Self::Internal(other.to_string()),
            },
            e if e.is_unreachable() => {
                tracing::warn!("answering 503: {e}");
                Self::Unavailable("the database is unreachable; try again shortly".into())
            }
            e @ StorageError::TooManyActiveJobs { .. } => Self::QuotaExceeded {
                detail: format!("{e}; wait for one to end or cancel one"),
                retry_after_secs: 10,
            },
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<crate::sites::ProofError> for ApiError {
    fn from(e: crate::sites::ProofError) -> Self {
        use crate::sites::ProofError as P;
        match e {
            P::Busy => Self::RateLimited {
                retry_after_secs: 5,
            },
            P::Client(_) => Self::Unavailable(e.to_string()),
            P::Scheme
            | P::Address
            | P::Fetch(_)
            | P::Status(_)
            | P::TooLarge
            | P::WalletMissing(_) => Self::Invalid {
                detail: e.to_string(),
                field: Some("origin".into()),
            },
        }
    }
}

impl From<starling_kernels::KernelError> for ApiError {
    fn from(e: starling_kernels::KernelError) -> Self {
        use starling_kernels::KernelError as K;
        let field = match &e {
            K::UnknownKernel(_) => Some("kernel".to_owned()),
            // A parameter missing or of the wrong shape is the whole object's fault.
            K::InvalidParam { field, .. } if field == "params" => Some(field.clone()),
            K::InvalidParam { field, .. } => Some(format!("params.{field}")),
            K::InvalidInput { field, .. } => Some(format!("input.{field}")),
            K::Shape { .. } => None,
        };
        Self::Invalid {
            detail: e.to_string(),
            field,
        }
    }
}

impl From<crate::scheduler::SubmitError> for ApiError {
    fn from(e: crate::scheduler::SubmitError) -> Self {
        match e {
            crate::scheduler::SubmitError::Kernel(k) => k.into(),
            e @ crate::scheduler::SubmitError::Quorum(_) => Self::Invalid {
                detail: e.to_string(),
                field: Some("verification.quorum".into()),
            },
            e @ crate::scheduler::SubmitError::TooManyUnits { .. } => {
                tracing::info!("refused a job: {e} (--unit-mflops sets how large units are)");
                Self::Invalid {
                    detail: e.to_string(),
                    field: Some("params".into()),
                }
            }
            e @ crate::scheduler::SubmitError::SoloCustom(_) => Self::Invalid {
                detail: e.to_string(),
                field: Some("verification.quorum".into()),
            },
            e @ crate::scheduler::SubmitError::Suspended { .. } => Self::Invalid {
                detail: e.to_string(),
                field: Some("kernel".into()),
            },
            crate::scheduler::SubmitError::Storage(s) => s.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn render(error: ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        (
            status,
            retry_after,
            serde_json::from_slice(&body).unwrap_or_default(),
        )
    }

    #[tokio::test]
    async fn rate_limited_carries_retry_after_and_unavailable_is_503() {
        let (status, retry_after, body) = render(ApiError::RateLimited {
            retry_after_secs: 7,
        })
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry_after.as_deref(), Some("7"));
        assert_eq!(body["detail"], "too many requests; retry in 7 s");
        assert_eq!(body["type"], "/problems/rate-limited");

        let (status, retry_after, body) =
            render(ApiError::Unavailable("the database does not answer".into())).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after, None);
        assert_eq!(body["status"], 503);
        assert_eq!(body["detail"], "the database does not answer");
    }
}
