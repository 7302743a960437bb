//! A visitor's yes to the widget on one site, remembered with the time it was given so
//! that it lapses: a remembered yes restarts work unseen-by-default on the next visit,
//! so it must not last forever, and the volunteer page can forget them all.
//!
//! Records are `localStorage` items `starling.consent.ORIGIN.WALLET` holding the time of
//! the yes in ms since the epoch, always in the relay origin's own (first-party) storage,
//! which the volunteer page also reads: that is what lets it withdraw every yes at once.
//! Inside another site's frame the browser partitions storage per top-level site, so a
//! card there remembers only through the Storage Access API (`requestStorageAccess` with
//! `localStorage`, Chromium 125 and later), asked for when the visitor presses Start;
//! where the browser refuses, the yes lasts for that visit only. The origin is part of
//! the key because every site's records share that one storage.

/// How long a yes lasts without being given again.
pub const CONSENT_DAYS: f64 = 30.0;

const DAY_MS: f64 = 24.0 * 60.0 * 60.0 * 1000.0;

/// Every record's key starts with this.
pub const KEY_PREFIX: &str = "starling.consent.";

/// The key of the record for `wallet` (as the page named it) on `origin`.
pub fn key(origin: Option<&str>, wallet: Option<&str>) -> String {
    format!(
        "{KEY_PREFIX}{}.{}",
        origin.unwrap_or("none"),
        wallet.unwrap_or("none")
    )
}

/// Whether a stored record still counts at `now_ms`: a time within the last
/// [`CONSENT_DAYS`]. Anything else (the old "on", a time in the future, garbage) does not.
pub fn honoured(record: Option<&str>, now_ms: f64) -> bool {
    let Some(given) = record.and_then(|r| r.trim().parse::<f64>().ok()) else {
        return false;
    };
    given.is_finite() && given <= now_ms && now_ms - given < CONSENT_DAYS * DAY_MS
}

#[cfg(target_arch = "wasm32")]
mod store {
    use super::{honoured, KEY_PREFIX};
    use js_sys::{Function, Object, Reflect};
    use std::cell::RefCell;
    use wasm_bindgen::{JsCast, JsValue};

    thread_local! {
        /// The relay origin's own storage, reached from a frame on another site.
        static FIRST_PARTY: RefCell<Option<web_sys::Storage>> = const { RefCell::new(None) };
    }

    fn top_level() -> bool {
        let Some(window) = web_sys::window() else {
            return false;
        };
        match window.top() {
            Ok(Some(top)) => Object::is(top.as_ref(), window.as_ref()),
            _ => false,
        }
    }

    /// The storage every yes lives in: the window's own at top level (the relay's pages);
    /// in a frame, the first-party storage [`reach`] obtained, else none at all, never the
    /// frame's partitioned storage, which the volunteer page could not clear.
    fn storage() -> Option<web_sys::Storage> {
        if top_level() {
            web_sys::window().and_then(|w| w.local_storage().ok().flatten())
        } else {
            FIRST_PARTY.with(|s| s.borrow().clone())
        }
    }

    /// Whether a yes given here can be remembered where the volunteer page can withdraw
    /// it, asking the browser for the relay origin's own storage when in a frame. Called
    /// on the visitor's Start (a user activation, which the browser may need to ask the
    /// person) and silently when the card loads (which succeeds only if the browser has
    /// already granted it).
    pub async fn reach() -> bool {
        if top_level() || FIRST_PARTY.with(|s| s.borrow().is_some()) {
            return true;
        }
        let Some(document) = web_sys::window().and_then(|w| w.document()) else {
            return false;
        };
        let Some(request) = Reflect::get(&document, &"requestStorageAccess".into())
            .ok()
            .and_then(|f| f.dyn_into::<Function>().ok())
        else {
            return false;
        };
        let options = Object::new();
        let _ = Reflect::set(&options, &"localStorage".into(), &JsValue::TRUE);
        let Ok(promise) = request.call1(&document, &options) else {
            return false;
        };
        let Ok(promise) = promise.dyn_into::<js_sys::Promise>() else {
            return false;
        };
        // Refused (no permission, no activation) or a browser that grants cookies only
        // (Firefox resolves with no handle): nothing to remember in.
        let Ok(handle) = wasm_bindgen_futures::JsFuture::from(promise).await else {
            return false;
        };
        let Some(storage) = Reflect::get(&handle, &"localStorage".into())
            .ok()
            .and_then(|s| s.dyn_into::<web_sys::Storage>().ok())
        else {
            return false;
        };
        FIRST_PARTY.with(|s| *s.borrow_mut() = Some(storage));
        true
    }

    /// Whether the record under `key` counts now.
    pub fn remembered(key: &str) -> bool {
        let record = storage().and_then(|s| s.get_item(key).ok().flatten());
        honoured(record.as_deref(), js_sys::Date::now())
    }

    /// Records a yes given now, where it can be withdrawn; nowhere otherwise.
    pub fn give(key: &str) {
        if let Some(s) = storage() {
            let _ = s.set_item(key, &js_sys::Date::now().to_string());
        }
    }

    /// Forgets the yes under `key`.
    pub fn withdraw(key: &str) {
        if let Some(s) = storage() {
            let _ = s.remove_item(key);
        }
    }

    /// Forgets every yes this storage holds; how many there were.
    pub fn withdraw_all() -> u32 {
        let Some(s) = storage() else {
            return 0;
        };
        let count = s.length().unwrap_or(0);
        let keys: Vec<String> = (0..count)
            .filter_map(|i| s.key(i).ok().flatten())
            .filter(|k| k.starts_with(KEY_PREFIX))
            .collect();
        for k in &keys {
            let _ = s.remove_item(k);
        }
        u32::try_from(keys.len()).unwrap_or(u32::MAX)
    }
}

#[cfg(target_arch = "wasm32")]
pub use store::{give, reach, remembered, withdraw, withdraw_all};

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: f64 = 1_800_000_000_000.0;

    #[test]
    fn a_yes_lasts_thirty_days() {
        assert!(honoured(Some(&NOW.to_string()), NOW));
        assert!(honoured(Some(&(NOW - 29.0 * DAY_MS).to_string()), NOW));
        assert!(!honoured(Some(&(NOW - 30.0 * DAY_MS).to_string()), NOW));
        assert!(!honoured(Some(&(NOW - 400.0 * DAY_MS).to_string()), NOW));
    }

    #[test]
    fn a_record_without_a_time_is_no_yes() {
        for record in ["on", "", "NaN", "inf", "-inf", "1e400"] {
            assert!(!honoured(Some(record), NOW), "{record}");
        }
        assert!(!honoured(None, NOW));
        // A time in the future would never lapse.
        assert!(!honoured(Some(&(NOW + DAY_MS).to_string()), NOW));
    }

    #[test]
    fn keys_keep_sites_apart() {
        assert_ne!(
            key(Some("https://a.example"), Some("st1x")),
            key(Some("https://b.example"), Some("st1x"))
        );
        assert!(key(None, None).starts_with(KEY_PREFIX));
    }
}
