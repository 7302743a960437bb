//! The CPU fallback off the page's thread: a dedicated Web Worker runs the kernels' CPU
//! reference, so a unit that takes seconds on the CPU never freezes the page.
//!
//! Both halves live here. [`serve`] is the worker's side (the `starling-cpu-worker`
//! binary calls it); [`CpuWorker`] is the page's handle on it. The wire between them is
//! plain `postMessage`:
//!
//! - worker → page, once: the string `"ready"` (messages sent before the worker's wasm
//!   has loaded would be dropped, so the page waits for it);
//! - page → worker: `[id, kernel, unit_params, input: Uint8Array]`, the input's buffer
//!   transferred rather than copied;
//! - worker → page: `[id, true, output: Uint8Array]` or `[id, false, error: string]`.

use futures::channel::oneshot;
use gloo_timers::future::TimeoutFuture;
use js_sys::{Array, Uint8Array};
use starling_kernels::volunteer;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent, Worker, WorkerOptions, WorkerType};

/// The worker's script, as Trunk emits it (`data-type="worker" data-loader-shim`).
pub const WORKER_URL: &str = "/starling-cpu-worker_loader.js";

/// How long the worker may take to load its wasm before the page gives up on it.
const READY_TIMEOUT_MS: u32 = 20_000;

type Reply = Result<Vec<u8>, String>;
type Pending = Rc<RefCell<HashMap<u32, oneshot::Sender<Reply>>>>;

fn js_text(e: &JsValue) -> String {
    e.as_string()
        .or_else(|| {
            js_sys::Reflect::get(e, &"message".into())
                .ok()
                .and_then(|m| m.as_string())
        })
        .unwrap_or_else(|| format!("{e:?}"))
}

/// The page's handle on a running CPU worker.
pub struct CpuWorker {
    worker: Worker,
    pending: Pending,
    next_id: Cell<u32>,
    /// Set once the worker died; every later unit fails with it.
    broken: Rc<RefCell<Option<String>>>,
    // Kept alive for as long as the worker: the browser calls them.
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_error: Closure<dyn FnMut(JsValue)>,
}

impl CpuWorker {
    /// Starts the worker at `url` and waits until its wasm is loaded.
    pub async fn spawn(url: &str) -> Result<Self, String> {
        let options = WorkerOptions::new();
        options.set_type(WorkerType::Classic);
        options.set_name("starling-cpu");
        let worker = Worker::new_with_options(url, &options).map_err(|e| js_text(&e))?;
        let pending: Pending = Rc::default();
        let broken: Rc<RefCell<Option<String>>> = Rc::default();
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
        let ready_tx = Rc::new(RefCell::new(Some(ready_tx)));

        let on_message = {
            let pending = pending.clone();
            let ready_tx = ready_tx.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
                let data = ev.data();
                if data.as_string().as_deref() == Some("ready") {
                    if let Some(tx) = ready_tx.borrow_mut().take() {
                        let _ = tx.send(Ok(()));
                    }
                    return;
                }
                let reply = Array::from(&data);
                let Some(id) = reply.get(0).as_f64().map(|id| id as u32) else {
                    return;
                };
                let result = if reply.get(1).as_bool() == Some(true) {
                    Ok(Uint8Array::new(&reply.get(2)).to_vec())
                } else {
                    Err(reply
                        .get(2)
                        .as_string()
                        .unwrap_or_else(|| "the CPU worker failed".into()))
                };
                if let Some(tx) = pending.borrow_mut().remove(&id) {
                    // The unit's caller may have gone (the volunteer stopped): fine.
                    let _ = tx.send(result);
                }
            })
        };
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));

        let on_error = {
            let pending = pending.clone();
            let broken = broken.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
                let why = format!("the CPU worker crashed: {}", js_text(&ev));
                *broken.borrow_mut() = Some(why.clone());
                if let Some(tx) = ready_tx.borrow_mut().take() {
                    let _ = tx.send(Err(why.clone()));
                }
                for (_, tx) in pending.borrow_mut().drain() {
                    let _ = tx.send(Err(why.clone()));
                }
            })
        };
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));

        let ready = futures::future::select(ready_rx, TimeoutFuture::new(READY_TIMEOUT_MS)).await;
        let outcome = match ready {
            futures::future::Either::Left((Ok(outcome), _)) => outcome,
            futures::future::Either::Left((Err(_), _)) => {
                Err("the CPU worker went away while loading".into())
            }
            futures::future::Either::Right(_) => Err(format!(
                "the CPU worker did not load within {} s",
                READY_TIMEOUT_MS / 1000
            )),
        };
        if let Err(why) = outcome {
            worker.terminate();
            return Err(why);
        }
        Ok(Self {
            worker,
            pending,
            next_id: Cell::new(0),
            broken,
            _on_message: on_message,
            _on_error: on_error,
        })
    }

    /// Runs one unit of `kernel` on the worker and returns its checked output.
    pub async fn run(&self, kernel: &str, unit: &str, input: &[u8]) -> Result<Vec<u8>, String> {
        if let Some(why) = self.broken.borrow().clone() {
            return Err(why);
        }
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        let bytes = Uint8Array::new_with_length(input.len() as u32);
        bytes.copy_from(input);
        let message = Array::of4(
            &JsValue::from(id),
            &JsValue::from_str(kernel),
            &JsValue::from_str(unit),
            &bytes,
        );
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        if let Err(e) = self
            .worker
            .post_message_with_transfer(&message, &Array::of1(&bytes.buffer()))
        {
            self.pending.borrow_mut().remove(&id);
            return Err(format!(
                "could not send the unit to the CPU worker: {}",
                js_text(&e)
            ));
        }
        rx.await
            .unwrap_or_else(|_| Err("the CPU worker dropped the unit".into()))
    }
}

impl Drop for CpuWorker {
    fn drop(&mut self) {
        self.worker.terminate();
    }
}

/// The worker's side: answers every unit the page posts, in order, with the CPU reference.
pub fn serve() -> Result<(), String> {
    let scope: DedicatedWorkerGlobalScope = js_sys::global()
        .dyn_into()
        .map_err(|_| "starling-cpu-worker must run as a dedicated Web Worker".to_owned())?;
    let reply_scope = scope.clone();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
        let request = Array::from(&ev.data());
        let id = request.get(0);
        let kernel = request.get(1).as_string().unwrap_or_default();
        let unit = request.get(2).as_string().unwrap_or_default();
        let input = Uint8Array::new(&request.get(3)).to_vec();
        let scope = reply_scope.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let reply = match volunteer::run_cpu(&kernel, &unit, &input) {
                Ok(output) => {
                    let bytes = Uint8Array::new_with_length(output.len() as u32);
                    bytes.copy_from(&output);
                    let reply = Array::of3(&id, &JsValue::TRUE, &bytes);
                    scope.post_message_with_transfer(&reply, &Array::of1(&bytes.buffer()))
                }
                Err(e) => scope.post_message(&Array::of3(
                    &id,
                    &JsValue::FALSE,
                    &JsValue::from_str(&e.to_string()),
                )),
            };
            if let Err(e) = reply {
                web_sys::console::error_1(&format!("starling-cpu-worker: {}", js_text(&e)).into());
            }
        });
    });
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    // The worker lives as long as the page keeps it; so does its handler.
    on_message.forget();
    scope
        .post_message(&JsValue::from_str("ready"))
        .map_err(|e| js_text(&e))
}
