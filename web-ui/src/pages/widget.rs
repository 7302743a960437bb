//! The compact view embedded by `public/widget.js` on other sites: no nav, nothing
//! computed before the visitor presses Start, a visible one-click Stop while work runs.
//!
//! The host page controls how the frame looks, so the frame checks that the person can
//! see it (`runtime::watch_sight`, IntersectionObserver v2): Start counts only while the
//! frame is visible, work holds while it is not, and a remembered yes (`consent`, 30 days)
//! restarts work only once the frame is visible, saying so. Where the browser cannot tell
//! (no IntersectionObserver v2), Start happens in a window of the relay's own instead.

use crate::consent;
use crate::net;
use crate::pages::volunteer::{Controls, Phase, Session};
use crate::runtime::{self, Sight};
use leptos::prelude::*;
use starling_protocol::{SiteClaim, WalletAddress};
use std::str::FromStr;

/// How long the "Resumed" note stays after a remembered yes restarts work.
const RESUMED_NOTE_MS: u32 = 8_000;

/// Where the widget runs: a site's frame, or the relay's own consent window that a frame
/// opens where the browser cannot tell whether the frame is visible.
fn site_origin() -> Option<String> {
    if runtime::sight() == Sight::TopLevel && net::query_param("window").as_deref() == Some("1") {
        // The window names the site it was opened for; the relay pays the site only if
        // its owner registered this wallet for that origin, so a false name pays no one
        // it should not.
        return net::query_param("origin").filter(|o| !o.is_empty());
    }
    net::embedding_origin()
}

/// Asks `widget.js` on the host page to resize or remove the card (`minimise`,
/// `expand`, `close`). The host could do either on its own; this only lets the person.
fn tell_host(what: &str) {
    let Some(window) = web_sys::window() else {
        return;
    };
    if let Ok(Some(parent)) = window.parent() {
        let _ = parent.post_message(&format!("starling:{what}").into(), "*");
    }
}

