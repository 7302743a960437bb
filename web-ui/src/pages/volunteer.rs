//! The volunteer page: this device, Start / Pause / Stop with intensity and the
//! conditions that hold work, a live meter with a throughput chart, and the wallet.

use crate::net;
use crate::runtime::{self, DeviceSummary, Hold, Settings};
use leptos::prelude::*;
use leptos::task::spawn_local;
use starling_client::platform::keystore;
use starling_client::{Event, TransportKind};
use starling_protocol::{SiteClaim, WalletKey};

/// Units kept for the throughput chart.
const CHART_UNITS: usize = 40;

/// Where the volunteer is.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Not connected.
    Idle,
    /// Signaling.
    Connecting,
    /// Connected; computing or resting.
    Working,
    /// The connection was lost; trying again by itself (the `attempt`th try since it
    /// last worked).
    Reconnecting {
        /// Counts from 1.
        attempt: u32,
    },
    /// Ended with an error.
    Failed(String),
}

/// The volunteer's state for the whole tab: it outlives page switches, so a running
/// volunteer keeps its meter while the console is open.
#[derive(Clone, Copy)]
pub struct Session {
    /// The device, once detected.
    pub device: RwSignal<Option<DeviceSummary>>,
    /// Connection phase.
    pub phase: RwSignal<Phase>,
    /// How the channel to the relay travels, while connected.
    pub transport: RwSignal<Option<TransportKind>>,
    /// Micro-credits from signed receipts this session.
    pub credited: RwSignal<u64>,
    /// The newest ledger entry counted in `credited`: the relay pays in ledger order, so
    /// a receipt at or below it was counted already (never twice across reconnects).
    last_receipt: RwSignal<Option<u64>>,
    /// The latest receipts (ledger entry, micro-credits, reason), newest first.
    pub receipts: RwSignal<Vec<(u64, u64, String)>>,
    /// Why work holds now.
    pub hold: RwSignal<Option<Hold>>,
    /// Units computed.
    pub units: RwSignal<u64>,
    /// FLOPs computed.
    pub flops: RwSignal<u64>,
    /// Milliseconds spent computing.
    pub busy_ms: RwSignal<f64>,
    /// Page clock at the first unit.
    pub first_unit_ms: RwSignal<Option<f64>>,
    /// GFLOP/s of the last units, oldest first.
    pub recent: RwSignal<Vec<f64>>,
    /// Pacing settings.
    pub settings: RwSignal<Settings>,
    /// Whether settings changes are remembered (not in the widget: a site's intensity
    /// must not become the volunteer's own).
    persist: bool,
}

impl Session {
    /// Fresh state; starts detecting the device and watching the battery. `persist`:
    /// remember settings changes in localStorage.
    pub fn new(persist: bool) -> Self {
        let settings = Settings {
            intensity: net::local_get("starling.intensity")
                .and_then(|v| v.parse::<f64>().ok())
                .map(|v| v.clamp(0.1, 1.0))
                .unwrap_or(1.0),
            background: net::local_get("starling.background").as_deref() == Some("1"),
            battery_floor: net::local_get("starling.battery_floor")
                .and_then(|v| v.parse::<f64>().ok())
                .map(|v| v.clamp(0.0, 1.0))
                .unwrap_or(0.2),
            ..Settings::default()
        };
        runtime::set_settings(settings);
        let session = Self {
            device: RwSignal::new(None),
            phase: RwSignal::new(Phase::Idle),
            transport: RwSignal::new(None),
            credited: RwSignal::new(0),
            last_receipt: RwSignal::new(None),
            receipts: RwSignal::new(Vec::new()),
            hold: RwSignal::new(None),
            units: RwSignal::new(0),
            flops: RwSignal::new(0),
            busy_ms: RwSignal::new(0.0),
            first_unit_ms: RwSignal::new(None),
            recent: RwSignal::new(Vec::new()),
            settings: RwSignal::new(settings),
            persist,
        };
        spawn_local(async move {
            session.device.set(Some(runtime::detect().await));
        });
        spawn_local(runtime::watch_battery());
        session
    }

