//! The page's handle on the volunteer runtime: one engine per tab, started and stopped
//! from components. Browser objects are single-threaded, so they live in thread-locals
//! and components only hold signals.

use starling_client::platform::keystore;
use starling_client::platform::web::WebTransport;
use starling_client::{Engine, Event, Profile};
use std::cell::RefCell;
use std::rc::Rc;

thread_local! {
    static ENGINE: RefCell<Option<Rc<Engine>>> = const { RefCell::new(None) };
    static STOP: RefCell<Option<futures::channel::oneshot::Sender<()>>> = const { RefCell::new(None) };
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

/// Opens the GPU (or settles on the CPU) once per tab. Detecting computes nothing.
pub async fn detect() -> DeviceSummary {
    let engine = Rc::new(Engine::detect().await);
    let info = engine.device_info();
    ENGINE.with(|e| *e.borrow_mut() = Some(engine));
    DeviceSummary {
        adapter: info.adapter,
        backend: info.backend,
        fallback: info.fallback,
    }
}

/// Milliseconds since the page started loading.
pub fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map(|p| p.now())
        .unwrap_or(0.0)
}

/// Connects to the relay that served this page and works until [`stop`] or an error.
pub async fn start(on_event: impl FnMut(Event)) -> Result<(), String> {
    let engine = ENGINE
        .with(|e| e.borrow().clone())
        .ok_or_else(|| "the device is still being detected".to_owned())?;
    let (stop_tx, stop_rx) = futures::channel::oneshot::channel::<()>();
    STOP.with(|s| *s.borrow_mut() = Some(stop_tx));
    let profile = Profile {
        client: format!("browser/{}", env!("CARGO_PKG_VERSION")),
        wallet: keystore::load_or_create().map_err(|e| e.to_string())?,
        site: None,
    };
    let mut transport = WebTransport::connect("").await.map_err(|e| e.to_string())?;
    starling_client::run(&mut transport, &engine, &profile, now_ms, on_event, async {
        let _ = stop_rx.await;
    })
    .await
    .map_err(|e| e.to_string())
}

/// Asks the running loop to stop; the channel closes and leased work is handed back.
pub fn stop() {
    if let Some(tx) = STOP.with(|s| s.borrow_mut().take()) {
        let _ = tx.send(());
    }
}
