//! The page's handle on the volunteer runtime: one engine per tab, started and stopped
//! from components. Browser objects are single-threaded, so they live in thread-locals
//! and components only hold signals.
//!
//! Pacing lives here too: before asking for each unit the loop awaits [`gate`], which
//! sleeps for the duty cycle (`elapsed * (1 - i) / i` after a unit at intensity `i`) and
//! holds while the volunteer paused, the tab is hidden, or the battery is low.

use gloo_timers::future::TimeoutFuture;
use js_sys::Reflect;
use starling_client::platform::cpu_worker::{self, CpuWorker};
use starling_client::platform::keystore;
use starling_client::platform::RelayTransport;
use starling_client::{Engine, Event, Profile, TransportChoice};
use starling_protocol::SiteClaim;
use std::cell::{Cell, RefCell};
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
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            intensity: 1.0,
            paused: false,
            background: false,
            battery_floor: 0.2,
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
}

thread_local! {
    static ENGINE: RefCell<Option<Rc<Engine>>> = const { RefCell::new(None) };
    static STOP: RefCell<Option<futures::channel::oneshot::Sender<()>>> = const { RefCell::new(None) };
    static SETTINGS: Cell<Settings> = const { Cell::new(Settings { intensity: 1.0, paused: false, background: false, battery_floor: 0.2 }) };
    static BATTERY: RefCell<Option<JsValue>> = const { RefCell::new(None) };
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
            let mut engine = if cpu_requested() {
                Engine::cpu_only()
            } else {
                Engine::detect().await
            };
            if engine.on_cpu() {
                // Seconds-long CPU units would freeze the page on its own thread.
                match CpuWorker::spawn(cpu_worker::WORKER_URL).await {
                    Ok(worker) => engine = engine.with_cpu_worker(worker),
                    Err(why) => leptos::logging::warn!("CPU units run on the page: {why}"),
                }
            }
            let engine = Rc::new(engine);
            ENGINE.with(|e| *e.borrow_mut() = Some(engine.clone()));
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

/// Side of the benchmark's square matmul: 2 x 128^3 = 4.2 MFLOP, a blink on a real GPU
/// and well under a second on software ones.
const BENCH_N: u32 = 128;

/// Measures this device's matmul speed in GFLOP/s: one run to compile the pipeline,
/// then the best of three. Local only: nothing is sent anywhere.
pub async fn benchmark() -> Result<f64, String> {
    let engine = ENGINE
        .with(|e| e.borrow().clone())
        .ok_or_else(|| "the device is still being detected".to_owned())?;
    let n = BENCH_N;
    let assignment = starling_protocol::Assignment {
        lease: "00000000-0000-0000-0000-000000000000"
            .parse::<starling_protocol::LeaseId>()
            .map_err(|e| e.to_string())?,
        kernel: "matmul".into(),
        params_json: format!(r#"{{"row_start":0,"rows":{n},"k":{n},"n":{n}}}"#),
        input: vec![0u8; (2 * n * n * 4) as usize],
        deadline_ms: u32::MAX,
    };
    engine.run(&assignment).await.map_err(|e| e.to_string())?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let started = now_ms();
        engine.run(&assignment).await.map_err(|e| e.to_string())?;
        best = best.min(now_ms() - started);
    }
    let flops = 2.0 * f64::from(n).powi(3);
    Ok(flops / best.max(0.01) / 1e6)
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

/// Why work should hold now, if it should.
pub fn hold() -> Option<Hold> {
    let s = SETTINGS.with(Cell::get);
    if s.paused {
        return Some(Hold::Paused);
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

/// Connects to the relay that served this page and works until [`stop`] or a refusal.
/// `site` credits the embedding site (the widget). `on_hold` hears when work holds and
/// resumes; `on_reconnect` hears that the connection was lost and a new one is being
/// made. A lost connection (a relay restarting, a network blip) is made again, after
/// half a second and then up to 5 s between tries, as the native volunteer does; a
/// refusal (a quarantined wallet, another protocol version) is final.
pub async fn start(
    site: Option<SiteClaim>,
    mut on_event: impl FnMut(Event),
    on_hold: impl Fn(Option<Hold>) + 'static,
    on_reconnect: impl Fn(String),
) -> Result<(), String> {
    use futures::future::{select, Either, FutureExt};
    let engine = ENGINE
        .with(|e| e.borrow().clone())
        .ok_or_else(|| "the device is still being detected".to_owned())?;
    let (stop_tx, stop_rx) = futures::channel::oneshot::channel::<()>();
    STOP.with(|s| *s.borrow_mut() = Some(stop_tx));
    // Every try and every wait between tries ends when Stop is pressed.
    let stop = stop_rx.map(|_| ()).shared();
    let profile = Profile {
        client: format!("browser/{}", env!("CARGO_PKG_VERSION")),
        wallet: keystore::load_or_create().map_err(|e| e.to_string())?,
        site,
    };
    let on_hold: Rc<dyn Fn(Option<Hold>)> = Rc::new(on_hold);
    let mut backoff_ms: u32 = 500;
    loop {
        let lost = match RelayTransport::connect_with("", transport_requested()).await {
            Ok(mut transport) => {
                let on_hold = on_hold.clone();
                let run = starling_client::run_paced(
                    &mut transport,
                    &engine,
                    &profile,
                    now_ms,
                    &mut on_event,
                    move |elapsed| gate(elapsed, on_hold.clone()),
                    stop.clone(),
                )
                .await;
                match run {
                    Ok(()) => return Ok(()),
                    Err(e @ starling_client::VolunteerError::Refused(_)) => {
                        return Err(e.to_string())
                    }
                    Err(e) => {
                        // It worked until now: the next try comes soon.
                        backoff_ms = 500;
                        e.to_string()
                    }
                }
            }
            Err(e) => e.to_string(),
        };
        on_reconnect(lost);
        let wait = TimeoutFuture::new(backoff_ms);
        if let Either::Right(_) = select(wait, stop.clone()).await {
            return Ok(());
        }
        backoff_ms = (backoff_ms * 2).min(5_000);
    }
}

/// Asks the running loop to stop; the channel closes and leased work is handed back.
pub fn stop() {
    if let Some(tx) = STOP.with(|s| s.borrow_mut().take()) {
        let _ = tx.send(());
    }
}
