//! The page's handle on the volunteer runtime: one engine per tab, started and stopped
//! from components. Browser objects are single-threaded, so they live in thread-locals
//! and components only hold signals.
//!
//! Pacing lives here too: before asking for each unit the loop awaits [`gate`], which
//! sleeps for the duty cycle (`elapsed * (1 - i) / i` after a unit at intensity `i`) and
//! holds while the volunteer paused, the tab is hidden, the battery is low, or (in the
//! widget's frame) the person cannot see the frame.
//!
//! The engine itself (the GPU or CPU, the transports, the protocol, the wallet's key) is
//! most of what a page downloads, so pages reach it through [`EngineCalls`]: the app links
//! it, the widget fetches it as a module of its own when its visitor presses Start.

use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use gloo_timers::future::TimeoutFuture;
use js_sys::Reflect;
use starling_client::platform::cpu_worker::{self, CpuWorker};
use starling_client::platform::keystore;
use starling_client::platform::RelayTransport;
use starling_client::{
    CpuReference, CustomKernels, Engine, Event, MatmulTrials, Profile, TransportChoice,
};
use starling_protocol::SiteClaim;
use std::cell::{Cell, RefCell};
use std::pin::pin;
use std::rc::Rc;
use wasm_bindgen::{JsCast, JsValue};

/// How the volunteer wants to work; the page sets it, the work loop reads it per unit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// Share of the time spent computing, 0.1 to 1.
    pub intensity: f64,
    /// Paused by the volunteer.
    pub paused: bool,
    /// Keep computing while the tab is hidden.
    pub background: bool,
    /// Pause on battery below this fraction (0 to 1).
    pub battery_floor: f64,
    /// Run only the relay's built-in kernels, never one a submitter registered (from
    /// the next connection on).
    pub builtin_only: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            intensity: 1.0,
            paused: false,
            background: false,
            battery_floor: 0.2,
            builtin_only: false,
        }
    }
}

/// Why the loop is holding, if it is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Hold {
    /// The volunteer pressed Pause.
    Paused,
    /// The tab is hidden.
    Hidden,
    /// Discharging below the floor.
    Battery,
    /// The widget's frame is hidden, covered, transparent, shrunk or off-screen (or the
    /// browser cannot tell): a host page must not get work from a card nobody sees.
    Unseen,
}

/// Whether the person can see this page, as far as the browser tells a framed page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sight {
    /// Not watched: a top-level page, which no host page can cover or fade.
    TopLevel,
    /// In a frame, and the browser has no IntersectionObserver v2 (Firefox, Safari): it
    /// cannot tell, so the frame counts as unseen.
    Unknown,
    /// In a frame that IntersectionObserver v2 reports visible: on screen, unobscured,
    /// fully opaque, not transformed.
    Visible,
    /// In a frame that is not visible, or not yet reported.
    Unseen,
}

/// How long IntersectionObserver v2 may take between visibility reports, in ms (100 is
/// the least the browser accepts; each report costs it a hit test).
const SIGHT_DELAY_MS: u32 = 100;

thread_local! {
    static ENGINE: RefCell<Option<Rc<Engine>>> = const { RefCell::new(None) };
    static STOP: RefCell<Option<oneshot::Sender<()>>> = const { RefCell::new(None) };
    static LOADER: Cell<Option<EngineLoader>> = const { Cell::new(None) };
    static LOADED: Cell<Option<&'static EngineCalls>> = const { Cell::new(None) };
    static SETTINGS: Cell<Settings> = const { Cell::new(Settings { intensity: 1.0, paused: false, background: false, battery_floor: 0.2, builtin_only: false }) };
    static BATTERY: RefCell<Option<JsValue>> = const { RefCell::new(None) };
    static CPU_ON_PAGE: Cell<Option<CpuReference>> = const { Cell::new(None) };
    static CUSTOM: Cell<Option<CustomKernels>> = const { Cell::new(None) };
    static MATMUL_TRIALS: Cell<Option<MatmulTrials>> = const { Cell::new(None) };
    static SIGHT: Cell<Sight> = const { Cell::new(Sight::TopLevel) };
}

