//! The browser's ICE setup: the STUN and TURN servers the relay advertises
//! (`GET /api/v1/rtc/ice-servers`), the relay-only knob, and which path the connection
//! took once it is up (read from `getStats()`'s selected candidate pair).
//!
//! `?ice=relay` in the page's address sets `iceTransportPolicy: "relay"`: the browser
//! then offers only TURN-relayed candidates, so the connection either goes through the
//! relay's TURN server or fails. It is for tests and for checking a TURN setup; nobody
//! needs it to volunteer.

use crate::{TransportError, TransportKind};
use js_sys::{Function, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{RtcConfiguration, RtcPeerConnection};

/// Largest ice-servers answer read: a few servers with credentials are a few hundred
/// bytes.
const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// Whether the page's address asks for relayed candidates only (`?ice=relay`).
pub fn relay_only_requested() -> bool {
    web_sys::window()
        .and_then(|w| w.location().search().ok())
        .and_then(|q| web_sys::UrlSearchParams::new_with_str(&q).ok())
        .and_then(|p| p.get("ice"))
        .is_some_and(|v| v == "relay")
}

/// The peer connection's configuration: the relay's ICE servers (none if it advertises
/// none or cannot say), and the relay-only policy when `relay_only`.
pub async fn configuration(
    base: &str,
    relay_only: bool,
) -> Result<RtcConfiguration, TransportError> {
    let servers = match ice_servers(&format!("{base}/api/v1/rtc/ice-servers")).await {
        Ok(servers) => servers,
        // An older relay, or a rate limit: host candidates still reach a relay that is
        // not behind a NAT, so this is not worth failing for, unless TURN is required.
        Err(why) if !relay_only => {
            web_sys::console::warn_1(&format!("no ICE servers from the relay: {why}").into());
            js_sys::Array::new()
        }
        Err(why) => {
            return Err(TransportError::Connect(format!(
                "?ice=relay needs the relay's TURN servers: {why}"
            )))
        }
    };
    if relay_only && servers.length() == 0 {
        return Err(TransportError::Connect(
            "?ice=relay asks for a TURN path, and this relay advertises no TURN server".into(),
        ));
    }
    let config = RtcConfiguration::new();
    set(&config, "iceServers", &servers)?;
    if relay_only {
        set(&config, "iceTransportPolicy", &"relay".into())?;
    }
    Ok(config)
}

fn set(target: &JsValue, key: &str, value: &JsValue) -> Result<(), TransportError> {
    Reflect::set(target, &key.into(), value)
        .map(|_| ())
        .map_err(|e| TransportError::Connect(format!("RTCConfiguration.{key}: {e:?}")))
}

/// The `ice_servers` array of the relay's answer: `RTCIceServer` dictionaries as they are.
async fn ice_servers(url: &str) -> Result<js_sys::Array, String> {
    let window = web_sys::window().ok_or("no window")?;
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str(url))
        .await
        .map_err(|e| format!("{e:?}"))?
        .dyn_into()
        .map_err(|e| format!("{e:?}"))?;
    if !response.ok() {
        return Err(format!("GET {url} answered {}", response.status()));
    }
    let text = JsFuture::from(response.text().map_err(|e| format!("{e:?}"))?)
        .await
        .map_err(|e| format!("{e:?}"))?
        .as_string()
        .unwrap_or_default();
    if text.len() > MAX_ANSWER_BYTES {
        return Err(format!("the answer is over {MAX_ANSWER_BYTES} bytes"));
    }
    let json = js_sys::JSON::parse(&text).map_err(|e| format!("not JSON: {e:?}"))?;
    Reflect::get(&json, &"ice_servers".into())
        .ok()
        .and_then(|servers| servers.dyn_into::<js_sys::Array>().ok())
        .ok_or_else(|| "the answer has no ice_servers list".to_owned())
}

/// Which path the open connection took: TURN when either end of the selected candidate
/// pair is a relayed candidate, TCP when it is a TCP pair. `WebRtc` when the browser's
/// statistics do not say.
pub async fn transport_kind(pc: &RtcPeerConnection) -> TransportKind {
    match selected_pair(pc).await {
        Some(pair) if pair.local_type == "relay" || pair.remote_type == "relay" => {
            TransportKind::WebRtcTurn
        }
        Some(pair) if pair.protocol == "tcp" => TransportKind::WebRtcTcp,
        Some(_) => TransportKind::WebRtcDirect,
        None => TransportKind::WebRtc,
    }
}

/// What the selected candidate pair is made of.
struct SelectedPair {
    /// This end's candidate type: `host`, `srflx`, `prflx` or `relay`.
    local_type: String,
    /// The other end's.
    remote_type: String,
    /// `udp` or `tcp`, between this end and the other (or its TURN server).
    protocol: String,
}

/// The selected candidate pair's candidate types and protocol.
async fn selected_pair(pc: &RtcPeerConnection) -> Option<SelectedPair> {
    let report = JsFuture::from(pc.get_stats()).await.ok()?;
    let values = Reflect::get(&report, &"values".into())
        .ok()?
        .dyn_into::<Function>()
        .ok()?
        .call0(&report)
        .ok()?;
    let stats: Vec<JsValue> = js_sys::try_iter(&values)
        .ok()??
        .filter_map(Result::ok)
        .collect();
    let field = |stat: &JsValue, key: &str| {
        Reflect::get(stat, &key.into())
            .ok()
            .and_then(|v| v.as_string())
    };
    let by_id = |id: &str| stats.iter().find(|s| field(s, "id").as_deref() == Some(id));
    // The transport names its selected pair (the standard way); a succeeded, nominated
    // pair stands in where it does not.
    let pair = stats
        .iter()
        .filter(|s| field(s, "type").as_deref() == Some("transport"))
        .find_map(|t| field(t, "selectedCandidatePairId"))
        .and_then(|id| by_id(&id))
        .or_else(|| {
            stats.iter().find(|s| {
                field(s, "type").as_deref() == Some("candidate-pair")
                    && field(s, "state").as_deref() == Some("succeeded")
                    && Reflect::get(s, &"nominated".into())
                        .ok()
                        .and_then(|v| v.as_bool())
                        == Some(true)
            })
        })?;
    let local = by_id(&field(pair, "localCandidateId")?)?;
    let remote = by_id(&field(pair, "remoteCandidateId")?)?;
    Some(SelectedPair {
        local_type: field(local, "candidateType")?,
        remote_type: field(remote, "candidateType")?,
        protocol: field(local, "protocol").unwrap_or_default(),
    })
}
