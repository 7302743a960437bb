//! Browser transport: an `RTCDataChannel` opened with non-trickle signaling over fetch.

use crate::{Transport, TransportError, TransportKind};
use futures::channel::{mpsc, oneshot};
use futures::StreamExt;
use gloo_timers::future::TimeoutFuture;
use js_sys::{Reflect, Uint8Array};
use starling_protocol::{Binding, ChannelBinding};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MessageEvent, RtcDataChannel, RtcDataChannelInit, RtcDataChannelState, RtcDataChannelType,
    RtcIceGatheringState, RtcPeerConnection, RtcSdpType, RtcSessionDescriptionInit,
};

/// Bytes queued in the browser before `send` waits; keeps memory bounded on big outputs.
const HIGH_WATER: u32 = 4 * 1024 * 1024;

/// A data channel to the relay, owned by the page.
pub struct WebTransport {
    pc: RtcPeerConnection,
    dc: RtcDataChannel,
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    binding: Binding,
    // Kept alive for as long as the channel: the browser calls them.
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(JsValue)>,
    _on_open: Closure<dyn FnMut(JsValue)>,
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
    /// Signals through the relay at `base` (e.g. `""` for the page's own origin).
    pub async fn connect(base: &str) -> Result<Self, TransportError> {
        let pc = RtcPeerConnection::new().map_err(|e| js_err("RTCPeerConnection", e))?;
        // Closed if this future is dropped before the channel opens (the WebSocket
        // fallback gives up on it), so no connection lingers checking candidates.
        let mut unopened = CloseUnopened(Some(pc.clone()));
        let init = RtcDataChannelInit::new();
        init.set_ordered(true);
        let dc = pc.create_data_channel_with_data_channel_dict("starling", &init);
        dc.set_binary_type(RtcDataChannelType::Arraybuffer);

        let (tx, rx) = mpsc::unbounded();
        let on_message = {
            let tx = tx.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
                let bytes = Uint8Array::new(&ev.data()).to_vec();
                // Fails only after the transport is gone; nothing is waiting then.
                let _ = tx.unbounded_send(bytes);
            })
        };
        dc.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        let on_close = Closure::<dyn FnMut(JsValue)>::new(move |_| tx.close_channel());
        dc.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        let (open_tx, open_rx) = oneshot::channel::<()>();
        let mut open_tx = Some(open_tx);
        let on_open = Closure::<dyn FnMut(JsValue)>::new(move |_| {
            if let Some(tx) = open_tx.take() {
                let _ = tx.send(());
            }
        });
        dc.set_onopen(Some(on_open.as_ref().unchecked_ref()));

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
        let binding = ChannelBinding::from_descriptions(&sdp, &answer).map_err(|e| {
            pc.close();
            TransportError::Connect(e.to_string())
        })?;
        let remote = RtcSessionDescriptionInit::new(RtcSdpType::Answer);
        remote.set_sdp(&answer);
        JsFuture::from(pc.set_remote_description(&remote))
            .await
            .map_err(|e| js_err("setRemoteDescription", e))?;
        let opened = futures::future::select(open_rx, TimeoutFuture::new(15_000)).await;
        if !matches!(opened, futures::future::Either::Left((Ok(()), _))) {
            pc.close();
            return Err(TransportError::Connect(
                "the data channel did not open within 15 s".into(),
            ));
        }
        unopened.0 = None;
        Ok(Self {
            pc,
            dc,
            rx,
            binding: Binding::Dtls(binding),
            _on_message: on_message,
            _on_close: on_close,
            _on_open: on_open,
        })
    }
}

impl Transport for WebTransport {
    async fn send(&self, frame: Vec<u8>) -> Result<(), TransportError> {
        while self.dc.buffered_amount() > HIGH_WATER {
            if self.dc.ready_state() != RtcDataChannelState::Open {
                return Err(TransportError::Closed);
            }
            TimeoutFuture::new(5).await;
        }
        self.dc
            .send_with_u8_array(&frame)
            .map_err(|_| TransportError::Closed)
    }

    async fn recv(&mut self) -> Option<Vec<u8>> {
        self.rx.next().await
    }

    fn binding(&self) -> &Binding {
        &self.binding
    }

    fn kind(&self) -> TransportKind {
        TransportKind::WebRtcDirect
    }
}

/// Closes a peer connection on drop unless emptied first: the one being opened.
struct CloseUnopened(Option<RtcPeerConnection>);

impl Drop for CloseUnopened {
    fn drop(&mut self) {
        if let Some(pc) = self.0.take() {
            pc.close();
        }
    }
}

impl Drop for WebTransport {
    fn drop(&mut self) {
        self.dc.close();
        self.pc.close();
    }
}