/// The engine's entry points. Everything that computes, connects or signs is reached
/// through these, so that a bundle whose page code never names [`ENGINE_CALLS`] can leave
/// the engine to a module of its own (the widget: `src/bin/starling-widget.rs`).
pub struct EngineCalls {
    /// [`detect`].
    pub detect: fn() -> LocalBoxFuture<'static, DeviceSummary>,
    /// [`start`].
    pub start: fn(Starting) -> LocalBoxFuture<'static, Result<(), String>>,
    /// [`benchmark`].
    pub benchmark: fn(u32) -> LocalBoxFuture<'static, Result<f64, String>>,
    /// This browser's wallet address (its key made on first use).
    pub wallet_address: fn() -> Result<String, String>,
}

/// The engine, linked into whichever bundle names it.
pub static ENGINE_CALLS: EngineCalls = EngineCalls {
    detect: detect_boxed,
    start: start_boxed,
    benchmark: benchmark_boxed,
    wallet_address,
};

fn detect_boxed() -> LocalBoxFuture<'static, DeviceSummary> {
    Box::pin(detect())
}

fn start_boxed(starting: Starting) -> LocalBoxFuture<'static, Result<(), String>> {
    Box::pin(start(starting))
}

fn benchmark_boxed(n: u32) -> LocalBoxFuture<'static, Result<f64, String>> {
    Box::pin(benchmark(n))
}

/// This browser's wallet address, its key made on first use. Named directly only by the
/// app's volunteer page; the widget reaches it through [`EngineCalls`].
pub fn wallet_address() -> Result<String, String> {
    keystore::load_or_create()
        .map(|k| k.address().to_string())
        .map_err(|e| e.to_string())
}

/// How a bundle reaches [`EngineCalls`]: at once (the app) or by fetching the module
/// that holds them (the widget). A failed fetch can be retried.
pub type EngineLoader = fn() -> LocalBoxFuture<'static, Result<&'static EngineCalls, String>>;

/// Sets how this page reaches its engine; called once, before mounting.
pub fn set_engine_loader(load: EngineLoader) {
    LOADER.with(|l| l.set(Some(load)));
}

/// The engine, fetched on first use where the bundle left it out.
pub async fn engine() -> Result<&'static EngineCalls, String> {
    if let Some(calls) = loaded_engine() {
        return Ok(calls);
    }
    let load = LOADER
        .with(Cell::get)
        .ok_or_else(|| "this page has no volunteer engine".to_owned())?;
    let calls = load().await?;
    LOADED.with(|l| l.set(Some(calls)));
    Ok(calls)
}

/// The engine, if this page has it already.
pub fn loaded_engine() -> Option<&'static EngineCalls> {
    LOADED.with(Cell::get)
}

/// Lets CPU units run on the page's own thread when the CPU worker cannot start (see
/// `Engine::with_cpu_on_page`): the app calls this, the widget does not.
pub fn allow_cpu_on_page(reference: CpuReference) {
    CPU_ON_PAGE.with(|c| c.set(Some(reference)));
}

/// Lets this page run units of kernels submitters registered (see
/// `Engine::with_custom_kernels`): the app calls this, the widget does not, so a site's
/// visitors run only the network's own kernels and the widget carries none of the code.
pub fn allow_custom_kernels(custom: CustomKernels) {
    CUSTOM.with(|c| c.set(Some(custom)));
}

/// Lets this page choose its matmul shader by a trial on the device (see
/// `Engine::with_matmul_trials`): the app calls this, the widget does not (a visit to a
/// site is short, and the trial's code and second shader would weigh on its bundle).
pub fn allow_matmul_trials(trials: MatmulTrials) {
    MATMUL_TRIALS.with(|c| c.set(Some(trials)));
}

/// What the device card shows.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceSummary {
    /// Adapter name or "CPU fallback".
    pub adapter: String,
    /// "webgpu" or "cpu".
    pub backend: String,
    /// Software adapter or CPU.
    pub fallback: bool,
}

/// `?transport=websocket` (or `webrtc`) in the page's address: use only that transport
/// (for tests, and for networks where the WebRTC attempt only costs its fallback wait);
/// anything else tries WebRTC first and falls back to the WebSocket.
fn transport_requested() -> TransportChoice {
    web_sys::window()
        .and_then(|w| w.location().search().ok())
        .and_then(|q| web_sys::UrlSearchParams::new_with_str(&q).ok())
        .and_then(|p| p.get("transport"))
        .and_then(|t| t.parse().ok())
        .unwrap_or_default()
}