    /// Changes settings: the loop sees them before its next unit; they are remembered.
    pub fn update(&self, f: impl FnOnce(&mut Settings)) {
        self.settings.update(f);
        let s = self.settings.get_untracked();
        runtime::set_settings(s);
        if !self.persist {
            return;
        }
        net::local_set("starling.intensity", &s.intensity.to_string());
        net::local_set("starling.background", if s.background { "1" } else { "0" });
        net::local_set("starling.battery_floor", &s.battery_floor.to_string());
    }

    /// Connected, connecting or reconnecting.
    pub fn running(&self) -> bool {
        matches!(
            self.phase.get(),
            Phase::Connecting | Phase::Working | Phase::Reconnecting { .. }
        )
    }

    /// Connects and works until stopped; `site` credits an embedding site.
    pub fn start(&self, site: Option<SiteClaim>) {
        let s = *self;
        s.phase.set(Phase::Connecting);
        s.update(|x| x.paused = false);
        let on_event = move |event: Event| match event {
            Event::Connected { transport } => {
                s.transport.set(Some(transport));
                s.phase.set(Phase::Working);
            }
            Event::Computed {
                elapsed_ms, flops, ..
            } => {
                s.flops.update(|t| *t += flops);
                s.busy_ms.update(|b| *b += elapsed_ms);
                if elapsed_ms > 0.0 {
                    s.recent.update(|r| {
                        r.push(flops as f64 / elapsed_ms / 1e6);
                        if r.len() > CHART_UNITS {
                            r.remove(0);
                        }
                    });
                }
                if s.first_unit_ms.get_untracked().is_none() {
                    s.first_unit_ms.set(Some(runtime::now_ms()));
                }
            }
            // Counted when the relay records it: a unit computed as the connection dropped
            // is handed out again, and may come back to this page.
            Event::Acked { accepted, .. } => {
                if accepted {
                    s.units.update(|u| *u += 1);
                }
            }
            Event::UnitFailed(why) => leptos::logging::warn!("unit failed: {why}"),
            Event::Credited {
                amount_micro,
                seq,
                reason,
            } => {
                if s.last_receipt
                    .get_untracked()
                    .is_some_and(|last| seq <= last)
                {
                    return;
                }
                s.last_receipt.set(Some(seq));
                s.credited.update(|c| *c += amount_micro);
                s.receipts.update(|r| {
                    r.insert(0, (seq, amount_micro, reason));
                    r.truncate(RECEIPTS_SHOWN);
                });
            }
        };
        spawn_local(async move {
            let result = runtime::start(
                site,
                on_event,
                move |h| s.hold.set(h),
                move |lost: runtime::Reconnecting| {
                    leptos::logging::warn!(
                        "connection lost ({}); reconnecting, attempt {}",
                        lost.why,
                        lost.attempt
                    );
                    s.transport.set(None);
                    s.phase.set(Phase::Reconnecting {
                        attempt: lost.attempt,
                    });
                },
            )
            .await;
            s.hold.set(None);
            s.transport.set(None);
            match result {
                Ok(()) => s.phase.set(Phase::Idle),
                Err(e) => s.phase.set(Phase::Failed(e)),
            }
        });
    }

    /// GFLOP/s while busy, formatted.
    pub fn gflops(&self) -> String {
        let ms = self.busy_ms.get();
        if ms > 0.0 {
            let g = self.flops.get() as f64 / ms / 1e6;
            if g >= 0.1 {
                format!("{g:.2}")
            } else {
                format!("{g:.3}")
            }
        } else {
            "–".to_owned()
        }
    }

    /// The status line.
    pub fn status(&self) -> String {
        // Pressing Pause shows at once, even while the loop waits for its next unit.
        let hold = self
            .hold
            .get()
            .or(self.settings.get().paused.then_some(Hold::Paused));
        match (self.phase.get(), hold) {
            (Phase::Idle, _) => "Idle: nothing is computing.".to_owned(),
            (Phase::Connecting, _) => "Connecting to the relay…".to_owned(),
            (Phase::Reconnecting { attempt }, _) => {
                format!("Reconnecting to the relay… (attempt {attempt})")
            }
            (Phase::Working, Some(Hold::Paused)) => {
                "Paused: connected, computing nothing.".to_owned()
            }
            (Phase::Working, Some(Hold::Hidden)) => "Paused while this tab is hidden.".to_owned(),
            (Phase::Working, Some(Hold::Battery)) => "Paused: battery low.".to_owned(),
            (Phase::Working, Some(Hold::Unseen)) => {
                "Paused while this card is not fully visible.".to_owned()
            }
            (Phase::Working, None) => "Working: this tab is computing for the network.".to_owned(),
            (Phase::Failed(e), _) => format!("Stopped: {e}"),
        }
    }
}

