//! The CLI's one error type: every failure becomes a [`CliError`] whose message is the
//! one line the user sees, with an exit code per kind.

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
    #[error("cannot reach the relay at {url}: {}", explain(source))]
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

impl From<starling_api::Error> for CliError {
    fn from(e: starling_api::Error) -> Self {
        match e {
            starling_api::Error::Api { problem } => Self::Api {
                status: problem.status,
                title: problem.title,
                detail: problem.detail,
                field: problem.field,
            },
            starling_api::Error::Network { url, source } => Self::Network { url, source },
            starling_api::Error::Decode(what) => Self::Protocol(what),
            starling_api::Error::Trust(e) => Self::Usage(e.to_string()),
        }
    }
}

/// A network error with its causes: reqwest's own message ("error sending request")
/// hides the one a user can act on, such as an untrusted certificate.
fn explain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = inner.source();
    }
    if text.contains("invalid peer certificate") {
        text.push_str(" (a relay with a self-signed certificate? trust it with --ca-cert FILE)");
    }
    text
}
