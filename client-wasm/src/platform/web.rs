//! Browser transport: an `RTCDataChannel` opened with non-trickle signaling over fetch.

use crate::{Transport, TransportError, TransportKind};
use futures::channel::{mpsc, oneshot};
use futures::StreamExt;
use gloo_timers::future::TimeoutFuture;
use js_sys::{Reflect, Uint8Array};
use starling_protocol::{Binding, ChannelBinding};
use std::cell::Cell;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MessageEvent, RtcDataChannel, RtcDataChannelInit, RtcDataChannelState, RtcDataChannelType,
    RtcIceConnectionState, RtcIceGatheringState, RtcPeerConnection, RtcPeerConnectionState,
    RtcSdpType, RtcSessionDescriptionInit,
};

/// Bytes queued in the browser before `send` waits; keeps memory bounded on big outputs.
const HIGH_WATER: u32 = 4 * 1024 * 1024;
/// How long the peer connection may stay "disconnected" before the transport counts it
/// as closed. The state can recover (a brief network blip), but a dead relay leaves it
/// there for good: Chromium 156 reports "disconnected" 5.3 to 6.7 s after the relay is
/// killed (it has heard nothing for 5 s by then) and "failed" only 10 s later, and its
/// data channel never reports closed at all.
const DISCONNECTED_GRACE_MS: u32 = 1_000;

/// A data channel to the relay, owned by the page.
pub struct WebTransport {
    link: Link,
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    binding: Binding,
    kind: TransportKind,
    /// Set once the link is known dead, though the channel may still say "open".
    closed: Rc<Cell<bool>>,
}

/// One try's peer connection, its channel and the callbacks the browser calls (kept
/// alive as long as they are hooked). Dropped, whether the try failed or the transport
/// is done, it unhooks the callbacks before freeing them and closes both: Firefox fires
/// the channel's `close` after `pc.close()`, and on a peer connection it collects
/// unclosed, and a freed callback then throws "closure invoked recursively or after
/// being dropped" on the page.
struct Link {
    pc: RtcPeerConnection,
    dc: RtcDataChannel,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(JsValue)>,
    _on_open: Closure<dyn FnMut(JsValue)>,
    _on_link_state: Closure<dyn FnMut(JsValue)>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.dc.set_onmessage(None);
        self.dc.set_onclose(None);
        self.dc.set_onopen(None);
        self.pc.set_onconnectionstatechange(None);
        self.pc.set_oniceconnectionstatechange(None);
        self.dc.close();
        self.pc.close();
    }
}
/// What the peer connection's states say about the link.
#[derive(Clone, Copy, PartialEq)]
enum Health {
    Up,
    /// "disconnected": may recover, or may be the first sign of a dead peer.
    Wavering,
    Dead,
}

fn health(pc: &RtcPeerConnection) -> Health {
    // Both states: `connectionState` is the one that reaches "failed", but older
    // browsers only have `iceConnectionState`.
    let ice = pc.ice_connection_state();
    let connection = pc.connection_state();
    if matches!(
        ice,
        RtcIceConnectionState::Failed | RtcIceConnectionState::Closed
    ) || matches!(
        connection,
        RtcPeerConnectionState::Failed | RtcPeerConnectionState::Closed
    ) {
        Health::Dead
    } else if ice == RtcIceConnectionState::Disconnected
        || connection == RtcPeerConnectionState::Disconnected
    {
        Health::Wavering
    } else {
        Health::Up
    }
}