/// `?device=cpu` in the page's address: use the CPU fallback even where WebGPU works (for
/// a GPU that misbehaves, and for tests of the fallback).
fn cpu_requested() -> bool {
    web_sys::window()
        .and_then(|w| w.location().search().ok())
        .and_then(|q| web_sys::UrlSearchParams::new_with_str(&q).ok())
        .and_then(|p| p.get("device"))
        .is_some_and(|d| d == "cpu")
}

/// Opens the GPU (or settles on the CPU, on a Web Worker) once per tab. Detecting
/// computes nothing.
pub async fn detect() -> DeviceSummary {
    let engine = match ENGINE.with(|e| e.borrow().clone()) {
        Some(engine) => engine,
        None => {
            mark_once("starling:detect");
            let mut engine = if cpu_requested() {
                Engine::cpu_only()
            } else {
                Engine::detect().await
            };
            mark_once("starling:adapter");
            if let Some(custom) = CUSTOM.with(Cell::get) {
                engine = engine.with_custom_kernels(custom);
            }
            if let Some(trials) = MATMUL_TRIALS.with(Cell::get) {
                engine = engine.with_matmul_trials(trials);
            }
            if engine.on_cpu() {
                // Seconds-long CPU units would freeze the page on its own thread.
                match (
                    CpuWorker::spawn(cpu_worker::WORKER_URL).await,
                    CPU_ON_PAGE.with(Cell::get),
                ) {
                    (Ok(worker), _) => engine = engine.with_cpu_worker(worker),
                    (Err(why), Some(reference)) => {
                        leptos::logging::warn!("CPU units run on the page: {why}");
                        engine = engine.with_cpu_on_page(reference);
                    }
                    (Err(why), None) => leptos::logging::warn!("no CPU fallback: {why}"),
                }
            }
            let engine = Rc::new(engine);
            ENGINE.with(|e| *e.borrow_mut() = Some(engine.clone()));
            mark_once("starling:detected");
            engine
        }
    };
    let info = engine.device_info();
    DeviceSummary {
        adapter: info.adapter,
        backend: info.backend,
        fallback: info.fallback,
    }
}

/// This device's matmul speed in GFLOP/s on an n-cubed unit ([`Engine::benchmark`]).
/// Local only: nothing is sent anywhere.
pub async fn benchmark(n: u32) -> Result<f64, String> {
    let engine = ENGINE
        .with(|e| e.borrow().clone())
        .ok_or_else(|| "the device is still being detected".to_owned())?;
    engine.benchmark(n).await.map_err(|e| e.to_string())
}

/// The benchmark's side: `?benchmark=N` where the page's link asks
/// ([`starling_client::engine::benchmark_side`]).
pub fn benchmark_side() -> u32 {
    starling_client::engine::benchmark_side(crate::net::query_param("benchmark").as_deref())
}

/// Side of the warm-up matmul: the smallest that runs the shader's whole tile path.
const WARM_UP_N: u32 = 16;

/// Compiles the matmul pipeline on a GPU engine by running a tiny local unit, so that
/// the compile (about half a second on a software adapter, measured by
/// `e2e/benches/first_unit.rs`) overlaps the connection and the first lease instead of
/// following them. matmul only: a software adapter compiles one pipeline at a time, so
/// warming every kernel could delay a first unit of another kernel behind them.
/// `?warmup=off` skips it: the bench's baseline, measured in the same run.
fn warm_up(engine: &Rc<Engine>) {
    let off = web_sys::window()
        .and_then(|w| w.location().search().ok())
        .and_then(|q| web_sys::UrlSearchParams::new_with_str(&q).ok())
        .and_then(|p| p.get("warmup"))
        .is_some_and(|w| w == "off");
    if off || engine.on_cpu() {
        return;
    }
    let engine = engine.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let warmed = engine.run(&starling_client::local_matmul(WARM_UP_N)).await;
        match warmed {
            Ok(_) => mark_once("starling:warm"),
            Err(why) => leptos::logging::warn!("warming the GPU up failed: {why}"),
        }
    });
}

