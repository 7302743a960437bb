//! The network page: volunteers online, the network's pace (GFLOP/s, units/s) now and
//! over the last hour, jobs by state, the leaderboard of wallets by validated credit,
//! and the ledger, refreshed every few seconds from the relay's REST API.

use crate::charts::LineChart;
use crate::net;
use leptos::prelude::*;
use leptos::task::spawn_local;
use starling_api::{Earner, Leaderboard, LedgerEntry, LedgerPage, Stats, StatsHistory};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Job states shown, in life-cycle order.
const STATES: [&str; 5] = ["queued", "running", "done", "failed", "cancelled"];

/// What one refresh read.
#[derive(Clone, Debug, Default, PartialEq)]
struct Snapshot {
    /// `/api/v1/stats`: volunteers, rates, jobs per state.
    stats: Option<Stats>,
    /// Wallets by validated credit.
    leaders: Vec<Earner>,
    /// Ledger entries, newest first, or None when the relay has no ledger endpoint.
    ledger: Option<Vec<LedgerEntry>>,
    /// The last hour minute by minute, oldest first (empty before the first answer).
    history: Option<StatsHistory>,
    error: Option<String>,
}

async fn refresh() -> Snapshot {
    let mut snap = Snapshot::default();
    match net::get("/api/v1/stats")
        .await
        .and_then(|r| r.decode::<Stats>())
    {
        Ok(stats) => snap.stats = Some(stats),
        Err(e) => snap.error = Some(e),
    }
    if let Ok(Ok(history)) = net::get("/api/v1/stats/history")
        .await
        .map(|r| r.decode::<StatsHistory>())
    {
        snap.history = Some(history);
    }
    if let Ok(Ok(board)) = net::get("/api/v1/leaderboard?limit=10")
        .await
        .map(|r| r.decode::<Leaderboard>())
    {
        snap.leaders = board.wallets;
    }
    // The newest entries: the ledger pages oldest first from `after`, and the stats say
    // where its tip is.
    let tip = snap.stats.as_ref().map(|s| s.ledger_seq);
    if let Some(tip) = tip {
        let after = tip.saturating_sub(20);
        snap.ledger = match net::get(&format!("/api/v1/ledger?limit=20&after={after}")).await {
            Ok(r) if r.status == 200 => r
                .decode::<LedgerPage>()
                .ok()
                .map(|page| page.entries.into_iter().rev().collect()),
            _ => None,
        };
    }
    snap
}

/// A rate for the meter: three decimals below 0.1, one below 10, whole numbers above.
fn rate(v: Option<f64>) -> String {
    match v {
        None => "–".to_owned(),
        Some(0.0) => "0".to_owned(),
        // A few small units a minute is still work worth showing.
        Some(v) if v < 0.1 => format!("{v:.3}"),
        Some(v) if v < 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.0}"),
    }
}

fn short(id: &str) -> String {
    id.chars().take(8).collect()
}

