//! The volunteer page: this device, Start / Pause / Stop with intensity and the
//! conditions that hold work, a live meter with a throughput chart, and the wallet.

use crate::charts::LineChart;
use crate::net;
use crate::runtime::{self, DeviceSummary, Hold, Settings, Starting};
use crate::words;
use leptos::prelude::*;
use leptos::task::spawn_local;
use starling_client::platform::keystore;
use starling_client::{Event, TransportKind};
use starling_protocol::{SiteClaim, WalletKey};

/// Units kept for the throughput chart.
const CHART_UNITS: usize = 40;

/// How long a request for work may go unanswered before the page says there is none:
/// between units the relay answers in milliseconds, so a shorter silence is not news and
/// would only make the status (a live region) chatter.
const WAIT_SHOWN_MS: u32 = 1_500;

/// Where this browser keeps what it earned today ("YYYY-MM-DD micro-credits").
const EARNED_KEY: &str = "starling.earned_today";

/// Set to the wallet's address once the relay has paid it: before that the relay has no
/// record to answer a balance request with (a 404 in the console of every new volunteer).
const WALLET_KNOWN_KEY: &str = "starling.wallet_known";

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
    /// The unit computing now, in words; None while connected with nothing to do.
    pub computing: RwSignal<Option<String>>,
    /// The registered kernel of the latest unit, if it was one: its id and, once the
    /// relay said, who registered it. The page links its source.
    pub custom_kernel: RwSignal<Option<(String, Option<String>)>>,
    /// Requests for work so far: a timer started by one knows whether it is still the
    /// newest and unanswered.
    asks: RwSignal<u64>,
    /// Micro-credits this browser's receipts paid today (local calendar), across visits.
    pub earned_today: RwSignal<u64>,
    /// In a site's widget: settings changes are not remembered (a site's intensity must
    /// not become the volunteer's own), and the device is detected at Start, with the
    /// engine the widget fetches only then.
    in_widget: bool,
}

impl Session {
    /// Fresh state; watches the battery and, outside the widget, starts detecting the
    /// device.
    pub fn new(in_widget: bool) -> Self {
        let settings = Settings {
            intensity: net::local_get("starling.intensity")
                .and_then(|v| v.parse::<f64>().ok())
                .map(|v| v.clamp(0.1, 1.0))
                .unwrap_or(1.0),
            background: net::local_get("starling.background").as_deref() == Some("1"),
            builtin_only: net::local_get("starling.builtin_only").as_deref() == Some("1"),
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
            computing: RwSignal::new(None),
            custom_kernel: RwSignal::new(None),
            asks: RwSignal::new(0),
            earned_today: RwSignal::new(words::earned_on(
                net::local_get(EARNED_KEY).as_deref(),
                &today(),
            )),
            in_widget,
        };
        if !in_widget {
            spawn_local(async move {
                match runtime::engine().await {
                    Ok(engine) => session.device.set(Some((engine.detect)().await)),
                    Err(why) => session.phase.set(Phase::Failed(why)),
                }
            });
        }
        spawn_local(runtime::watch_battery());
        session
    }

