//! The volunteer page: what this device is, a Start button, and a live meter.

use crate::runtime::{self, DeviceSummary};
use leptos::prelude::*;
use leptos::task::spawn_local;
use starling_client::Event;

/// Where the volunteer is.
#[derive(Clone, Debug, PartialEq)]
enum Phase {
    Idle,
    Connecting,
    Working,
    Failed(String),
}

/// The volunteer page.
#[component]
pub fn VolunteerPage() -> impl IntoView {
    let device = RwSignal::new(None::<DeviceSummary>);
    let phase = RwSignal::new(Phase::Idle);
    let units = RwSignal::new(0u64);
    let flops = RwSignal::new(0u64);
    let busy_ms = RwSignal::new(0f64);
    let first_unit_ms = RwSignal::new(None::<f64>);

    spawn_local(async move {
        device.set(Some(runtime::detect().await));
    });

    // Micro-credits from signed receipts this session.
    let credited = RwSignal::new(0u64);
    let on_event = move |event: Event| match event {
        Event::Connected => phase.set(Phase::Working),
        Event::Computed {
            elapsed_ms,
            flops: f,
            ..
        } => {
            units.update(|u| *u += 1);
            flops.update(|t| *t += f);
            busy_ms.update(|b| *b += elapsed_ms);
            if first_unit_ms.get_untracked().is_none() {
                first_unit_ms.set(Some(runtime::now_ms()));
            }
        }
        Event::Acked { .. } => {}
        Event::UnitFailed(why) => leptos::logging::warn!("unit failed: {why}"),
        Event::Credited { amount_micro, .. } => credited.update(|c| *c += amount_micro),
    };

    let start = move |_| {
        phase.set(Phase::Connecting);
        spawn_local(async move {
            match runtime::start(on_event).await {
                Ok(()) => phase.set(Phase::Idle),
                Err(e) => phase.set(Phase::Failed(e)),
            }
        });
    };
    let stop = move |_| runtime::stop();
    let running = move || matches!(phase.get(), Phase::Connecting | Phase::Working);

    view! {
        <main>
            <header>
                <h1>"Starling"</h1>
                <p>"Lend this device's GPU to science and rendering jobs. Nothing runs until you press Start."</p>
            </header>
            <section class="card" aria-labelledby="device-title">
                <h2 id="device-title">"This device"</h2>
                <div class="device" data-testid="device">
                    {move || match device.get() {
                        None => view! { <span>"Detecting…"</span> }.into_any(),
                        Some(d) if d.backend == "cpu" => view! {
                            <span>"CPU fallback"<span class="badge">"no WebGPU"</span></span>
                        }.into_any(),
                        Some(d) => view! {
                            <span>"WebGPU: " {d.adapter.clone()}
                                {(d.fallback && d.adapter != "software adapter").then(|| view! { <span class="badge">"software adapter"</span> })}
                            </span>
                        }.into_any(),
                    }}
                </div>
            </section>
            <section class="card controls" aria-label="Controls">
                <Show
                    when=running
                    fallback=move || view! {
                        <button data-testid="start" on:click=start disabled=move || device.get().is_none()>
                            "Start"
                        </button>
                    }
                >
                    <button class="stop" data-testid="stop" on:click=stop>"Stop"</button>
                </Show>
                <span
                    class=move || if matches!(phase.get(), Phase::Failed(_)) { "status error" } else { "status" }
                    data-testid="status"
                    role="status"
                >
                    {move || match phase.get() {
                        Phase::Idle => "Idle: nothing is computing.".to_owned(),
                        Phase::Connecting => "Connecting to the relay…".to_owned(),
                        Phase::Working => "Working: this tab is computing for the network.".to_owned(),
                        Phase::Failed(e) => format!("Stopped: {e}"),
                    }}
                </span>
            </section>
            <section class="card" aria-labelledby="meter-title">
                <h2 id="meter-title">"This session"</h2>
                <div class="meter">
                    <div class="stat">
                        <div class="value" data-testid="units-done">{move || units.get()}</div>
                        <div class="label">"units computed"</div>
                    </div>
                    <div class="stat">
                        <div class="value" data-testid="credits-earned">
                            {move || format!("{:.6}", credited.get() as f64 / 1e6)}
                        </div>
                        <div class="label">"credits earned (signed receipts)"</div>
                    </div>
                    <div class="stat">
                        <div class="value" data-testid="gflops">
                            {move || {
                                let ms = busy_ms.get();
                                if ms > 0.0 { format!("{:.2}", flops.get() as f64 / ms / 1e6) } else { "–".to_owned() }
                            }}
                        </div>
                        <div class="label">"GFLOP/s while busy"</div>
                    </div>
                    <div class="stat">
                        <div class="value" data-testid="first-unit-ms">
                            {move || first_unit_ms.get().map(|ms| format!("{:.0} ms", ms)).unwrap_or_else(|| "–".to_owned())}
                        </div>
                        <div class="label">"page open to first unit"</div>
                    </div>
                </div>
            </section>
            <footer>"Starling: a volunteer compute network in your browser."</footer>
        </main>
    }
}