/// Marks `name` on the page's performance timeline (`performance.mark`), once per page:
/// how long Start took to reach the first unit, read by `e2e/benches/first_unit.rs`
/// and the browser's own profiler. Later calls do nothing, so a page that runs for
/// days keeps a handful of entries, not one per unit.
pub fn mark_once(name: &str) {
    let Some(performance) = web_sys::window().and_then(|w| w.performance()) else {
        return;
    };
    if performance.get_entries_by_name(name).length() == 0 {
        let _ = performance.mark(name);
    }
}

/// Milliseconds since the page started loading.
pub fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map(|p| p.now())
        .unwrap_or(0.0)
}

/// Replaces the pacing settings; the loop picks them up before its next unit.
pub fn set_settings(settings: Settings) {
    SETTINGS.with(|s| s.set(settings));
}

/// Starts watching the battery where the Battery Status API exists (feature-detected:
/// `navigator.getBattery` is absent in Firefox and Safari).
pub async fn watch_battery() {
    let Some(navigator) = web_sys::window().map(|w| w.navigator()) else {
        return;
    };
    let Ok(get) = Reflect::get(&navigator, &"getBattery".into()) else {
        return;
    };
    let Some(get) = get.dyn_ref::<js_sys::Function>() else {
        return;
    };
    let Ok(promise) = get.call0(&navigator) else {
        return;
    };
    let Ok(promise) = promise.dyn_into::<js_sys::Promise>() else {
        return;
    };
    if let Ok(manager) = wasm_bindgen_futures::JsFuture::from(promise).await {
        BATTERY.with(|b| *b.borrow_mut() = Some(manager));
    }
}

/// Battery level (0 to 1) and whether it charges, when known.
pub fn battery() -> Option<(f64, bool)> {
    BATTERY.with(|b| {
        let manager = b.borrow();
        let manager = manager.as_ref()?;
        let level = Reflect::get(manager, &"level".into()).ok()?.as_f64()?;
        let charging = Reflect::get(manager, &"charging".into())
            .ok()?
            .as_bool()
            .unwrap_or(true);
        Some((level, charging))
    })
}

fn tab_hidden() -> bool {
    web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| Reflect::get(&d, &"hidden".into()).ok())
        .and_then(|h| h.as_bool())
        .unwrap_or(false)
}

/// Whether this page is the top-level one (not inside another page's frame).
fn top_level(window: &web_sys::Window) -> bool {
    Reflect::get(window, &"top".into())
        .map(|top| js_sys::Object::is(&top, window))
        .unwrap_or(false)
}

/// What [`watch_sight`] saw last.
pub fn sight() -> Sight {
    SIGHT.with(Cell::get)
}

/// Starts watching whether the person can see this page, where a host page could hide
/// it: in a frame, with IntersectionObserver v2 (`trackVisibility`, read through
/// `Reflect` since web-sys lacks the v2 fields), reporting each change to `on_change`.
/// Returns what is known now. Until the first report a frame counts as unseen.
pub fn watch_sight(on_change: impl Fn(Sight) + 'static) -> Sight {
    let Some(window) = web_sys::window() else {
        return Sight::TopLevel;
    };
    if top_level(&window) {
        SIGHT.with(|s| s.set(Sight::TopLevel));
        return Sight::TopLevel;
    }
    let set = move |seen: Sight| {
        SIGHT.with(|s| s.set(seen));
        on_change(seen);
    };
    let observed = window
        .document()
        .and_then(|d| d.document_element())
        .and_then(|target| observe_visibility(&window, &target, set));
    let seen = if observed == Some(true) {
        Sight::Unseen
    } else {
        Sight::Unknown
    };
    SIGHT.with(|s| s.set(seen));
    seen
}