    /// Changes settings: the loop sees them before its next unit; they are remembered.
    pub fn update(&self, f: impl FnOnce(&mut Settings)) {
        self.settings.update(f);
        let s = self.settings.get_untracked();
        runtime::set_settings(s);
        if self.in_widget {
            return;
        }
        net::local_set("starling.intensity", &s.intensity.to_string());
        net::local_set("starling.background", if s.background { "1" } else { "0" });
        net::local_set(
            "starling.builtin_only",
            if s.builtin_only { "1" } else { "0" },
        );
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
                s.computing.set(None);
                s.phase.set(Phase::Working);
            }
            Event::Asked => {
                let ask = s.asks.get_untracked() + 1;
                s.asks.set(ask);
                spawn_local(async move {
                    gloo_timers::future::TimeoutFuture::new(WAIT_SHOWN_MS).await;
                    if s.asks.get_untracked() == ask {
                        s.computing.set(None);
                    }
                });
            }
            Event::Assigned {
                kernel, job_age_s, ..
            } => {
                s.asks.update(|a| *a += 1);
                s.show_kernel(&kernel);
                s.computing.set(Some(format!(
                    "{} {}",
                    words::work_in_words(&kernel),
                    words::job_age(job_age_s)
                )));
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
                s.add_earned_today(amount_micro);
                s.receipts.update(|r| {
                    r.insert(0, (seq, amount_micro, reason));
                    r.truncate(RECEIPTS_SHOWN);
                });
            }
        };
        // Whether the card is visible counts at the press, not once the engine is here.
        if let Some(why) = runtime::unseen_reason() {
            s.phase.set(Phase::Failed(why.to_owned()));
            return;
        }
        let stop = runtime::arm_stop();
        spawn_local(async move {
            let starting = Starting {
                site,
                stop,
                on_event: Box::new(on_event),
                on_hold: Box::new(move |h| s.hold.set(h)),
                on_reconnect: Box::new(move |lost: runtime::Reconnecting| {
                    leptos::logging::warn!(
                        "connection lost ({}); reconnecting, attempt {}",
                        lost.why,
                        lost.attempt
                    );
                    s.transport.set(None);
                    s.phase.set(Phase::Reconnecting {
                        attempt: lost.attempt,
                    });
                }),
            };
            let result = match runtime::engine().await {
                Ok(engine) => {
                    if s.device.get_untracked().is_none() {
                        s.device.set(Some((engine.detect)().await));
                    }
                    (engine.start)(starting).await
                }
                Err(why) => Err(why),
            };
            s.hold.set(None);
            s.transport.set(None);
            s.computing.set(None);
            s.custom_kernel.set(None);
            match result {
                Ok(()) => s.phase.set(Phase::Idle),
                Err(e) => s.phase.set(Phase::Failed(e)),
            }
        });
    }

    /// Counts a receipt's credits into today's, starting afresh on a new day, and notes
    /// that the relay now knows this wallet.
    fn add_earned_today(&self, amount_micro: u64) {
        let today = today();
        let before = words::earned_on(net::local_get(EARNED_KEY).as_deref(), &today);
        let now = before.saturating_add(amount_micro);
        net::local_set(EARNED_KEY, &words::earned_record(&today, now));
        self.earned_today.set(now);
        // A receipt came from the engine, which is here by then.
        if let Some(Ok(address)) = runtime::loaded_engine().map(|e| (e.wallet_address)()) {
            net::local_set(WALLET_KNOWN_KEY, &address);
        }
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
            (Phase::Working, None) => match self.computing.get() {
                Some(work) => format!("Working: {work}."),
                None => "Connected, waiting for work.".to_owned(),
            },
            (Phase::Failed(e), _) => format!("Stopped: {e}"),
        }
    }
}

impl Session {
    /// Names the registered kernel a unit runs, and asks the relay who registered it
    /// (once per kernel: units of one kernel come in runs).
    fn show_kernel(&self, kernel: &str) {
        if !starling_api::manifest::is_content_id(kernel) {
            self.custom_kernel.set(None);
            return;
        }
        let shown = self.custom_kernel.get_untracked();
        if shown.as_ref().is_some_and(|(id, _)| id == kernel) {
            return;
        }
        self.custom_kernel.set(Some((kernel.to_owned(), None)));
        let (custom_kernel, id) = (self.custom_kernel, kernel.to_owned());
        spawn_local(async move {
            let owner = net::get(&format!("/api/v1/kernels/{id}"))
                .await
                .and_then(|reply| reply.decode::<KernelOwner>())
                .map(|kernel| kernel.owner.unwrap_or_else(|| "no account".into()));
            if let Ok(owner) = owner {
                custom_kernel.update(|shown| {
                    if let Some((shown_id, shown_owner)) = shown {
                        if *shown_id == id {
                            *shown_owner = Some(owner);
                        }
                    }
                });
            }
        });
    }
}

