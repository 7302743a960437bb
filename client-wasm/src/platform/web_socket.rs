//! The browser's WebSocket to the relay (`/api/v1/ws`), for networks where the WebRTC
//! data channel cannot open (UDP blocked, no TURN), and [`WebRelay`], which tries WebRTC
//! first and falls back to it.

use crate::platform::web::WebTransport;
use crate::{Transport, TransportChoice, TransportError, TransportKind, WEBRTC_FALLBACK_AFTER};
use futures::channel::{mpsc, oneshot};
use futures::future::{select, Either};
use futures::StreamExt;
use gloo_timers::future::TimeoutFuture;
use js_sys::Uint8Array;
use starling_protocol::{Binding, ChallengeBinding, Reassembler, ToVolunteer};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{BinaryType, MessageEvent, WebSocket};

/// Bytes queued in the browser before `send` waits, as on the data channel.
const HIGH_WATER: u32 = 4 * 1024 * 1024;
/// How long the socket has to open and the relay to send its challenge.
const OPEN_TIMEOUT_MS: u32 = 15_000;
/// The relay's challenge is a few dozen bytes; nothing bigger is read before it.
const CHALLENGE_MAX_BYTES: usize = 1024;

/// A WebSocket to the relay, owned by the page.
pub struct WebSocketTransport {
    socket: WebSocket,
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    binding: Binding,
    // Kept alive for as long as the socket: the browser calls them.
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(JsValue)>,
    _on_open: Closure<dyn FnMut(JsValue)>,
}

/// The WebSocket URL for the relay at `base` (`""`: the page's own origin) and the host
/// the hello signs.
fn websocket_url(base: &str) -> Result<(String, String), TransportError> {
    let (scheme, host, path) = if base.is_empty() {
        let location = web_sys::window()
            .ok_or_else(|| TransportError::Connect("no window".into()))?
            .location();
        let protocol = location.protocol().unwrap_or_default();
        let host = location.host().unwrap_or_default();
        let scheme = if protocol == "https:" { "wss" } else { "ws" };
        (scheme, host, String::new())
    } else {
        let (scheme, rest) = if let Some(rest) = base.strip_prefix("https://") {
            ("wss", rest)
        } else if let Some(rest) = base.strip_prefix("http://") {
            ("ws", rest)
        } else {
            return Err(TransportError::Connect(format!(
                "the relay's URL {base:?} is not http:// or https://"
            )));
        };
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let path = path.trim_end_matches('/');
        let path = if path.is_empty() {
            String::new()
        } else {
            format!("/{path}")
        };
        (scheme, host.to_owned(), path)
    };
    Ok((format!("{scheme}://{host}{path}/api/v1/ws"), host))
}

impl WebSocketTransport {
    /// Opens `/api/v1/ws` on the relay at `base` and reads its challenge.
    pub async fn connect(base: &str) -> Result<Self, TransportError> {
        let (url, host) = websocket_url(base)?;
        let socket = WebSocket::new(&url)
            .map_err(|e| TransportError::Connect(format!("WebSocket {url}: {e:?}")))?;
        socket.set_binary_type(BinaryType::Arraybuffer);
        let (tx, mut rx) = mpsc::unbounded();
        let on_message = {
            let tx = tx.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
                // Text is not the protocol: dropped, as a frame the relay never sends.
                if ev.data().is_instance_of::<js_sys::ArrayBuffer>() {
                    let _ = tx.unbounded_send(Uint8Array::new(&ev.data()).to_vec());
                }
            })
        };
        socket.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        // Sent on open; dropped unsent when the socket closes first (a relay that is down
        // refuses at once), so the wait below ends then too rather than at its timeout.
        let (open_tx, open_rx) = oneshot::channel::<()>();
        let open_tx = Rc::new(RefCell::new(Some(open_tx)));
        let on_open = {
            let open_tx = open_tx.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |_| {
                if let Some(tx) = open_tx.borrow_mut().take() {
                    let _ = tx.send(());
                }
            })
        };
        socket.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        let on_close = Closure::<dyn FnMut(JsValue)>::new(move |_| {
            open_tx.borrow_mut().take();
            tx.close_channel();
        });
        socket.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        let challenge = read_challenge(&url, open_rx, &mut rx).await;
        let challenge = match challenge {
            Ok(challenge) => challenge,
            Err(e) => {
                // The handlers go with this function's closures: unhook them first.
                socket.set_onmessage(None);
                socket.set_onopen(None);
                socket.set_onclose(None);
                let _ = socket.close();
                return Err(e);
            }
        };
        Ok(Self {
            socket,
            rx,
            binding: Binding::Challenge(ChallengeBinding::new(challenge, &host)),
            _on_message: on_message,
            _on_close: on_close,
            _on_open: on_open,
        })
    }
}

