//! The relay's REST API as the pages use it: JSON over `fetch`, same origin, decoded
//! into `starling_api`'s types, plus the few browser storages the pages keep settings in.

use serde::de::DeserializeOwned;
use starling_api::Problem;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// A relay answer: its status and body.
#[derive(Clone, Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The body as it came.
    pub text: String,
}

impl Reply {
    /// 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A 2xx answer's body as `T`; otherwise what went wrong, as [`Reply::problem`].
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, String> {
        if !self.ok() {
            return Err(self.problem());
        }
        serde_json::from_str(&self.text)
            .map_err(|e| format!("unexpected answer from the relay: {e}"))
    }

    /// The relay's problem+json body, when it sent one.
    pub fn problem_body(&self) -> Option<Problem> {
        serde_json::from_str::<Problem>(&self.text).ok()
    }

    /// The problem's `detail` (RFC 9457), or the raw body.
    pub fn problem(&self) -> String {
        serde_json::from_str::<Problem>(&self.text)
            .map(|problem| problem.detail)
            .unwrap_or_else(|_| format!("HTTP {}: {}", self.status, self.text))
    }
}

fn js_text(e: JsValue) -> String {
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

/// Sends a request; `body` is JSON text or a `FormData`.
pub async fn request(
    method: &str,
    url: &str,
    body: Option<&JsValue>,
    json_body: bool,
    api_key: Option<&str>,
) -> Result<Reply, String> {
    let response = send(method, url, body, json_body, api_key).await?;
    let text = JsFuture::from(response.text().map_err(js_text)?)
        .await
        .map_err(js_text)?
        .as_string()
        .unwrap_or_default();
    Ok(Reply {
        status: response.status(),
        text,
    })
}

/// `GET url` with the API key, its body kept as a blob behind an object URL (for an
/// image or a download of something only the key may read). Revoke it when done.
pub async fn object_url(url: &str, api_key: &str) -> Result<String, String> {
    let response = send("GET", url, None, false, Some(api_key)).await?;
    if !response.ok() {
        return Err(format!("HTTP {}", response.status()));
    }
    let blob: web_sys::Blob = JsFuture::from(response.blob().map_err(js_text)?)
        .await
        .map_err(js_text)?
        .dyn_into()
        .map_err(js_text)?;
    web_sys::Url::create_object_url_with_blob(&blob).map_err(js_text)
}

async fn send(
    method: &str,
    url: &str,
    body: Option<&JsValue>,
    json_body: bool,
    api_key: Option<&str>,
) -> Result<web_sys::Response, String> {
    let window = web_sys::window().ok_or("no window")?;
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    let headers = web_sys::Headers::new().map_err(js_text)?;
    headers.set("accept", "application/json").map_err(js_text)?;
    if json_body {
        headers
            .set("content-type", "application/json")
            .map_err(js_text)?;
    }
    if let Some(key) = api_key.filter(|k| !k.is_empty()) {
        headers
            .set("authorization", &format!("Bearer {key}"))
            .map_err(|_| "the API key holds characters a header cannot carry".to_owned())?;
    }
    init.set_headers(&headers);
    if let Some(body) = body {
        init.set_body(body);
    }
    let request = web_sys::Request::new_with_str_and_init(url, &init).map_err(js_text)?;
    JsFuture::from(window.fetch_with_request(&request))
        .await
        .map_err(|e| format!("the relay cannot be reached: {}", js_text(e)))?
        .dyn_into()
        .map_err(js_text)
}

/// `GET url` as JSON.
pub async fn get(url: &str) -> Result<Reply, String> {
    request("GET", url, None, false, None).await
}

fn session_storage() -> Option<web_sys::Storage> {
    web_sys::window().and_then(|w| w.session_storage().ok().flatten())
}

fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window().and_then(|w| w.local_storage().ok().flatten())
}

/// A value kept for this tab only (the submitter's API key).
pub fn session_get(key: &str) -> Option<String> {
    session_storage().and_then(|s| s.get_item(key).ok().flatten())
}

/// Keeps a value for this tab only; an empty value removes it.
pub fn session_set(key: &str, value: &str) {
    if let Some(s) = session_storage() {
        let _ = if value.is_empty() {
            s.remove_item(key)
        } else {
            s.set_item(key, value)
        };
    }
}

/// A value kept across visits (settings).
pub fn local_get(key: &str) -> Option<String> {
    local_storage().and_then(|s| s.get_item(key).ok().flatten())
}

/// Keeps a value across visits.
pub fn local_set(key: &str, value: &str) {
    if let Some(s) = local_storage() {
        let _ = s.set_item(key, value);
    }
}

/// A query parameter of the page's URL.
pub fn query_param(name: &str) -> Option<String> {
    let search = web_sys::window()?.location().search().ok()?;
    web_sys::UrlSearchParams::new_with_str(&search)
        .ok()?
        .get(name)
}

/// The origin of the page this one is embedded in, as the browser reports it: the
/// nearest ancestor in `location.ancestorOrigins` (Chromium, Safari), else the origin of
/// `document.referrer` (Firefox; empty under a `no-referrer` policy). The embedding page
/// cannot forge either, so the widget's site claim names where it really runs.
pub fn embedding_origin() -> Option<String> {
    let window = web_sys::window()?;
    let ancestors = js_sys::Reflect::get(&window.location(), &JsValue::from_str("ancestorOrigins"))
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null());
    if let Some(list) = ancestors {
        if let Some(first) = js_sys::Reflect::get(&list, &JsValue::from_f64(0.0))
            .ok()
            .and_then(|v| v.as_string())
        {
            return Some(first);
        }
    }
    let referrer = window.document()?.referrer();
    if referrer.is_empty() {
        return None;
    }
    web_sys::Url::new(&referrer).ok().map(|u| u.origin())
}

/// Copies text to the clipboard (best effort: needs a secure context).
pub fn copy(text: &str) {
    if let Some(w) = web_sys::window() {
        let _ = w.navigator().clipboard().write_text(text);
    }
}

/// Offers `text` as a file download named `name`.
pub fn download_text(name: &str, text: &str) -> Result<(), String> {
    let parts = js_sys::Array::of1(&JsValue::from_str(text));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type("text/plain");
    let blob =
        web_sys::Blob::new_with_str_sequence_and_options(&parts, &options).map_err(js_text)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(js_text)?;
    let document = web_sys::window()
        .and_then(|w| w.document())
        .ok_or("no document")?;
    let a = document.create_element("a").map_err(js_text)?;
    a.set_attribute("href", &url).map_err(js_text)?;
    a.set_attribute("download", name).map_err(js_text)?;
    if let Some(a) = a.dyn_ref::<web_sys::HtmlElement>() {
        a.click();
    }
    let _ = web_sys::Url::revoke_object_url(&url);
    Ok(())
}