/// The one field of `GET /api/v1/kernels/{id}` ([`starling_api::CustomKernel`]) the page
/// shows. Decoding the whole kernel linked its manifest's parser into both bundles, the
/// widget's too, where no registered kernel ever runs: 11 KB of wasm for a name.
#[derive(serde::Deserialize)]
struct KernelOwner {
    owner: Option<String>,
}

impl Default for Session {
    fn default() -> Self {
        Self::new(false)
    }
}

/// The device card.
#[component]
pub fn DeviceCard(session: Session) -> impl IntoView {
    let bench = RwSignal::new(Bench::NotRun);
    let side = runtime::benchmark_side();
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
                                        let measured = match runtime::engine().await {
                                            Ok(engine) => (engine.benchmark)(side).await,
                                            Err(why) => Err(why),
                                        };
                                        bench.set(match measured {
                                            Ok(g) => Bench::Done(g),
                                            Err(e) => Bench::Failed(e),
                                        });
                                    });
                                }>{format!("Measure (a {side}³ matmul, on this device only)")}</button>
                        }.into_any(),
                        Bench::Running => view! { <span>"measuring…"</span> }.into_any(),
                        Bench::Done(g) => view! { <span data-testid="benchmark">{format!("{g:.2} GFLOP/s ({side}³ matmul)")}</span> }.into_any(),
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

/// This device's GFLOP/s over its last units, newest at the right.
#[component]
pub fn Chart(session: Session) -> impl IntoView {
    let caption = Signal::derive(move || {
        let r = session.recent.get();
        if r.is_empty() {
            "This device's speed per unit appears here once work starts.".to_owned()
        } else {
            let max = r.iter().cloned().fold(0.0f64, f64::max);
            format!(
                "This device, last {} units: peak {:.2} GFLOP/s",
                r.len(),
                max
            )
        }
    });
    view! {
        <LineChart values=session.recent.into() slots=CHART_UNITS test_id="chart"
            label="This device's GFLOP/s over its last units"
            caption=caption />
    }
}

