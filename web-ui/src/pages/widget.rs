//! The compact view embedded by `public/widget.js` on other sites: no nav, nothing
//! computed before the visitor presses Start, the choice remembered per site, and a
//! visible one-click Stop while work runs.

use crate::net;
use crate::pages::volunteer::{Controls, Session};
use leptos::prelude::*;
use starling_protocol::{SiteClaim, WalletAddress};
use std::str::FromStr;

/// The widget page (`/widget?site=ADDR&intensity=0.3`).
#[component]
pub fn WidgetPage() -> impl IntoView {
    let session = use_context::<Session>().unwrap_or_default();
    let raw_site = net::query_param("site").filter(|s| !s.is_empty());
    let site = raw_site
        .as_deref()
        .and_then(|s| WalletAddress::from_str(s).ok());
    let bad_site = raw_site.is_some() && site.is_none();
    // The relay pays the site only if its owner registered this wallet for the origin the
    // browser says embeds us; without an origin there is nothing to check, so no site.
    let site = site
        .zip(net::embedding_origin())
        .map(|(wallet, origin)| SiteClaim { wallet, origin });
    if let Some(i) = net::query_param("intensity").and_then(|v| v.parse::<f64>().ok()) {
        session.update(|s| s.intensity = i.clamp(0.1, 1.0));
    }
    let remember_key = format!(
        "starling.widget.{}",
        raw_site.clone().unwrap_or_else(|| "none".to_owned())
    );
    // The visitor said yes on this site before: start again (they can stop at once).
    let remembered = net::local_get(&remember_key).as_deref() == Some("on");
    let key = remember_key.clone();
    Effect::new(move |_| {
        // Remember the visitor's choice: running means they pressed Start here.
        match session.phase.get() {
            crate::pages::volunteer::Phase::Working => net::local_set(&key, "on"),
            crate::pages::volunteer::Phase::Idle if session.units.get_untracked() > 0 => {
                net::local_set(&key, "off")
            }
            _ => {}
        }
    });
    if remembered {
        let site = site.clone();
        Effect::new(move |started: Option<bool>| {
            if started == Some(true) {
                return true;
            }
            if session.device.get().is_some() && !session.running() {
                session.start(site.clone());
                return true;
            }
            false
        });
    }
    let stop_key = remember_key;
    view! {
        <main class="widget" on:click=move |e: leptos::ev::MouseEvent| {
            // Pressing Stop forgets the choice for this site.
            if let Some(t) = e.target() {
                use wasm_bindgen::JsCast;
                if t.dyn_ref::<web_sys::Element>().and_then(|el| el.get_attribute("data-testid")).as_deref() == Some("stop") {
                    net::local_set(&stop_key, "off");
                }
            }
        }>
            <h1 class="widget-title">
                <span class="logo" aria-hidden="true">"✦"</span>
                <strong>"Starling"</strong>
                <span class="hint">"Lend your GPU to support this site"</span>
            </h1>
            {bad_site.then(|| view! {
                <p class="note" data-testid="site-note">"This site's wallet address is invalid: work would credit only you."</p>
            })}
            <Controls session=session site=site full=false />
            <p class="hint" data-testid="device">
                {move || match session.device.get() {
                    None => "Detecting…".to_owned(),
                    Some(d) if d.backend == "cpu" => "CPU fallback".to_owned(),
                    Some(d) => format!("WebGPU: {}", d.adapter),
                }}
            </p>
            <p class="hint" data-testid="widget-units">
                {move || format!("{} units computed · {} GFLOP/s", session.units.get(), session.gflops())}
            </p>
        </main>
    }
}