impl Default for Session {
    fn default() -> Self {
        Self::new(true)
    }
}

/// The device card.
#[component]
pub fn DeviceCard(session: Session) -> impl IntoView {
    let bench = RwSignal::new(Bench::NotRun);
    view! {
        <section class="card" aria-labelledby="device-title">
            <h2 id="device-title">"This device"</h2>
            <div class="device" data-testid="device">
                {move || match session.device.get() {
                    None => view! { <span>"Detecting…"</span> }.into_any(),
                    Some(d) if d.backend == "cpu" => view! {
                        <span>{d.adapter.clone()}<span class="badge">"no WebGPU"</span></span>
                    }.into_any(),
                    Some(d) => view! {
                        <span>"WebGPU: " {d.adapter.clone()}
                            {(d.fallback && d.adapter != "software adapter").then(|| view! { <span class="badge">"software adapter"</span> })}
                        </span>
                    }.into_any(),
                }}
            </div>
            <dl class="facts">
                <dt>"Computes on"</dt>
                <dd>{move || match session.device.get() {
                    None => "…".to_owned(),
                    Some(d) if d.backend == "cpu" && d.adapter.contains("Worker") => "the CPU, on a background thread (slower)".to_owned(),
                    Some(d) if d.backend == "cpu" => "the CPU, in this tab (slower)".to_owned(),
                    Some(d) if d.fallback => "a software GPU (slower than a real one)".to_owned(),
                    Some(_) => "the GPU, through WebGPU".to_owned(),
                }}</dd>
                <dt>"Connection"</dt>
                <dd data-testid="transport">{move || match (session.running(), session.transport.get()) {
                    (true, Some(transport)) => transport.to_string(),
                    (true, None) => "connecting…".to_owned(),
                    (false, _) => "not connected".to_owned(),
                }}</dd>
                <dt>"Battery"</dt>
                <dd>{move || {
                    // Re-read whenever the page's state moves; the API has no signal.
                    session.units.track();
                    session.device.track();
                    match runtime::battery() {
                        Some((level, charging)) => format!("{:.0}%{}", level * 100.0, if charging { ", charging" } else { ", on battery" }),
                        None => "not reported by this browser".to_owned(),
                    }
                }}</dd>
                <dt>"Benchmark"</dt>
                <dd>
                    {move || match bench.get() {
                        Bench::NotRun => view! {
                            <button class="secondary small" data-testid="run-benchmark" disabled=move || session.device.get().is_none()
                                on:click=move |_| {
                                    bench.set(Bench::Running);
                                    spawn_local(async move {
                                        bench.set(match runtime::benchmark().await {
                                            Ok(g) => Bench::Done(g),
                                            Err(e) => Bench::Failed(e),
                                        });
                                    });
                                }>"Measure (a 128³ matmul, on this device only)"</button>
                        }.into_any(),
                        Bench::Running => view! { <span>"measuring…"</span> }.into_any(),
                        Bench::Done(g) => view! { <span data-testid="benchmark">{format!("{g:.2} GFLOP/s (128³ matmul)")}</span> }.into_any(),
                        Bench::Failed(e) => view! { <span class="note">{format!("could not measure: {e}")}</span> }.into_any(),
                    }}
                </dd>
                <dt>"Wallet key"</dt>
                <dd>"kept in this browser only"</dd>
            </dl>
        </section>
    }
}

/// The device card's benchmark, run only when the person asks.
#[derive(Clone, Debug, PartialEq)]
enum Bench {
    NotRun,
    Running,
    Done(f64),
    Failed(String),
}