/// Ends the transport's stream (and fails its sends) once the peer connection fails,
/// closes, or stays disconnected past [`DISCONNECTED_GRACE_MS`]: a data channel over a
/// dead connection may never report closed by itself.
fn watch_link(
    pc: &RtcPeerConnection,
    tx: mpsc::UnboundedSender<Vec<u8>>,
    closed: Rc<Cell<bool>>,
) -> Closure<dyn FnMut(JsValue)> {
    let end = Rc::new(move || {
        closed.set(true);
        tx.close_channel();
    });
    let watched = pc.clone();
    let on_state = Closure::<dyn FnMut(JsValue)>::new(move |_| match health(&watched) {
        Health::Up => {}
        Health::Dead => end(),
        Health::Wavering => {
            let (pc, end) = (watched.clone(), end.clone());
            wasm_bindgen_futures::spawn_local(async move {
                TimeoutFuture::new(DISCONNECTED_GRACE_MS).await;
                if health(&pc) != Health::Up {
                    end();
                }
            });
        }
    });
    pc.set_onconnectionstatechange(Some(on_state.as_ref().unchecked_ref()));
    pc.set_oniceconnectionstatechange(Some(on_state.as_ref().unchecked_ref()));
    on_state
}

fn js_err(context: &str, e: JsValue) -> TransportError {
    TransportError::Connect(format!(
        "{context}: {}",
        e.as_string().unwrap_or_else(|| format!("{e:?}"))
    ))
}

async fn post_offer(url: &str, sdp: &str) -> Result<String, TransportError> {
    let window = web_sys::window().ok_or_else(|| TransportError::Connect("no window".into()))?;
    let body = js_sys::JSON::stringify(&{
        let o = js_sys::Object::new();
        Reflect::set(&o, &"sdp".into(), &sdp.into()).map_err(|e| js_err("offer body", e))?;
        o.into()
    })
    .map_err(|e| js_err("offer body", e))?;
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_body(&body);
    let headers = web_sys::Headers::new().map_err(|e| js_err("headers", e))?;
    headers
        .set("content-type", "application/json")
        .map_err(|e| js_err("headers", e))?;
    init.set_headers(&headers);
    let request =
        web_sys::Request::new_with_str_and_init(url, &init).map_err(|e| js_err("request", e))?;
    let response: web_sys::Response = JsFuture::from(window.fetch_with_request(&request))
        .await
        .map_err(|e| js_err("signaling request", e))?
        .dyn_into()
        .map_err(|e| js_err("signaling response", e))?;
    let text = JsFuture::from(response.text().map_err(|e| js_err("response body", e))?)
        .await
        .map_err(|e| js_err("response body", e))?
        .as_string()
        .unwrap_or_default();
    if !response.ok() {
        return Err(TransportError::Connect(format!(
            "relay answered {}: {text}",
            response.status()
        )));
    }
    let json = js_sys::JSON::parse(&text).map_err(|e| js_err("answer", e))?;
    Reflect::get(&json, &"sdp".into())
        .ok()
        .and_then(|v| v.as_string())
        .ok_or_else(|| TransportError::Connect("the relay's answer has no sdp".into()))
}