/// Observes `target` with IntersectionObserver v2; false where the browser lacks v2 (it
/// then ignores `trackVisibility` and would report intersection alone, which a
/// transparent or covered frame passes).
fn observe_visibility(
    window: &web_sys::Window,
    target: &web_sys::Element,
    set: impl Fn(Sight) + 'static,
) -> Option<bool> {
    use wasm_bindgen::closure::Closure;
    let constructor = Reflect::get(window, &"IntersectionObserver".into())
        .ok()?
        .dyn_into::<js_sys::Function>()
        .ok()?;
    let options = js_sys::Object::new();
    Reflect::set(&options, &"trackVisibility".into(), &JsValue::TRUE).ok()?;
    Reflect::set(&options, &"delay".into(), &SIGHT_DELAY_MS.into()).ok()?;
    let on_entries = Closure::<dyn Fn(js_sys::Array)>::new(move |entries: js_sys::Array| {
        // The newest entry is the current state; earlier ones are history.
        let entry = entries.get(entries.length().saturating_sub(1));
        let flag = |name: &str| {
            Reflect::get(&entry, &name.into())
                .ok()
                .and_then(|v| v.as_bool())
                .unwrap_or(false)
        };
        set(if flag("isIntersecting") && flag("isVisible") {
            Sight::Visible
        } else {
            Sight::Unseen
        });
    });
    let observer = Reflect::construct(
        &constructor,
        &js_sys::Array::of2(on_entries.as_ref(), &options),
    )
    .ok()?;
    let v2 = Reflect::get(&observer, &"trackVisibility".into())
        .ok()
        .and_then(|v| v.as_bool())
        == Some(true);
    if !v2 {
        return Some(false);
    }
    let observe = Reflect::get(&observer, &"observe".into())
        .ok()?
        .dyn_into::<js_sys::Function>()
        .ok()?;
    observe.call1(&observer, target).ok()?;
    // The observer lives as long as the page; so must its callback.
    on_entries.forget();
    Some(true)
}

/// Why Start may not count now: the frame is not visibly on screen.
pub fn unseen_reason() -> Option<&'static str> {
    match sight() {
        Sight::TopLevel | Sight::Visible => None,
        Sight::Unseen => Some(
            "this card is not fully visible (covered, faded, shrunk or off-screen), so Start does not count",
        ),
        Sight::Unknown => Some(
            "this browser cannot confirm the card is visible: use \"Open in a window\" to start",
        ),
    }
}

/// Why work should hold now, if it should.
pub fn hold() -> Option<Hold> {
    let s = SETTINGS.with(Cell::get);
    if s.paused {
        return Some(Hold::Paused);
    }
    if unseen_reason().is_some() {
        return Some(Hold::Unseen);
    }
    if !s.background && tab_hidden() {
        return Some(Hold::Hidden);
    }
    match battery() {
        Some((level, false)) if level < s.battery_floor => Some(Hold::Battery),
        _ => None,
    }
}

/// Awaited before each request for work: the duty-cycle rest, then holds while [`hold`].
async fn gate(elapsed_ms: f64, on_hold: Rc<dyn Fn(Option<Hold>)>) {
    let rest = starling_client::duty_cycle_rest_ms(elapsed_ms, SETTINGS.with(Cell::get).intensity);
    if rest >= 1.0 {
        TimeoutFuture::new(rest.min(600_000.0) as u32).await;
    }
    let mut held = false;
    while let Some(why) = hold() {
        if !held {
            on_hold(Some(why));
            held = true;
        }
        TimeoutFuture::new(400).await;
    }
    if held {
        on_hold(None);
    }
}

/// A lost connection, as the page shows it while it tries again.
#[derive(Clone, Debug, PartialEq)]
pub struct Reconnecting {
    /// The try about to be made since the last session that worked (1 for the first).
    pub attempt: u32,
    /// Why the last connection or try failed.
    pub why: String,
}

/// What [`start`] hears from and tells the page.
pub struct Starting {
    /// Credits the embedding site (the widget).
    pub site: Option<SiteClaim>,
    /// Ends the session: [`arm_stop`]'s receiver, made before the engine may still have
    /// to be fetched, so that a Stop pressed meanwhile counts.
    pub stop: oneshot::Receiver<()>,
    /// Every event of the work loop.
    pub on_event: Box<dyn FnMut(Event)>,
    /// When work holds and resumes.
    pub on_hold: Box<dyn Fn(Option<Hold>)>,
    /// That the connection was lost and a new one is being made.
    pub on_reconnect: Box<dyn Fn(Reconnecting)>,
}

/// Makes the channel [`stop`] ends a session with; the receiver goes to [`start`].
pub fn arm_stop() -> oneshot::Receiver<()> {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    STOP.with(|s| *s.borrow_mut() = Some(stop_tx));
    stop_rx
}

