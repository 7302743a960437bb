//! The router: the page is chosen by `location.pathname`; nav links switch pages with
//! `history.pushState` (no reload, so a running volunteer keeps working), and the back
//! button is followed through `popstate`. The relay answers index.html for every path.

use crate::pages::{
    console::ConsolePage, network::NetworkPage, volunteer::VolunteerPage, widget::WidgetPage,
};
use leptos::ev;
use leptos::prelude::*;

fn current_path() -> String {
    web_sys::window()
        .and_then(|w| w.location().pathname().ok())
        .unwrap_or_else(|| "/".to_owned())
}

/// The whole app.
#[component]
pub fn App() -> impl IntoView {
    let path = RwSignal::new(current_path());
    let in_widget = path.get_untracked().starts_with("/widget");
    provide_context(crate::pages::volunteer::Session::new(in_widget));
    let handle = window_event_listener(ev::popstate, move |_| path.set(current_path()));
    on_cleanup(move || handle.remove());

    let go = move |to: &'static str| {
        move |e: ev::MouseEvent| {
            // Let the browser handle new-tab clicks.
            if e.ctrl_key() || e.meta_key() || e.shift_key() || e.button() != 0 {
                return;
            }
            e.prevent_default();
            if let Some(history) = web_sys::window().and_then(|w| w.history().ok()) {
                let _ = history.push_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(to));
            }
            path.set(to.to_owned());
            // A new page starts at its top, as a full load would.
            if let Some(w) = web_sys::window() {
                w.scroll_to_with_x_and_y(0.0, 0.0);
            }
        }
    };
    let link = move |to: &'static str, label: &'static str| {
        view! {
            <a
                href=to
                data-testid=format!("nav-{}", label.to_lowercase())
                on:click=go(to)
                aria-current=move || (path.get() == to).then_some("page")
            >
                {label}
            </a>
        }
    };

    move || {
        let p = path.get();
        if p.starts_with("/widget") {
            return view! { <WidgetPage /> }.into_any();
        }
        let page = match p.as_str() {
            "/console" => view! { <ConsolePage /> }.into_any(),
            "/network" => view! { <NetworkPage /> }.into_any(),
            _ => view! { <VolunteerPage /> }.into_any(),
        };
        view! {
            <header class="site">
                <div class="bar">
                    <a class="brand" href="/" on:click=go("/")>
                        <span class="logo" aria-hidden="true">"✦"</span>
                        "Starling"
                    </a>
                    <nav aria-label="Main">
                        {link("/", "Volunteer")}
                        {link("/console", "Console")}
                        {link("/network", "Network")}
                    </nav>
                </div>
            </header>
            <main>{page}</main>
            <footer>"Starling: a volunteer compute network in your browser. "
                <a href="/api/v1/docs">"API"</a>
            </footer>
        }
        .into_any()
    }
}