/// Waits for the socket to open, then for the relay's challenge, its first message.
async fn read_challenge(
    url: &str,
    open_rx: oneshot::Receiver<()>,
    rx: &mut mpsc::UnboundedReceiver<Vec<u8>>,
) -> Result<[u8; starling_protocol::CHALLENGE_BYTES], TransportError> {
    match select(open_rx, TimeoutFuture::new(OPEN_TIMEOUT_MS)).await {
        Either::Left((Ok(()), _)) => {}
        Either::Left((Err(_), _)) => {
            return Err(TransportError::Connect(format!(
                "the WebSocket {url} closed before it opened"
            )))
        }
        Either::Right(_) => {
            return Err(TransportError::Connect(format!(
                "the WebSocket {url} did not open within {} s",
                OPEN_TIMEOUT_MS / 1000
            )))
        }
    }
    let mut reassembler = Reassembler::new(CHALLENGE_MAX_BYTES);
    loop {
        let frame = match select(rx.next(), TimeoutFuture::new(OPEN_TIMEOUT_MS)).await {
            Either::Left((Some(frame), _)) => frame,
            Either::Left((None, _)) => {
                return Err(TransportError::Connect(format!(
                    "the relay closed the WebSocket {url} (is it over its peer limits?)"
                )))
            }
            Either::Right(_) => {
                return Err(TransportError::Connect(format!("no challenge from {url}")))
            }
        };
        match reassembler.push_message(&frame) {
            Ok(Some(ToVolunteer::Challenge { challenge })) => return Ok(challenge),
            Ok(Some(ToVolunteer::Refused { reason })) => {
                return Err(TransportError::Connect(format!("refused: {reason}")))
            }
            Ok(Some(_)) => {
                return Err(TransportError::Connect(format!(
                    "{url} sent no challenge first"
                )))
            }
            Ok(None) => {}
            Err(e) => return Err(TransportError::Connect(format!("{url}: {e}"))),
        }
    }
}

impl Transport for WebSocketTransport {
    async fn send(&self, frame: Vec<u8>) -> Result<(), TransportError> {
        while self.socket.buffered_amount() > HIGH_WATER {
            if self.socket.ready_state() != WebSocket::OPEN {
                return Err(TransportError::Closed);
            }
            TimeoutFuture::new(5).await;
        }
        self.socket
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
        TransportKind::WebSocket
    }
}

impl Drop for WebSocketTransport {
    fn drop(&mut self) {
        let _ = self.socket.close();
    }
}

/// The page's connection to the relay: WebRTC, or the WebSocket it fell back to.
pub enum WebRelay {
    /// A data channel.
    WebRtc(WebTransport),
    /// The WebSocket fallback.
    WebSocket(WebSocketTransport),
}

impl WebRelay {
    /// Connects to the relay at `base` (`""` for the page's own origin): WebRTC, or the
    /// WebSocket if the data channel has not opened within [`WEBRTC_FALLBACK_AFTER`].
    pub async fn connect(base: &str) -> Result<Self, TransportError> {
        Self::connect_with(base, TransportChoice::Auto).await
    }

    /// Connects over the transport `choice` names.
    pub async fn connect_with(base: &str, choice: TransportChoice) -> Result<Self, TransportError> {
        match choice {
            TransportChoice::WebRtc => WebTransport::connect(base).await.map(Self::WebRtc),
            TransportChoice::WebSocket => {
                WebSocketTransport::connect(base).await.map(Self::WebSocket)
            }
            TransportChoice::Auto => {
                let fallback_ms = WEBRTC_FALLBACK_AFTER.as_millis() as u32;
                let webrtc = std::pin::pin!(WebTransport::connect(base));
                match select(webrtc, TimeoutFuture::new(fallback_ms)).await {
                    Either::Left((Ok(transport), _)) => Ok(Self::WebRtc(transport)),
                    Either::Left((Err(e), _)) => {
                        web_sys::console::info_1(
                            &format!("WebRTC failed ({e}); falling back to the WebSocket").into(),
                        );
                        WebSocketTransport::connect(base).await.map(Self::WebSocket)
                    }
                    Either::Right(_) => {
                        web_sys::console::info_1(
                            &format!(
                                "no WebRTC channel within {} s; falling back to the WebSocket",
                                fallback_ms / 1000
                            )
                            .into(),
                        );
                        WebSocketTransport::connect(base).await.map(Self::WebSocket)
                    }
                }
            }
        }
    }
}

impl Transport for WebRelay {
    async fn send(&self, frame: Vec<u8>) -> Result<(), TransportError> {
        match self {
            Self::WebRtc(t) => t.send(frame).await,
            Self::WebSocket(t) => t.send(frame).await,
        }
    }

    async fn recv(&mut self) -> Option<Vec<u8>> {
        match self {
            Self::WebRtc(t) => t.recv().await,
            Self::WebSocket(t) => t.recv().await,
        }
    }

    fn binding(&self) -> &Binding {
        match self {
            Self::WebRtc(t) => t.binding(),
            Self::WebSocket(t) => t.binding(),
        }
    }

    fn kind(&self) -> TransportKind {
        match self {
            Self::WebRtc(t) => t.kind(),
            Self::WebSocket(t) => t.kind(),
        }
    }
}
