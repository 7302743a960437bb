//! What a test does with a page in any browser: open it, click, read text, wait for
//! text, read the console. Chromium ([`crate::browser::Browser`], over chromedriver) and
//! Firefox ([`crate::firefox::Firefox`], over WebDriver BiDi) both implement it, so one
//! test body can drive either.

use anyhow::{bail, Result};
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

/// How serious a console entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleLevel {
    /// `console.debug`, `console.log`, `console.info` and the like.
    Info,
    /// `console.warn`.
    Warning,
    /// `console.error`, or an uncaught exception.
    Error,
}

/// One line of a page's console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleEntry {
    /// How serious it is.
    pub level: ConsoleLevel,
    /// Where it came from, as the browser names it (`javascript` for an uncaught
    /// exception, `console-api` or `console` for a call, `network` for a failed load),
    /// or `browser` for a report of the browser's own with no script behind it.
    pub source: String,
    /// What it says.
    pub text: String,
}

impl ConsoleEntry {
    /// An uncaught exception or a `console.error` call: what a page that works never
    /// logs. Failed loads (an expected 404) are the network's, and reports the browser
    /// makes of its own (`browser`), not the page's.
    pub fn is_page_error(&self) -> bool {
        self.level == ConsoleLevel::Error && !matches!(self.source.as_str(), "network" | "browser")
    }
}

impl fmt::Display for ConsoleEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:?} {}] {}", self.level, self.source, self.text)
    }
}

/// A page in a browser, as a test drives it. Elements are found by `data-testid`.
pub trait Page: Sync {
    /// The browser's name, for messages.
    fn browser_name(&self) -> &str;

    /// Opens a URL.
    fn goto(&self, url: &str) -> impl Future<Output = Result<()>> + Send;

    /// Clicks the element with `data-testid` as a user would (a pointer press and
    /// release at its centre).
    fn click(&self, test_id: &str) -> impl Future<Output = Result<()>> + Send;

    /// The visible text of the element with `data-testid`, or None if it is absent.
    fn text(&self, test_id: &str) -> impl Future<Output = Result<Option<String>>> + Send;

    /// Every console entry the page logged since the browser started.
    fn console(&self) -> impl Future<Output = Result<Vec<ConsoleEntry>>> + Send;

    /// Waits until the element's text satisfies `pred`; returns that text. On timeout
    /// the error names the page's status line and its console errors.
    fn wait_for_text(
        &self,
        test_id: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool + Send,
    ) -> impl Future<Output = Result<String>> + Send {
        async move {
            let deadline = Instant::now() + timeout;
            loop {
                let text = self.text(test_id).await?;
                if let Some(t) = text.as_deref().filter(|t| pred(t)) {
                    return Ok(t.to_owned());
                }
                if Instant::now() > deadline {
                    let status = self.text("status").await.ok().flatten();
                    let console = self.console().await.unwrap_or_default();
                    bail!(
                        "{}: [data-testid={test_id}] is {text:?} after {timeout:?} (status: {status:?}); console:\n{}",
                        self.browser_name(),
                        lines(&console)
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// The console's page errors (see [`ConsoleEntry::is_page_error`]).
    fn page_errors(&self) -> impl Future<Output = Result<Vec<ConsoleEntry>>> + Send {
        async move {
            Ok(self
                .console()
                .await?
                .into_iter()
                .filter(ConsoleEntry::is_page_error)
                .collect())
        }
    }
}

/// Console entries one per line, for an error message.
pub fn lines(entries: &[ConsoleEntry]) -> String {
    if entries.is_empty() {
        return "  (empty)".to_owned();
    }
    entries
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}