/// Connects to the relay that served this page and works until [`stop`] or a refusal.
/// A lost connection (a relay restarting, a network blip, a laptop waking) is made
/// again by itself, within the session the person started, after waits that grow with
/// jitter (`starling_client::reconnect`); a refusal (a quarantined wallet, another
/// protocol version) is final.
pub async fn start(starting: Starting) -> Result<(), String> {
    use futures::future::{select, Either, FutureExt};
    use starling_client::reconnect::{self, Backoff};
    if let Some(why) = unseen_reason() {
        return Err(why.to_owned());
    }
    let engine = ENGINE
        .with(|e| e.borrow().clone())
        .ok_or_else(|| "the device is still being detected".to_owned())?;
    let Starting {
        site,
        stop,
        on_event,
        on_hold,
        on_reconnect,
    } = starting;
    mark_once("starling:start");
    warm_up(&engine);
    // Every try and every wait between tries ends when Stop is pressed.
    let stop = stop.map(|_| ()).shared();
    let profile = Profile {
        client: format!("browser/{}", env!("CARGO_PKG_VERSION")),
        wallet: keystore::load_or_create().map_err(|e| e.to_string())?,
        site,
        // The relay sends registered kernels only to a page that can run them.
        builtin_only: SETTINGS.with(Cell::get).builtin_only
            || !ENGINE.with(|e| e.borrow().as_ref().is_some_and(|e| e.runs_custom_kernels())),
    };
    let on_hold: Rc<dyn Fn(Option<Hold>)> = Rc::from(on_hold);
    let on_event = RefCell::new(on_event);
    let mut backoff = Backoff::new();
    loop {
        let connect = pin!(RelayTransport::connect_with("", transport_requested()));
        let deadline = TimeoutFuture::new(reconnect::CONNECT_TIMEOUT_MS);
        let lost = match select(select(connect, deadline), stop.clone()).await {
            Either::Right(_) => return Ok(()),
            Either::Left((Either::Right(_), _)) => format!(
                "no connection within {} s",
                reconnect::CONNECT_TIMEOUT_MS / 1000
            ),
            Either::Left((Either::Left((Err(e), _)), _)) => e.to_string(),
            Either::Left((Either::Left((Ok(mut transport), _)), _)) => {
                mark_once("starling:channel-open");
                let on_hold = on_hold.clone();
                let welcomed_at = Cell::new(None::<f64>);
                let computed = Cell::new(0u64);
                let run = starling_client::run_paced(
                    &mut transport,
                    &engine,
                    &profile,
                    now_ms,
                    |event: Event| {
                        match event {
                            Event::Connected { .. } => {
                                mark_once("starling:welcome");
                                welcomed_at.set(Some(now_ms()));
                            }
                            // The first unit's compute includes compiling its pipeline;
                            // the second's does not: the bench takes one from the other.
                            Event::Assigned { .. } => match computed.get() {
                                0 => mark_once("starling:assigned-1"),
                                1 => mark_once("starling:assigned-2"),
                                _ => {}
                            },
                            Event::Computed { .. } => {
                                computed.set(computed.get() + 1);
                                match computed.get() {
                                    1 => mark_once("starling:computed-1"),
                                    2 => mark_once("starling:computed-2"),
                                    _ => {}
                                }
                            }
                            Event::Acked { .. } => mark_once("starling:acked-1"),
                            _ => {}
                        }
                        (on_event.borrow_mut())(event)
                    },
                    move |elapsed| gate(elapsed, on_hold.clone()),
                    stop.clone(),
                )
                .await;
                let welcomed_for = welcomed_at.get().map(|at| now_ms() - at);
                backoff.session_ended(reconnect::steady(welcomed_for, computed.get()));
                match run {
                    Ok(()) => return Ok(()),
                    Err(e @ starling_client::VolunteerError::Refused(_)) => {
                        return Err(e.to_string())
                    }
                    Err(e) => e.to_string(),
                }
            }
        };
        let wait = backoff.next_wait_ms(js_sys::Math::random());
        on_reconnect(Reconnecting {
            attempt: backoff.attempt(),
            why: lost,
        });
        if let Either::Right(_) = select(TimeoutFuture::new(wait), stop.clone()).await {
            return Ok(());
        }
    }
}

/// Asks the running loop to stop; the channel closes and leased work is handed back.
pub fn stop() {
    if let Some(tx) = STOP.with(|s| s.borrow_mut().take()) {
        let _ = tx.send(());
    }
}