/// Start / Pause / Stop, intensity, and when to hold.
///
/// Start becomes Pause (and Pause Resume) on the same button, so keyboard focus stays
/// where it was and the next Tab reaches Stop; Stop is always there, disabled while
/// stopped, and hands focus back to Start. The status line is a live region: what it
/// says changes only with the state, never per unit, so a screen reader hears each change
/// once.
#[component]
pub fn Controls(session: Session, site: Option<SiteClaim>, full: bool) -> impl IntoView {
    let site = StoredValue::new(site);
    let main_button = NodeRef::<leptos::html::Button>::new();
    let press_main = move |_| {
        if session.running() {
            session.update(|s| s.paused = !s.paused);
        } else {
            session.start(site.get_value());
        }
    };
    let stop = move |_| {
        runtime::stop();
        // Stop turns disabled as the loop ends, which would drop focus to the page.
        if let Some(button) = main_button.get_untracked() {
            let _ = button.focus();
        }
    };
    let running = move || session.running();
    let paused = move || session.settings.get().paused;
    let status = Memo::new(move |_| session.status());
    view! {
        <section class="card" aria-label="Controls">
            <div class="controls">
                <button node_ref=main_button on:click=press_main
                    class=move || if running() { "secondary main-control" } else { "main-control" }
                    data-testid=move || if running() { "pause" } else { "start" }
                    disabled=move || !running() && !session.in_widget && session.device.get().is_none()>
                    {move || match (running(), paused()) {
                        (false, _) => "Start",
                        (true, false) => "Pause",
                        (true, true) => "Resume",
                    }}
                </button>
                <button class="stop" data-testid="stop" on:click=stop disabled=move || !running()>"Stop"</button>
                <span
                    class=move || if matches!(session.phase.get(), Phase::Failed(_)) { "status error" } else { "status" }
                    data-testid="status"
                    role="status"
                    aria-live="polite"
                >
                    {move || status.get()}
                </span>
                {move || {
                    // The latest registered kernel this session ran, until a built-in's
                    // unit comes or the session stops: units of one kernel come in runs.
                    let (id, owner) = session.custom_kernel.get()?;
                    let owner = owner.map(|o| format!(", registered by account {o}")).unwrap_or_default();
                    Some(view! {
                        <a
                            class="kernel-source"
                            data-testid="kernel-source"
                            href=format!("/api/v1/kernels/{id}")
                            target="_blank"
                            rel="noopener"
                        >
                            {format!("Kernel {}…{owner}: read its source", &id[..12])}
                        </a>
                    })
                }}
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
                    <label class="check">
                        <input type="checkbox" data-testid="builtin-only"
                            prop:checked=move || session.settings.get().builtin_only
                            on:change=move |e| session.update(|s| s.builtin_only = event_target_checked(&e)) />
                        "Run only built-in kernels (not ones submitters registered; from the next Start)"
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
                        {move || words::credits(session.credited.get())}
                    </div>
                    <div class="label">"credits earned this session (signed receipts)"</div>
                </div>
                <div class="stat">
                    <div class="value" data-testid="earned-today">
                        {move || words::credits(session.earned_today.get())}
                    </div>
                    <div class="label">"credits this browser earned today"</div>
                </div>
                // Always there, a dash until known, so the figures do not shift when the
                // relay first answers.
                <div class="stat">
                    <div class="value" data-testid="balance">{move || balance.get().unwrap_or_else(|| "–".to_owned())}</div>
                    <div class="label">"wallet balance"</div>
                </div>
            </div>
            <div class="grid">
                <Chart session=session />
                <NetworkPace />
            </div>
            <p class="hint" data-testid="credit-explainer">
                "A credit is the network's unit of payment: submitters pay credits for the FLOPs their jobs take, and each verified unit pays most of its price to the wallets that computed it. Credits are kept in the relay's signed public ledger; they are not money outside this network."
            </p>
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
                    // A restored key has likely earned before: ask for its balance.
                    net::local_set(WALLET_KNOWN_KEY, &key.address().to_string());
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
            let known = address
                .get_untracked()
                .ok()
                .filter(|a| net::local_get(WALLET_KNOWN_KEY).as_deref() == Some(a.as_str()));
            if let Some(a) = known {
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

/// Today on this device's calendar, as earnings are kept under it.
fn today() -> String {
    let now = js_sys::Date::new_0();
    words::day_key(now.get_full_year(), now.get_month() + 1, now.get_date())
}

/// The volunteer page.
#[component]
pub fn VolunteerPage() -> impl IntoView {
    let session = use_context::<Session>().unwrap_or_default();
    let address = RwSignal::new(runtime::wallet_address());
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

/// Minutes of the network's pace shown beside this device's.
const PACE_MINUTES: usize = 15;

/// The network's GFLOP/s over the last minutes, from `/api/v1/stats/history`, refreshed
/// every 15 s while the page is open: this device's chart beside it shows its share.
#[component]
fn NetworkPace() -> impl IntoView {
    let pace = RwSignal::new(Vec::<f64>::new());
    let alive = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = alive.clone();
    on_cleanup(move || flag.store(false, std::sync::atomic::Ordering::Relaxed));
    spawn_local(async move {
        while alive.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(Ok(history)) = net::get("/api/v1/stats/history")
                .await
                .map(|r| r.decode::<starling_api::StatsHistory>())
            {
                let minutes = &history.minutes;
                let recent = &minutes[minutes.len().saturating_sub(PACE_MINUTES)..];
                pace.set(recent.iter().map(|m| m.gflops).collect());
            }
            gloo_timers::future::TimeoutFuture::new(15_000).await;
        }
    });
    let caption = Signal::derive(move || {
        let p = pace.get();
        match p.last() {
            None => "The network's pace appears here.".to_owned(),
            Some(now) => format!(
                "The network, last {} min: {now:.2} GFLOP/s this minute",
                p.len()
            ),
        }
    });
    view! {
        <LineChart values=pace.into() slots=PACE_MINUTES test_id="network-pace"
            label="The whole network's GFLOP/s per minute over the last minutes"
            caption=caption />
    }
}
