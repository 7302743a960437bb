//! The network page: volunteers online, jobs by state, and the ledger, refreshed every
//! few seconds from the relay's REST API.

use crate::net;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Job states shown, in life-cycle order.
const STATES: [&str; 5] = ["queued", "running", "done", "failed", "cancelled"];

/// What one refresh read.
#[derive(Clone, Debug, Default, PartialEq)]
struct Snapshot {
    volunteers: Option<u64>,
    /// (state, jobs listed (at most the page size), whether more exist)
    jobs: Vec<(String, Vec<Value>, bool)>,
    /// Ledger entries, or None when the relay has no ledger endpoint.
    ledger: Option<Vec<Value>>,
    error: Option<String>,
}

async fn refresh() -> Snapshot {
    let mut snap = Snapshot::default();
    match net::get("/api/v1/stats").await {
        Ok(r) if r.ok() => snap.volunteers = r.json["volunteers"].as_u64(),
        Ok(r) => snap.error = Some(r.problem()),
        Err(e) => snap.error = Some(e),
    }
    for state in STATES {
        if let Ok(r) = net::get(&format!("/api/v1/jobs?state={state}&limit=50")).await {
            if r.ok() {
                let jobs = r.json["jobs"].as_array().cloned().unwrap_or_default();
                let more = !r.json["next"].is_null();
                snap.jobs.push((state.to_owned(), jobs, more));
            }
        }
    }
    snap.ledger = match net::get("/api/v1/ledger?limit=20").await {
        Ok(r) if r.status == 200 => r.json["entries"].as_array().cloned(),
        _ => None,
    };
    snap
}

fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

/// The network page.
#[component]
pub fn NetworkPage() -> impl IntoView {
    let snap = RwSignal::new(None::<Snapshot>);
    let alive = Arc::new(AtomicBool::new(true));
    let flag = alive.clone();
    on_cleanup(move || flag.store(false, Ordering::Relaxed));
    spawn_local(async move {
        while alive.load(Ordering::Relaxed) {
            let s = refresh().await;
            if !alive.load(Ordering::Relaxed) {
                break;
            }
            snap.set(Some(s));
            gloo_timers::future::TimeoutFuture::new(3_000).await;
        }
    });
    view! {
        <div class="intro">
            <h1>"Network"</h1>
            <p>"What the relay sees right now. Refreshed every 3 seconds."</p>
        </div>
        {move || snap.get().and_then(|s| s.error).map(|e| view! { <p class="error" role="alert">{e}</p> })}
        <div class="meter card">
            <div class="stat">
                <div class="value" data-testid="volunteers">
                    {move || snap.get().and_then(|s| s.volunteers).map(|v| v.to_string()).unwrap_or_else(|| "–".to_owned())}
                </div>
                <div class="label">"volunteers online"</div>
            </div>
            {move || snap.get().map(|s| s.jobs.iter().map(|(state, jobs, more)| view! {
                <div class="stat">
                    <div class="value" data-testid=format!("jobs-{state}")>{format!("{}{}", jobs.len(), if *more { "+" } else { "" })}</div>
                    <div class="label">{format!("jobs {state}")}</div>
                </div>
            }).collect_view())}
        </div>
        <section class="card" aria-labelledby="jobs-title">
            <h2 id="jobs-title">"Recent jobs"</h2>
            {move || {
                let mut rows: Vec<Value> = snap.get().map(|s| s.jobs.into_iter().flat_map(|(_, j, _)| j).collect()).unwrap_or_default();
                // The ten most recently changed, whatever their state.
                rows.sort_by_key(|j| std::cmp::Reverse(j["updated_ms"].as_i64().unwrap_or(0)));
                rows.truncate(10);
                if rows.is_empty() {
                    view! { <p class="hint">"No jobs yet."</p> }.into_any()
                } else {
                    view! {
                        <div class="table-wrap"><table>
                            <thead><tr><th scope="col">"Job"</th><th scope="col">"Kernel"</th><th scope="col">"State"</th><th scope="col">"Units"</th></tr></thead>
                            <tbody>
                                {rows.into_iter().map(|j| view! {
                                    <tr>
                                        <td><code>{short(j["id"].as_str().unwrap_or(""))}</code></td>
                                        <td>{j["kernel"].as_str().unwrap_or("").to_owned()}</td>
                                        <td><span class=format!("pill {}", j["state"].as_str().unwrap_or(""))>{j["state"].as_str().unwrap_or("").to_owned()}</span></td>
                                        <td>{format!("{} / {}", j["progress"]["units_done"].as_i64().unwrap_or(0), j["progress"]["units_total"].as_i64().unwrap_or(0))}</td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table></div>
                    }.into_any()
                }
            }}
        </section>
        <section class="card" aria-labelledby="ledger-title">
            <h2 id="ledger-title">"Ledger"</h2>
            {move || match snap.get().map(|s| s.ledger) {
                None => view! { <p class="hint">"Loading…"</p> }.into_any(),
                Some(None) => view! { <p class="hint" data-testid="ledger-missing">"Ledger not available on this relay."</p> }.into_any(),
                Some(Some(entries)) if entries.is_empty() => view! { <p class="hint">"No ledger entries yet."</p> }.into_any(),
                Some(Some(entries)) => view! {
                    <div class="table-wrap"><table data-testid="ledger">
                        <thead><tr><th scope="col">"#"</th><th scope="col">"From"</th><th scope="col">"To"</th><th scope="col">"Amount"</th><th scope="col">"Reason"</th></tr></thead>
                        <tbody>
                            {entries.into_iter().map(|e| {
                                let cell = |v: &Value| match v { Value::String(s) => s.clone(), Value::Null => String::new(), v => v.to_string() };
                                view! {
                                    <tr>
                                        <td>{cell(&e["seq"])}</td>
                                        <td><code>{short(&cell(&e["debit"]))}</code></td>
                                        <td><code>{short(&cell(&e["credit"]))}</code></td>
                                        <td>{cell(&e["amount"])}</td>
                                        <td>{cell(&e["reason"])}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table></div>
                }.into_any(),
            }}
        </section>
        <section class="card placeholder" aria-labelledby="soon-title">
            <h2 id="soon-title">"Coming soon"</h2>
            <p class="hint">"Aggregate GFLOP/s and a leaderboard of volunteers will appear here once the relay publishes them."</p>
        </section>
    }
}