/// An inline SVG line of the last units' GFLOP/s.
#[component]
pub fn Chart(session: Session) -> impl IntoView {
    const W: f64 = 300.0;
    const H: f64 = 60.0;
    let points = move || {
        let r = session.recent.get();
        let max = r.iter().cloned().fold(0.0f64, f64::max).max(1e-9);
        let step = W / (CHART_UNITS.saturating_sub(1)) as f64;
        r.iter()
            .enumerate()
            .map(|(i, v)| {
                format!(
                    "{:.1},{:.1}",
                    i as f64 * step,
                    H - 4.0 - v / max * (H - 8.0)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    view! {
        <figure class="chart">
            <svg viewBox="0 0 300 60" preserveAspectRatio="none" role="img"
                aria-label="GFLOP/s of the last units" data-testid="chart">
                <line x1="0" y1="59" x2="300" y2="59" class="axis" />
                <polyline points=points class="line" />
            </svg>
            <figcaption>
                {move || {
                    let r = session.recent.get();
                    if r.is_empty() {
                        "Throughput per unit appears here once work starts.".to_owned()
                    } else {
                        let max = r.iter().cloned().fold(0.0f64, f64::max);
                        format!("Last {} units, peak {:.2} GFLOP/s", r.len(), max)
                    }
                }}
            </figcaption>
        </figure>
    }
}

/// Start / Pause / Stop, intensity, and when to hold.
#[component]
pub fn Controls(session: Session, site: Option<SiteClaim>, full: bool) -> impl IntoView {
    // Stored so the Start handler stays `Copy` for the `Show` fallback that re-creates it.
    let site = StoredValue::new(site);
    let start = move |_| session.start(site.get_value());
    let stop = move |_| runtime::stop();
    let toggle_pause = move |_| session.update(|s| s.paused = !s.paused);
    let running = move || session.running();
    view! {
        <section class="card" aria-label="Controls">
            <div class="controls">
                <Show
                    when=running
                    fallback=move || view! {
                        <button data-testid="start" on:click=start disabled=move || session.device.get().is_none()>
                            "Start"
                        </button>
                    }
                >
                    <button class="secondary" data-testid="pause" on:click=toggle_pause
                        aria-pressed=move || if session.settings.get().paused { "true" } else { "false" }>
                        {move || if session.settings.get().paused { "Resume" } else { "Pause" }}
                    </button>
                    <button class="stop" data-testid="stop" on:click=stop>"Stop"</button>
                </Show>
                <span
                    class=move || if matches!(session.phase.get(), Phase::Failed(_)) { "status error" } else { "status" }
                    data-testid="status"
                    role="status"
                >
                    {move || session.status()}
                </span>
            </div>
            <div class="settings">
                <label for="intensity">"Intensity "
                    <output data-testid="intensity-value">{move || format!("{:.0}%", session.settings.get().intensity * 100.0)}</output>
                </label>
                <input id="intensity" type="range" min="10" max="100" step="10"
                    data-testid="intensity"
                    prop:value=move || ((session.settings.get().intensity * 100.0).round() as i64).to_string()
                    on:input=move |e| {
                        if let Ok(v) = event_target_value(&e).parse::<f64>() {
                            session.update(|s| s.intensity = (v / 100.0).clamp(0.1, 1.0));
                        }
                    }
                />
                {full.then(|| view! {
                    <p class="hint">"Below 100%, this device rests between units so that it computes only that share of the time."</p>
                    <label class="check">
                        <input type="checkbox" data-testid="background"
                            prop:checked=move || session.settings.get().background
                            on:change=move |e| session.update(|s| s.background = event_target_checked(&e)) />
                        "Keep working while this tab is hidden"
                    </label>
                    <label for="battery-floor">"Pause on battery below "
                        <output>{move || format!("{:.0}%", session.settings.get().battery_floor * 100.0)}</output>
                    </label>
                    <input id="battery-floor" data-testid="battery-floor" type="range" min="0" max="90" step="5"
                        prop:value=move || ((session.settings.get().battery_floor * 100.0).round() as i64).to_string()
                        on:input=move |e| {
                            if let Ok(v) = event_target_value(&e).parse::<f64>() {
                                session.update(|s| s.battery_floor = (v / 100.0).clamp(0.0, 0.9));
                            }
                        }
                    />
                })}
            </div>
        </section>
    }
}

/// Units, GFLOP/s, first unit time, wallet balance.
#[component]
pub fn Meter(session: Session, balance: RwSignal<Option<String>>) -> impl IntoView {
    view! {
        <section class="card" aria-labelledby="meter-title">
            <h2 id="meter-title">"This session"</h2>
            <div class="meter">
                <div class="stat">
                    <div class="value" data-testid="units-done">{move || session.units.get()}</div>
                    <div class="label">"units computed"</div>
                </div>
                <div class="stat">
                    <div class="value" data-testid="gflops">{move || session.gflops()}</div>
                    <div class="label">"GFLOP/s while busy"</div>
                </div>
                <div class="stat">
                    <div class="value" data-testid="first-unit-ms">
                        {move || session.first_unit_ms.get().map(|ms| format!("{:.0} ms", ms)).unwrap_or_else(|| "–".to_owned())}
                    </div>
                    <div class="label">"page open to first unit"</div>
                </div>
                <div class="stat">
                    <div class="value" data-testid="credits-earned">
                        {move || format!("{:.6}", session.credited.get() as f64 / 1e6)}
                    </div>
                    <div class="label">"credits earned (signed receipts)"</div>
                </div>
                {move || balance.get().map(|b| view! {
                    <div class="stat">
                        <div class="value" data-testid="balance">{b}</div>
                        <div class="label">"wallet balance"</div>
                    </div>
                })}
            </div>
            <Chart session=session />
        </section>
    }
}

/// Receipts listed on the page.
const RECEIPTS_SHOWN: usize = 8;

/// The latest signed receipts: each a ledger entry paying this wallet, whose relay
/// signature the runtime checked before counting it.
#[component]
fn Receipts(session: Session) -> impl IntoView {
    view! {
        <section class="card" aria-labelledby="receipts-title">
            <h2 id="receipts-title">"Signed receipts"</h2>
            {move || {
                let rows = session.receipts.get();
                if rows.is_empty() {
                    view! { <p class="hint">"Verified units are paid out every few seconds and when their job ends; each payout's signed receipt appears here."</p> }.into_any()
                } else {
                    view! {
                        <div class="table-wrap"><table data-testid="receipts">
                            <thead><tr><th scope="col">"Ledger entry"</th><th scope="col">"Credits"</th><th scope="col">"For"</th></tr></thead>
                            <tbody>
                                {rows.into_iter().map(|(seq, micro, reason)| view! {
                                    <tr>
                                        <td>{format!("#{seq}")}</td>
                                        <td>{format!("{:.6}", micro as f64 / 1e6)}</td>
                                        <td>{if reason == "site_share" { "site share".to_owned() } else { "verified units".to_owned() }}</td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table></div>
                    }.into_any()
                }
            }}
        </section>
    }
}

/// Address, copy, back up and restore.
#[component]
fn WalletCard(address: RwSignal<Result<String, String>>) -> impl IntoView {
    let backup = RwSignal::new(None::<String>);
    let restore_open = RwSignal::new(false);
    let restore_text = RwSignal::new(String::new());
    let message = RwSignal::new(None::<Result<String, String>>);
    let show_backup = move |_| {
        backup.set(keystore::load_or_create().ok().map(|k| k.to_hex()));
    };
    let download = move |_| {
        if let Some(secret) = backup.get_untracked() {
            if let Err(e) = net::download_text("starling-wallet-key.txt", &secret) {
                message.set(Some(Err(e)));
            }
        }
    };
    let restore = move |e: leptos::ev::SubmitEvent| {
        e.prevent_default();
        let text = restore_text.get_untracked();
        match WalletKey::from_hex(text.trim()) {
            Ok(key) => match keystore::save(&key) {
                Ok(()) => {
                    address.set(Ok(key.address().to_string()));
                    restore_open.set(false);
                    restore_text.set(String::new());
                    message.set(Some(Ok(
                        "Key restored: this browser now uses that wallet.".to_owned()
                    )));
                }
                Err(e) => message.set(Some(Err(e.to_string()))),
            },
            Err(e) => message.set(Some(Err(format!("That is not a wallet key: {e}")))),
        }
    };
    view! {
        <section class="card" aria-labelledby="wallet-title">
            <h2 id="wallet-title">"Wallet"</h2>
            {move || match address.get() {
                Ok(a) => {
                    let copy_text = a.clone();
                    view! {
                        <div class="address-row">
                            <code class="address" data-testid="wallet-address">{a}</code>
                            <button class="secondary small" on:click=move |_| net::copy(&copy_text)
                                aria-label="Copy wallet address">"Copy"</button>
                        </div>
                    }.into_any()
                }
                Err(e) => view! { <p class="error">{format!("No wallet: {e}")}</p> }.into_any(),
            }}
            <p class="hint">"Credits for computed units go to this address. The key lives only in this browser."</p>
            <div class="row">
                <button class="secondary small" data-testid="backup" on:click=show_backup>"Back up key"</button>
                <button class="secondary small" data-testid="restore-open"
                    on:click=move |_| restore_open.update(|o| *o = !*o)
                    aria-expanded=move || if restore_open.get() { "true" } else { "false" }>
                    "Restore key"
                </button>
            </div>
            {move || backup.get().map(|secret| view! {
                <div class="warning" role="alert">
                    <p><strong>"Keep this secret."</strong>" Anyone holding it can spend this wallet's credits. Store it offline; never paste it into a site you do not trust."</p>
                    <code class="secret" data-testid="secret">{secret}</code>
                    <div class="row">
                        <button class="secondary small" on:click=download>"Download"</button>
                        <button class="secondary small" on:click=move |_| backup.set(None)>"Hide"</button>
                    </div>
                </div>
            })}
            <Show when=move || restore_open.get()>
                <form class="restore" on:submit=restore>
                    <label for="restore-key">"Wallet key (64 hex characters)"</label>
                    <input id="restore-key" type="password" autocomplete="off" spellcheck="false"
                        data-testid="restore-key"
                        prop:value=move || restore_text.get()
                        on:input=move |e| restore_text.set(event_target_value(&e)) />
                    <p class="hint">"This replaces the wallet in this browser. Back up the current key first."</p>
                    <button type="submit" data-testid="restore">"Restore"</button>
                </form>
            </Show>
            {move || message.get().map(|m| match m {
                Ok(text) => view! { <p class="ok" role="status" data-testid="wallet-message">{text}</p> }.into_any(),
                Err(text) => view! { <p class="error" role="alert" data-testid="wallet-error">{text}</p> }.into_any(),
            })}
        </section>
    }
}

/// Fetches the wallet's balance every 15 s while the page is open, when the relay has one.
pub fn watch_balance(address: RwSignal<Result<String, String>>) -> RwSignal<Option<String>> {
    let balance = RwSignal::new(None::<String>);
    let alive = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = alive.clone();
    on_cleanup(move || flag.store(false, std::sync::atomic::Ordering::Relaxed));
    spawn_local(async move {
        while alive.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(a) = address.get_untracked() {
                let shown = match net::get(&format!("/api/v1/wallets/{a}")).await {
                    Ok(r) => r
                        .decode::<starling_api::Wallet>()
                        .ok()
                        .map(|wallet| wallet.balance),
                    _ => None,
                };
                balance.set(shown);
            }
            gloo_timers::future::TimeoutFuture::new(15_000).await;
        }
    });
    balance
}

/// The wallet's address, or why there is none.
pub fn wallet_address() -> Result<String, String> {
    keystore::load_or_create()
        .map(|k| k.address().to_string())
        .map_err(|e| e.to_string())
}

/// The volunteer page.
#[component]
pub fn VolunteerPage() -> impl IntoView {
    let session = use_context::<Session>().unwrap_or_default();
    let address = RwSignal::new(wallet_address());
    let balance = watch_balance(address);
    view! {
        <div class="intro">
            <h1>"Lend this device to science"</h1>
            <p>"Your browser computes small pieces of matrix, rendering and simulation jobs on its GPU. Nothing runs until you press Start, and you can pause or stop at any time."</p>
        </div>
        <div class="grid">
            <DeviceCard session=session />
            <Controls session=session site=None full=true />
        </div>
        <Meter session=session balance=balance />
        <Receipts session=session />
        <WalletCard address=address />
        <crate::pages::widget::ForgetSites />
    }
}