impl WebTransport {
    /// Signals through the relay at `base` (e.g. `""` for the page's own origin),
    /// gathering candidates with the ICE servers it advertises (relayed ones only under
    /// `?ice=relay`, see [`super::web_ice`]).
    pub async fn connect(base: &str) -> Result<Self, TransportError> {
        let config =
            super::web_ice::configuration(base, super::web_ice::relay_only_requested()).await?;
        let pc = RtcPeerConnection::new_with_configuration(&config)
            .map_err(|e| js_err("RTCPeerConnection", e))?;
        let init = RtcDataChannelInit::new();
        init.set_ordered(true);
        let dc = pc.create_data_channel_with_data_channel_dict("starling", &init);
        dc.set_binary_type(RtcDataChannelType::Arraybuffer);

        let (tx, rx) = mpsc::unbounded();
        let closed = Rc::new(Cell::new(false));
        let on_link_state = watch_link(&pc, tx.clone(), closed.clone());
        let on_message = {
            let tx = tx.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
                let bytes = Uint8Array::new(&ev.data()).to_vec();
                // Fails only after the transport is gone; nothing is waiting then.
                let _ = tx.unbounded_send(bytes);
            })
        };
        dc.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        let on_close = {
            let tx = tx.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |_| tx.close_channel())
        };
        dc.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        let (open_tx, open_rx) = oneshot::channel::<()>();
        let mut open_tx = Some(open_tx);
        let on_open = Closure::<dyn FnMut(JsValue)>::new(move |_| {
            if let Some(tx) = open_tx.take() {
                let _ = tx.send(());
            }
        });
        dc.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        let link = Link {
            pc,
            dc,
            _on_message: on_message,
            _on_close: on_close,
            _on_open: on_open,
            _on_link_state: on_link_state,
        };
        let pc = &link.pc;

        let offer = JsFuture::from(pc.create_offer())
            .await
            .map_err(|e| js_err("createOffer", e))?;
        let offer_sdp = Reflect::get(&offer, &"sdp".into())
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_default();
        let local = RtcSessionDescriptionInit::new(RtcSdpType::Offer);
        local.set_sdp(&offer_sdp);
        JsFuture::from(pc.set_local_description(&local))
            .await
            .map_err(|e| js_err("setLocalDescription", e))?;
        // No trickle: wait (bounded) until every candidate is in the local description.
        for _ in 0..250 {
            if pc.ice_gathering_state() == RtcIceGatheringState::Complete {
                break;
            }
            TimeoutFuture::new(20).await;
        }
        let sdp = pc.local_description().map(|d| d.sdp()).unwrap_or(offer_sdp);
        let answer = post_offer(&format!("{base}/api/v1/rtc/offer"), &sdp).await?;
        // Read before the answer is applied: a description naming no single certificate
        // is refused before any connection is made with it.
        let binding = ChannelBinding::from_descriptions(&sdp, &answer)
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        let remote = RtcSessionDescriptionInit::new(RtcSdpType::Answer);
        remote.set_sdp(&answer);
        JsFuture::from(pc.set_remote_description(&remote))
            .await
            .map_err(|e| js_err("setRemoteDescription", e))?;
        let opened = futures::future::select(open_rx, TimeoutFuture::new(15_000)).await;
        if !matches!(opened, futures::future::Either::Left((Ok(()), _))) {
            return Err(TransportError::Connect(
                "the data channel did not open within 15 s".into(),
            ));
        }
        let kind = super::web_ice::transport_kind(&link.pc).await;
        Ok(Self {
            link,
            rx,
            binding: Binding::Dtls(binding),
            kind,
            closed,
        })
    }
}

impl Transport for WebTransport {
    async fn send(&self, frame: Vec<u8>) -> Result<(), TransportError> {
        let dc = &self.link.dc;
        if self.closed.get() {
            return Err(TransportError::Closed);
        }
        while dc.buffered_amount() > HIGH_WATER {
            if self.closed.get() || dc.ready_state() != RtcDataChannelState::Open {
                return Err(TransportError::Closed);
            }
            TimeoutFuture::new(5).await;
        }
        dc.send_with_u8_array(&frame)
            .map_err(|_| TransportError::Closed)
    }

    async fn recv(&mut self) -> Option<Vec<u8>> {
        self.rx.next().await
    }

    fn binding(&self) -> &Binding {
        &self.binding
    }

    fn kind(&self) -> TransportKind {
        self.kind
    }
}

/// Milliseconds on the page's monotonic clock (`performance.now()`).
pub fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map_or_else(js_sys::Date::now, |p| p.now())
}

/// What this device remembered under `key` (`localStorage`, kept across visits; in a
/// widget's frame, per embedding site, as the browser partitions it).
pub fn remembered(key: &str) -> Option<String> {
    web_sys::window()
        .and_then(|w| w.local_storage().ok().flatten())
        .and_then(|s| s.get_item(key).ok().flatten())
}

/// Remembers `value` under `key`; where storage is unavailable (private mode), the device
/// just tries again next visit.
pub fn remember(key: &str, value: &str) {
    if let Some(storage) = web_sys::window().and_then(|w| w.local_storage().ok().flatten()) {
        let _ = storage.set_item(key, value);
    }
}