/// A ledger account, short enough for a table cell: `st1abcdefg…` for a wallet,
/// `escrow:1234abcd` for an id, names as they are.
fn account(text: &str) -> String {
    match text.split_once(':') {
        Some(("wallet", address)) => format!("{}…", address.chars().take(10).collect::<String>()),
        Some((kind, id)) => format!("{kind}:{}", short(id)),
        None => text.to_owned(),
    }
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
    let stats = move || snap.get().and_then(|s| s.stats);
    // A figure from the stats, or a dash before the first refresh.
    let figure =
        move |of: fn(&Stats) -> String| stats().map(|s| of(&s)).unwrap_or_else(|| "–".to_owned());
    view! {
        <div class="intro">
            <h1>"Network"</h1>
            <p>"What the relay sees right now: rates average over the last minute. Refreshed every 3 seconds."</p>
        </div>
        {move || snap.get().and_then(|s| s.error).map(|e| view! { <p class="error" role="alert">{e}</p> })}
        <div class="meter card">
            <div class="stat">
                <div class="value" data-testid="volunteers">
                    {move || figure(|s| s.volunteers.to_string())}
                </div>
                <div class="label">"volunteers online"</div>
            </div>
            <div class="stat">
                <div class="value" data-testid="gflops">{move || rate(stats().map(|s| s.gflops))}</div>
                <div class="label">"GFLOP/s (network)"</div>
            </div>
            <div class="stat">
                <div class="value" data-testid="units-per-s">{move || rate(stats().map(|s| s.units_per_s))}</div>
                <div class="label">"units verified / s"</div>
            </div>
            <div class="stat">
                <div class="value" data-testid="units-queued">
                    {move || figure(|s| s.units_queued.to_string())}
                </div>
                <div class="label">"units waiting"</div>
            </div>
        </div>
        <HourCharts snap=snap />
        <div class="meter card" aria-label="Jobs by state">
            {STATES.iter().map(|&state| view! {
                <div class="stat">
                    <div class="value" data-testid=format!("jobs-{state}")>
                        {move || stats().map(|s| s.jobs.get(state).copied().unwrap_or(0).to_string()).unwrap_or_else(|| "–".to_owned())}
                    </div>
                    <div class="label">{format!("jobs {state}")}</div>
                </div>
            }).collect_view()}
        </div>
        <section class="card" aria-labelledby="leaders-title">
            <h2 id="leaders-title">"Leaderboard"</h2>
            <p class="hint">"Wallets by credit earned for verified work (their shares of units, and sites' shares)."</p>
            {move || {
                let leaders = snap.get().map(|s| s.leaders).unwrap_or_default();
                if leaders.is_empty() {
                    view! { <p class="hint">"Nobody has earned credit yet: press Start on the volunteer page to be first."</p> }.into_any()
                } else {
                    view! {
                        <div class="table-wrap"><table class="stack" role="table" data-testid="leaderboard">
                            <thead role="rowgroup"><tr role="row"><th scope="col" role="columnheader">"#"</th><th scope="col" role="columnheader">"Wallet"</th><th scope="col" role="columnheader">"Credit earned"</th><th scope="col" role="columnheader">"Valid results"</th></tr></thead>
                            <tbody role="rowgroup">
                                {leaders.into_iter().map(|w| {
                                    let address = w.address;
                                    view! {
                                        <tr role="row">
                                            <td role="cell" data-label="#">{w.rank}</td>
                                            <td role="cell" data-label="Wallet"><code title=address.clone() data-address=address.clone()>{format!("{}…", address.chars().take(14).collect::<String>())}</code></td>
                                            <td role="cell" data-label="Credit earned">{w.earned}</td>
                                            <td role="cell" data-label="Valid results">{w.valid_results}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table></div>
                    }.into_any()
                }
            }}
        </section>
        <section class="card" aria-labelledby="kernels-title">
            <h2 id="kernels-title">"Work by kernel"</h2>
            {move || {
                let kernels = stats().map(|s| s.units_by_kernel).unwrap_or_default();
                if kernels.is_empty() {
                    view! { <p class="hint">"No work yet."</p> }.into_any()
                } else {
                    let count = |units: &BTreeMap<String, i64>, state: &str| units.get(state).copied().unwrap_or(0).to_string();
                    view! {
                        <div class="table-wrap"><table class="stack" role="table" data-testid="work-by-kernel">
                            <thead role="rowgroup"><tr role="row"><th scope="col" role="columnheader">"Kernel"</th><th scope="col" role="columnheader">"Units waiting"</th><th scope="col" role="columnheader">"Being computed"</th><th scope="col" role="columnheader">"Verified"</th></tr></thead>
                            <tbody role="rowgroup">
                                {kernels.into_iter().map(|(kernel, units)| view! {
                                    <tr role="row">
                                        <td role="cell" data-label="Kernel">{kernel}</td>
                                        <td role="cell" data-label="Units waiting">{count(&units, "queued")}</td>
                                        <td role="cell" data-label="Being computed">{count(&units, "leased")}</td>
                                        <td role="cell" data-label="Verified">{count(&units, "done")}</td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table></div>
                    }.into_any()
                }
            }}
        </section>
        <section class="card" aria-labelledby="ledger-title">
            <h2 id="ledger-title">"Ledger — latest entries"</h2>
            {move || match snap.get().map(|s| s.ledger) {
                None => view! { <p class="hint">"Loading…"</p> }.into_any(),
                Some(None) => view! { <p class="hint" data-testid="ledger-missing">"Ledger not available on this relay."</p> }.into_any(),
                Some(Some(entries)) if entries.is_empty() => view! { <p class="hint">"No ledger entries yet."</p> }.into_any(),
                Some(Some(entries)) => view! {
                    <div class="table-wrap"><table class="stack" role="table" data-testid="ledger">
                        <thead role="rowgroup"><tr role="row"><th scope="col" role="columnheader">"#"</th><th scope="col" role="columnheader">"From"</th><th scope="col" role="columnheader">"To"</th><th scope="col" role="columnheader">"Amount"</th><th scope="col" role="columnheader">"Reason"</th></tr></thead>
                        <tbody role="rowgroup">
                            {entries.into_iter().map(|e| {
                                view! {
                                    <tr role="row">
                                        <td role="cell" data-label="#">{e.seq}</td>
                                        <td role="cell" data-label="From"><code title=e.debit.clone()>{account(&e.debit)}</code></td>
                                        <td role="cell" data-label="To"><code title=e.credit.clone()>{account(&e.credit)}</code></td>
                                        <td role="cell" data-label="Amount">{e.amount}</td>
                                        <td role="cell" data-label="Reason">{e.reason}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table></div>
                }.into_any(),
            }}
        </section>
    }
}

/// Minutes the hour charts span.
const HOUR: usize = 60;

/// GFLOP/s and units verified per second, minute by minute over the last hour.
#[component]
fn HourCharts(snap: RwSignal<Option<Snapshot>>) -> impl IntoView {
    let minutes = move || {
        snap.get()
            .and_then(|s| s.history)
            .map(|h| h.minutes)
            .unwrap_or_default()
    };
    let gflops = Signal::derive(move || minutes().iter().map(|m| m.gflops).collect());
    let units = Signal::derive(move || minutes().iter().map(|m| m.units_per_s).collect());
    let caption = move |what: &'static str, of: fn(&starling_api::MinuteRates) -> f64| {
        Signal::derive(move || {
            let m = minutes();
            let peak = m.iter().map(of).fold(0.0f64, f64::max);
            format!(
                "{what}, last {} min, one point a minute; peak {}",
                m.len().max(1),
                rate(Some(peak))
            )
        })
    };
    view! {
        <section class="card" aria-labelledby="hour-title">
            <h2 id="hour-title">"The last hour"</h2>
            <div class="grid">
                <LineChart values=gflops slots=HOUR test_id="history-gflops"
                    label="The network's GFLOP/s per minute over the last hour"
                    caption=caption("GFLOP/s", |m| m.gflops) />
                <LineChart values=units slots=HOUR test_id="history-units"
                    label="Units verified per second, per minute over the last hour"
                    caption=caption("Units verified / s", |m| m.units_per_s) />
            </div>
        </section>
    }
}