/// The widget page (`/widget?site=ADDR&intensity=0.3`).
#[component]
pub fn WidgetPage() -> impl IntoView {
    let session = use_context::<Session>().unwrap_or_default();
    let sight = RwSignal::new(Sight::Unseen);
    sight.set(runtime::watch_sight(move |seen| sight.set(seen)));
    let raw_site = net::query_param("site").filter(|s| !s.is_empty());
    let site = raw_site
        .as_deref()
        .and_then(|s| WalletAddress::from_str(s).ok());
    let bad_site = raw_site.is_some() && site.is_none();
    let origin = site_origin();
    // The relay pays the site only if its owner registered this wallet for the origin the
    // browser says embeds us; without an origin there is nothing to check, so no site.
    let site = site
        .zip(origin.clone())
        .map(|(wallet, origin)| SiteClaim { wallet, origin });
    let intensity = net::query_param("intensity")
        .and_then(|v| v.parse::<f64>().ok())
        .map(|i| i.clamp(0.1, 1.0));
    if let Some(i) = intensity {
        session.update(|s| s.intensity = i);
    }
    let consent_key = StoredValue::new(consent::key(origin.as_deref(), raw_site.as_deref()));
    let site_name = origin
        .as_deref()
        .and_then(|o| o.split_once("://"))
        .map_or("this site", |(_, host)| host)
        .to_owned();
    let site_name_shown = StoredValue::new(site_name.clone());

    // Whether a yes can be remembered where the volunteer page can withdraw it (the relay
    // origin's own storage; in another site's frame only if the browser grants it), and
    // whether one is. Known once the silent ask below has answered.
    let memory = RwSignal::new(false);
    let remembered = RwSignal::new(false);
    leptos::task::spawn_local(async move {
        if consent::reach().await {
            memory.set(true);
            remembered.set(consent::remembered(&consent_key.get_value()));
        }
    });
    // A yes given here counts from a Start the runtime let through, which it does only
    // while the frame is visible; a session a remembered yes resumed renews nothing.
    let resumed_by_memory = RwSignal::new(false);
    Effect::new(move |_| {
        if session.phase.get() == Phase::Working
            && memory.get()
            && !resumed_by_memory.get_untracked()
        {
            consent::give(&consent_key.get_value());
        }
    });
    let resumed_note = RwSignal::new(false);
    {
        let site = site.clone();
        Effect::new(move |started: Option<bool>| {
            if started == Some(true) || !remembered.get() {
                return started == Some(true);
            }
            // Not before the person can see the card: a host that hides it gets nothing.
            // Never at top level: a host page can open the relay's window itself, behind
            // its own (a pop-under), where no one sees it; there a person presses Start.
            let seen = sight.get() == Sight::Visible;
            if seen && !session.running() {
                resumed_by_memory.set(true);
                resumed_note.set(true);
                session.start(site.clone());
                leptos::task::spawn_local(async move {
                    gloo_timers::future::TimeoutFuture::new(RESUMED_NOTE_MS).await;
                    resumed_note.set(false);
                });
                return true;
            }
            false
        });
    }
    // The visitor's Start, while the card is visibly theirs, is when the browser may ask
    // them whether the card may keep their choice.
    let ask_to_remember = move || {
        if !memory.get_untracked() && sight.get_untracked() == Sight::Visible {
            leptos::task::spawn_local(async move {
                if consent::reach().await {
                    memory.set(true);
                }
            });
        }
    };
    let forget_and_stop = move || {
        consent::withdraw(&consent_key.get_value());
        runtime::stop();
    };
    let minimised = RwSignal::new(false);
    let toggle_minimised = move |_| {
        minimised.update(|m| *m = !*m);
        tell_host(if minimised.get_untracked() {
            "minimise"
        } else {
            "expand"
        });
    };
    let close = move |_| {
        forget_and_stop();
        tell_host("close");
    };
    let window_url = {
        let mut url = format!(
            "/widget?window=1&site={}&origin={}",
            js_sys::encode_uri_component(raw_site.as_deref().unwrap_or("")),
            js_sys::encode_uri_component(origin.as_deref().unwrap_or("")),
        );
        if let Some(i) = intensity {
            url.push_str(&format!("&intensity={i}"));
        }
        url
    };
    view! {
        <main class="widget" on:click=move |e: leptos::ev::MouseEvent| {
            // Pressing Stop forgets the choice for this site; pressing Start may keep it.
            if let Some(t) = e.target() {
                use wasm_bindgen::JsCast;
                match t.dyn_ref::<web_sys::Element>().and_then(|el| el.get_attribute("data-testid")).as_deref() {
                    Some("stop") => consent::withdraw(&consent_key.get_value()),
                    // By the time the click reaches here, Start already reads Pause.
                    Some("start" | "pause") => ask_to_remember(),
                    _ => {}
                }
            }
        }>
            <div class="widget-title">
                <h1 class="widget-name">
                    <span class="logo" aria-hidden="true">"✦"</span>
                    <strong>"Starling"</strong>
                </h1>
                <span class="hint" data-testid="working-badge" hidden=move || !session.running()>"● working"</span>
                <span class="hint" hidden=move || minimised.get()>"Lend your GPU to support this site"</span>
                <span class="widget-actions">
                    <a href="/about-widget.html" target="_blank" rel="noopener" data-testid="what-is-this">"What is this?"</a>
                    <button class="secondary" data-testid="minimise" on:click=toggle_minimised aria-label="Minimise the Starling card" aria-expanded=move || (!minimised.get()).to_string()>"–"</button>
                    <button class="secondary" data-testid="close-card" on:click=close aria-label="Close Starling and stop">"×"</button>
                </span>
            </div>
            <div hidden=move || minimised.get()>
                <p class="note" data-testid="resumed" hidden=move || !(resumed_note.get() && session.running())>
                    {format!("Resumed: you started this on {site_name} · ")}
                    <button class="stop" data-testid="resumed-stop" on:click=move |_| forget_and_stop()>"Stop"</button>
                </p>
                {bad_site.then(|| view! {
                    <p class="note" data-testid="site-note">"This site's wallet address is invalid: work would credit only you."</p>
                })}
                <p class="note" data-testid="sight-note" hidden=move || sight.get() != Sight::Unknown>
                    "This browser cannot confirm the card is visible. "
                    <a data-testid="open-window" href=window_url target="_blank">"Open in a window"</a>
                </p>
                <Controls session=session site=site full=false />
                <p class="hint" data-testid="memory" hidden=move || !session.running()>
                    {move || if memory.get() {
                        format!("Remembered on {} for {} days", site_name_shown.get_value(), consent::CONSENT_DAYS)
                    } else {
                        "Not remembered: this browser keeps no choice here. Next visit, press Start again.".to_owned()
                    }}
                </p>
                <p class="hint" data-testid="sight">
                    {move || match sight.get() {
                        Sight::Visible | Sight::TopLevel => "Visible",
                        Sight::Unseen => "Not fully visible: nothing runs",
                        Sight::Unknown => "Visibility unknown: nothing runs here",
                    }}
                </p>
                <p class="hint" data-testid="device">
                    {move || match session.device.get() {
                        // The engine that finds it comes with Start (see `bin/starling-widget.rs`).
                        None if !session.running() => "Device: checked on Start".to_owned(),
                        None => "Detecting…".to_owned(),
                        Some(d) if d.backend == "cpu" => "CPU fallback".to_owned(),
                        Some(d) => format!("WebGPU: {}", d.adapter),
                    }}
                </p>
                <p class="hint" data-testid="widget-units">
                    {move || format!("{} units computed · {} GFLOP/s", session.units.get(), session.gflops())}
                </p>
            </div>
        </main>
    }
}

/// The volunteer page's control to withdraw every remembered yes at once: every one lives
/// in the relay origin's own storage, which this page reads (a card on another site
/// remembers only where the browser lets it reach that storage; see [`consent`]).
#[component]
pub fn ForgetSites() -> impl IntoView {
    let forgotten = RwSignal::new(None::<u32>);
    view! {
        <section class="card" aria-labelledby="forget-sites-title">
            <h2 id="forget-sites-title">"Sites where you said yes"</h2>
            <p class="hint">
                {format!("A site's Starling card remembers your Start for {} days where your browser lets it, and resumes only where you can see it.", consent::CONSENT_DAYS)}
            </p>
            <button class="secondary" data-testid="forget-sites" on:click=move |_| {
                forgotten.set(Some(consent::withdraw_all()));
            }>"Forget sites where I said yes"</button>
            <p class="hint" data-testid="forget-sites-result" role="status">
                {move || forgotten.get().map(|n| format!("Forgot {n} remembered yes. No site's card starts by itself now."))}
            </p>
        </section>
    }
}
