//! The router: leptos_router follows the address (links switch pages through the history
//! API, without a reload, so a running volunteer keeps working; back and forward too),
//! and the page is chosen here from the path: one catch-all route keeps [`Pages`], and so
//! the volunteer's session, alive across pages, and any `/widget` path is the widget, any
//! unknown one the volunteer page. The relay answers index.html for every path.

use crate::pages::{
    console::ConsolePage, network::NetworkPage, volunteer::VolunteerPage, widget::WidgetPage,
};
use leptos::prelude::*;
use leptos_router::components::{FlatRoutes, Route, Router, A};
use leptos_router::hooks::use_location;
use leptos_router::path;

/// The whole app.
#[component]
pub fn App() -> impl IntoView {
    view! {
        <Router>
            <FlatRoutes fallback=|| ()>
                <Route path=path!("/*any") view=Pages />
            </FlatRoutes>
        </Router>
    }
}

/// The page at the current path: the widget alone under `/widget`, else one of the site's
/// pages (the volunteer page for any path it does not know) under its header.
#[component]
fn Pages() -> impl IntoView {
    let path = use_location().pathname;
    let in_widget = path.get_untracked().starts_with("/widget");
    provide_context(crate::pages::volunteer::Session::new(!in_widget));
    let link = |to: &'static str, label: &'static str| {
        view! {
            <A href=to exact=true attr:data-testid=format!("nav-{}", label.to_lowercase())>
                {label}
            </A>
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
                    <a class="brand" href="/">
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
            // The router takes every same-origin link; the API's documentation is the
            // relay's page, not one of the app's.
            <footer>"Starling: a volunteer compute network in your browser. "
                <a href="/api/v1/docs" rel="external">"API"</a>
            </footer>
        }
        .into_any()
    }
}
