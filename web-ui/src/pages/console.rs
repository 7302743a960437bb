//! The submitter console: pick a kernel, fill a form generated from its JSON Schema
//! (validated inline; nothing is sent while a field is wrong), attach named inputs,
//! submit, and follow the job's progress to its result. Every job route answers only to
//! the key that submitted the job, so the console reads them with `fetch` and the key
//! (an `EventSource` cannot send one), the result included.

use crate::form::{default_text, fields, hint, label, parse_field, Field};
use crate::net;
use crate::runtime::now_ms;
use leptos::prelude::*;
use leptos::task::spawn_local;
use serde_json::{Map, Value};
use starling_api::{
    Job, JobState, KernelCatalog, KernelInfo, SubmitJob, UnitState, UnitStates, Verification,
};
use std::collections::BTreeMap;
use wasm_bindgen::{JsCast, JsValue};

/// sessionStorage key of the API key: kept for this tab only.
const KEY_STORAGE: &str = "starling.api_key";

/// How often a followed job's record is read.
const POLL_MS: u32 = 500;

/// The job being followed.
#[derive(Clone, Debug, PartialEq)]
struct Tracked {
    id: String,
    /// The API key that submitted the job: the only one its routes answer.
    key: String,
    kernel: String,
    params: Value,
    state: JobState,
    units_total: i64,
    units_done: i64,
    started_ms: f64,
    now_ms: f64,
    /// GFLOP the job needs computed: its FLOPs times the replicas per unit.
    work_gflop: f64,
    /// The network's recent pace and volunteers online, from `/api/v1/stats`.
    network: Option<(f64, u64)>,
}

impl Tracked {
    fn fraction(&self) -> f64 {
        if self.units_total > 0 {
            self.units_done as f64 / self.units_total as f64
        } else {
            0.0
        }
    }

    fn eta(&self) -> String {
        let f = self.fraction();
        match self.state {
            JobState::Done | JobState::Failed | JobState::Cancelled => self.state.to_string(),
            // Before any unit is back, the job's FLOPs over the network's measured speed.
            _ if f <= 0.0 => match self.network {
                Some((_, 0)) => "waiting for a volunteer".to_owned(),
                Some((gflops, _)) if gflops > 0.0 && self.work_gflop > 0.0 => format!(
                    "about {:.0} s left at the network's pace",
                    (self.work_gflop / gflops).ceil()
                ),
                _ => "estimating…".to_owned(),
            },
            // Then this job's own measured pace.
            _ => {
                let left = (self.now_ms - self.started_ms) * (1.0 - f) / f / 1000.0;
                format!("about {:.0} s left", left.max(0.0).ceil())
            }
        }
    }
}

/// Polls a render job's unit map while it runs, for the tile map: each unit's state, as
/// runs of one state (`/units/states`), a few hundred bytes however many units it has.
fn watch_tiles(
    id: String,
    key: String,
    tracked: RwSignal<Option<Tracked>>,
    tiles: RwSignal<Vec<UnitState>>,
) {
    tiles.set(Vec::new());
    spawn_local(async move {
        let url = format!("/api/v1/jobs/{id}/units/states");
        loop {
            let running = tracked
                .with_untracked(|t| t.as_ref().is_some_and(|t| t.id == id && !t.state.ended()));
            // A failed request leaves the map as it was until the next round.
            if let Ok(Ok(map)) = net::request("GET", &url, None, false, Some(&key))
                .await
                .map(|r| r.decode::<UnitStates>())
            {
                let states: Vec<UnitState> = map.states().collect();
                let following = tracked.with_untracked(|t| t.as_ref().is_some_and(|t| t.id == id));
                if following && tiles.with_untracked(|old| *old != states) {
                    tiles.set(states);
                }
            }
            if !running {
                break;
            }
            gloo_timers::future::TimeoutFuture::new(700).await;
        }
    });
}

/// The file extension for a result of this content type.
fn extension_for(content_type: &str) -> &'static str {
    match content_type.split(';').next().unwrap_or_default().trim() {
        "image/png" => "png",
        "application/json" => "json",
        _ => "bin",
    }
}

/// A tile's colour on the map: the page's `--card-2`, `--warn` and `--accent`.
fn tile_colour(state: UnitState) -> &'static str {
    match state {
        UnitState::Queued => "#1f2740",
        UnitState::Leased => "#ffcf70",
        UnitState::Done => "#7cc4ff",
        UnitState::Failed => "#ff8a8a",
    }
}

/// The render job's tiles as they fill in, drawn on a canvas: each update paints only
/// the tiles whose state changed, so a 100,000-unit job costs a few rectangles per poll
/// rather than a DOM node per unit.
#[component]
fn TileMap(params: Value, tiles: RwSignal<Vec<UnitState>>) -> impl IntoView {
    let width = params["width"].as_u64().unwrap_or(0) as u32;
    let height = params["height"].as_u64().unwrap_or(0) as u32;
    let canvas = NodeRef::<leptos::html::Canvas>::new();
    // What the canvas shows now, and the tiling it was drawn with.
    let drawn = StoredValue::new_local((Vec::<UnitState>::new(), Vec::new()));
    let label = move || {
        let done = tiles.with(|t| t.iter().filter(|s| **s == UnitState::Done).count());
        format!(
            "Tiles of the image: {done} of {} computed",
            tiles.with(Vec::len)
        )
    };
    Effect::new(move |_| {
        let Some(canvas) = canvas.get() else {
            return;
        };
        tiles.with(|states| {
            drawn.update_value(|(shown, layout)| {
                if layout.len() != states.len() {
                    *layout = crate::tiles::layout(width, height, states.len()).unwrap_or_default();
                    shown.clear();
                }
                let Some(context) = canvas
                    .get_context("2d")
                    .ok()
                    .flatten()
                    .and_then(|c| c.dyn_into::<web_sys::CanvasRenderingContext2d>().ok())
                else {
                    return;
                };
                for (i, (&(x, y, w, h), &state)) in layout.iter().zip(states).enumerate() {
                    if shown.get(i) == Some(&state) {
                        continue;
                    }
                    context.set_fill_style_str(tile_colour(state));
                    // A hairline of background between tiles, as the grid shows.
                    let gap = if w > 2 && h > 2 { 0.5 } else { 0.0 };
                    context.fill_rect(
                        f64::from(x) + gap,
                        f64::from(y) + gap,
                        f64::from(w) - 2.0 * gap,
                        f64::from(h) - 2.0 * gap,
                    );
                }
                *shown = states.clone();
            });
        });
    });
    view! {
        <canvas class="tilemap" node_ref=canvas width=width height=height role="img"
            aria-label=label data-testid="tile-map"></canvas>
    }
}

/// Polls the network's pace while `id` runs, for the ETA before its first unit.
fn watch_network(id: String, tracked: RwSignal<Option<Tracked>>) {
    spawn_local(async move {
        loop {
            let running = tracked
                .with_untracked(|t| t.as_ref().is_some_and(|t| t.id == id && !t.state.ended()));
            if !running {
                break;
            }
            if let Ok(Ok(stats)) = net::get("/api/v1/stats")
                .await
                .map(|r| r.decode::<starling_api::Stats>())
            {
                tracked.update(|t| {
                    if let Some(t) = t.as_mut().filter(|t| t.id == id) {
                        t.network = Some((stats.gflops, stats.volunteers));
                        t.now_ms = now_ms();
                    }
                });
            }
            gloo_timers::future::TimeoutFuture::new(2_000).await;
        }
    });
}

fn follow(
    id: String,
    key: String,
    kernel: String,
    record: &Job,
    tracked: RwSignal<Option<Tracked>>,
    tiles: RwSignal<Vec<UnitState>>,
    result_url: RwSignal<Option<String>>,
) {
    let params = record.params.clone();
    let work_gflop = record.flops as f64 * f64::from(record.quorum.max(1)) / 1e9;
    let started = now_ms();
    let render = kernel == "render";
    if let Some(old) = result_url.get_untracked() {
        let _ = web_sys::Url::revoke_object_url(&old);
        result_url.set(None);
    }
    tracked.set(Some(Tracked {
        id: id.clone(),
        key: key.clone(),
        kernel,
        params,
        state: JobState::Queued,
        units_total: 0,
        units_done: 0,
        started_ms: started,
        now_ms: started,
        work_gflop,
        network: None,
    }));
    watch_job(id.clone(), key.clone(), tracked, result_url);
    watch_network(id.clone(), tracked);
    if render {
        watch_tiles(id, key, tracked, tiles);
    }
}

/// Reads the job's record until it ends, then fetches its result (with the key) for the
/// download link and the rendered image.
fn watch_job(
    id: String,
    key: String,
    tracked: RwSignal<Option<Tracked>>,
    result_url: RwSignal<Option<String>>,
) {
    spawn_local(async move {
        let url = format!("/api/v1/jobs/{id}");
        loop {
            let following = tracked.with_untracked(|t| t.as_ref().is_some_and(|t| t.id == id));
            if !following {
                return;
            }
            if let Ok(Ok(job)) = net::request("GET", &url, None, false, Some(&key))
                .await
                .map(|r| r.decode::<Job>())
            {
                tracked.update(|t| {
                    if let Some(t) = t.as_mut().filter(|t| t.id == id) {
                        t.units_total = job.progress.units_total;
                        t.units_done = job.progress.units_done;
                        t.state = job.state;
                        t.now_ms = now_ms();
                    }
                });
                if job.state.ended() {
                    if job.state == JobState::Done {
                        let result = format!("/api/v1/jobs/{id}/result");
                        if let Ok(object) = net::object_url(&result, &key).await {
                            result_url.set(Some(object));
                        }
                    }
                    return;
                }
            }
            gloo_timers::future::TimeoutFuture::new(POLL_MS).await;
        }
    });
}

fn file_of(input: &str) -> Option<web_sys::File> {
    web_sys::window()?
        .document()?
        .get_element_by_id(&format!("input-{input}"))?
        .dyn_into::<web_sys::HtmlInputElement>()
        .ok()?
        .files()?
        .get(0)
}

/// The console page.
#[component]
pub fn ConsolePage() -> impl IntoView {
    let api_key = RwSignal::new(net::session_get(KEY_STORAGE).unwrap_or_default());
    let kernels = RwSignal::new(None::<Result<Vec<KernelInfo>, String>>);
    let selected = RwSignal::new(String::new());
    let values = RwSignal::new(BTreeMap::<String, String>::new());
    let attempted = RwSignal::new(false);
    let quorum = RwSignal::new(String::new());
    let sending = RwSignal::new(false);
    let submit_error = RwSignal::new(None::<String>);
    let tracked = RwSignal::new(None::<Tracked>);
    // Which job the card shows: it changes when another job is followed, not on progress.
    let job_card = Memo::new(move |_| {
        tracked.with(|t| {
            t.as_ref()
                .map(|t| (t.id.clone(), t.kernel.clone(), t.params.clone()))
        })
    });
    let tiles = RwSignal::new(Vec::<UnitState>::new());
    // The finished job's result, fetched with the key, behind an object URL.
    let result_url = RwSignal::new(None::<String>);

    spawn_local(async move {
        let list = net::get("/api/v1/kernels")
            .await
            .and_then(|r| r.decode::<KernelCatalog>())
            .map(|catalog| catalog.kernels);
        if let Ok(list) = &list {
            let first = list
                .iter()
                .find(|k| k.id == "render")
                .or(list.first())
                .map(|k| k.id.clone())
                .unwrap_or_default();
            selected.set(first);
        }
        kernels.set(Some(list));
    });

    let kernel = Memo::new(move |_| {
        kernels.with(|k| {
            k.as_ref()
                .and_then(|k| k.as_ref().ok())
                .and_then(|list| list.iter().find(|k| k.id == selected.get()).cloned())
        })
    });
    let form_fields = Memo::new(move |_| {
        kernel
            .get()
            .map(|k| fields(&k.params_schema))
            .unwrap_or_default()
    });
    // Fresh defaults whenever the kernel changes.
    Effect::new(move |_| {
        let defaults = form_fields
            .get()
            .iter()
            .map(|f| (f.name.clone(), default_text(f)))
            .collect();
        values.set(defaults);
        attempted.set(false);
    });
    let errors = Memo::new(move |_| {
        let v = values.get();
        form_fields
            .get()
            .iter()
            .filter_map(|f| {
                parse_field(f, v.get(&f.name).map(String::as_str).unwrap_or(""))
                    .err()
                    .map(|e| (f.name.clone(), e))
            })
            .collect::<BTreeMap<_, _>>()
    });

    let submit = move |e: leptos::ev::SubmitEvent| {
        e.prevent_default();
        attempted.set(true);
        submit_error.set(None);
        if !errors.get_untracked().is_empty() {
            return;
        }
        let Some(k) = kernel.get_untracked() else {
            return;
        };
        let v = values.get_untracked();
        let mut params = Map::new();
        for f in form_fields.get_untracked() {
            if let Ok(Some(value)) =
                parse_field(&f, v.get(&f.name).map(String::as_str).unwrap_or(""))
            {
                params.insert(f.name.clone(), value);
            }
        }
        let id = k.id.clone();
        let job = SubmitJob {
            verification: quorum
                .get_untracked()
                .parse::<u32>()
                .ok()
                .map(|quorum| Verification { quorum }),
            ..SubmitJob::new(id.clone(), Value::Object(params))
        };
        // Our own type with string keys: serialising it cannot fail.
        let job = serde_json::to_string(&job).unwrap_or_default();
        let inputs: Vec<String> = k.inputs.iter().map(|i| i.name.clone()).collect();
        let mut files = Vec::new();
        for name in &inputs {
            match file_of(name) {
                Some(file) => files.push((name.clone(), file)),
                None => {
                    submit_error.set(Some(format!("Choose a file for input `{name}`.")));
                    return;
                }
            }
        }
        let key = api_key.get_untracked();
        sending.set(true);
        spawn_local(async move {
            let body: Result<(JsValue, bool), String> = if files.is_empty() {
                Ok((JsValue::from_str(&job), true))
            } else {
                (|| {
                    let form = web_sys::FormData::new().map_err(|_| "FormData".to_owned())?;
                    form.append_with_str("job", &job)
                        .map_err(|_| "FormData".to_owned())?;
                    for (name, file) in &files {
                        form.append_with_blob_and_filename(name, file, &file.name())
                            .map_err(|_| "FormData".to_owned())?;
                    }
                    Ok((form.into(), false))
                })()
            };
            let reply = match body {
                Ok((body, is_json)) => {
                    net::request("POST", "/api/v1/jobs", Some(&body), is_json, Some(&key)).await
                }
                Err(e) => Err(e),
            };
            sending.set(false);
            match reply {
                Ok(r) if r.ok() => match r.decode::<Job>() {
                    Ok(job) => follow(
                        job.id.to_string(),
                        key,
                        id,
                        &job,
                        tracked,
                        tiles,
                        result_url,
                    ),
                    Err(e) => submit_error.set(Some(e)),
                },
                Ok(r) if r.status == 401 => {
                    submit_error.set(Some(format!("The relay wants an API key: {}", r.problem())))
                }
                Ok(r) => submit_error.set(Some(r.problem())),
                Err(e) => submit_error.set(Some(e)),
            }
        });
    };

    let field_view = move |f: Field| {
        let name = f.name.clone();
        let id = format!("param-{name}");
        let err_id = format!("param-{name}-error");
        let name_for_value = name.clone();
        let value = move || values.with(|v| v.get(&name_for_value).cloned().unwrap_or_default());
        let name_for_set = name.clone();
        let set = move |text: String| {
            values.update(|v| {
                v.insert(name_for_set.clone(), text);
            })
        };
        let name_for_err = name.clone();
        let error = move || {
            let text = values.with(|v| v.get(&name_for_err).cloned().unwrap_or_default());
            (attempted.get() || !text.trim().is_empty())
                .then(|| errors.with(|e| e.get(&name_for_err).cloned()))
                .flatten()
        };
        let error2 = error.clone();
        let pretty = label(&f.name);
        let test_id = format!("error-{name}");
        let label = format!("{pretty}{}", if f.required { "" } else { " (optional)" });
        let input = if let Some(options) = f.schema["enum"].as_array() {
            let options: Vec<String> = options
                .iter()
                .map(|o| {
                    o.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| o.to_string())
                })
                .collect();
            view! {
                <select id=id.clone() data-testid=id.clone() prop:value=value
                    on:change=move |e| set(event_target_value(&e))>
                    <option value="">"Choose…"</option>
                    {options.into_iter().map(|o| { let label = o.clone(); view! { <option value=o>{label}</option> } }).collect_view()}
                </select>
            }
            .into_any()
        } else {
            let numeric = matches!(f.schema["type"].as_str(), Some("integer" | "number"));
            view! {
                <input id=id.clone() data-testid=id.clone()
                    type=if numeric { "number" } else { "text" }
                    inputmode=if numeric { "numeric" } else { "text" }
                    min=f.schema["minimum"].as_f64().map(|v| v.to_string())
                    max=f.schema["maximum"].as_f64().filter(|v| *v < 1e15).map(|v| v.to_string())
                    aria-describedby=err_id.clone()
                    aria-invalid=move || if error2().is_some() { "true" } else { "false" }
                    prop:value=value
                    on:input=move |e| set(event_target_value(&e)) />
            }
            .into_any()
        };
        view! {
            <div class="field">
                <label for=id.clone()>{label}</label>
                {input}
                <small class="hint">{hint(&f)}</small>
                <small class="field-error" id=err_id role="alert" data-testid=test_id>
                    {move || error().map(|e| format!("{pretty} {e}"))}
                </small>
            </div>
        }
    };

    view! {
        <div class="intro">
            <h1>"Submit a job"</h1>
            <p>"Pick a kernel, fill in its parameters, and follow the job as volunteers compute it."</p>
        </div>
        <section class="card" aria-labelledby="key-title">
            <h2 id="key-title">"API key"</h2>
            <div class="field">
                <label for="api-key">"Your API key (kept in this tab only)"</label>
                <input id="api-key" type="password" autocomplete="off" data-testid="api-key"
                    placeholder="stk_…"
                    prop:value=move || api_key.get()
                    on:input=move |e| {
                        let v = event_target_value(&e);
                        net::session_set(KEY_STORAGE, v.trim());
                        api_key.set(v.trim().to_owned());
                    } />
            </div>
        </section>
        <form class="card" on:submit=submit novalidate=true aria-labelledby="job-title">
            <h2 id="job-title">"Job"</h2>
            {move || match kernels.get() {
                None => view! { <p class="hint">"Loading kernels…"</p> }.into_any(),
                Some(Err(e)) => view! { <p class="error" role="alert">{format!("Kernels could not be loaded: {e}")}</p> }.into_any(),
                Some(Ok(list)) => view! {
                    <div class="field">
                        <label for="kernel">"Kernel"</label>
                        <select id="kernel" data-testid="kernel" prop:value=move || selected.get()
                            on:change=move |e| selected.set(event_target_value(&e))>
                            {list.iter().map(|k| {
                                let id = k.id.clone();
                                view! { <option value=id.clone()>{id.clone()}</option> }
                            }).collect_view()}
                        </select>
                        <small class="hint">{move || kernel.get().map(|k| k.description)}</small>
                    </div>
                }.into_any(),
            }}
            <div class="fields">
                {move || form_fields.get().into_iter().map(field_view).collect_view()}
            </div>
            {move || {
                let inputs = kernel.get().map(|k| k.inputs).unwrap_or_default();
                (!inputs.is_empty()).then(|| view! {
                    <fieldset>
                        <legend>"Inputs"</legend>
                        {inputs.into_iter().map(|i| {
                            let name = i.name.clone();
                            let id = format!("input-{name}");
                            view! {
                                <div class="field">
                                    <label for=id.clone()>{name.clone()}</label>
                                    <input id=id.clone() type="file" data-testid=id />
                                    <small class="hint">{i.encoding.clone()}</small>
                                </div>
                            }
                        }).collect_view()}
                    </fieldset>
                })
            }}
            <div class="field">
                <label for="quorum">"Verification quorum"</label>
                <select id="quorum" data-testid="quorum" prop:value=move || quorum.get()
                    on:change=move |e| quorum.set(event_target_value(&e))>
                    <option value="">"Relay default"</option>
                    {(1..=5).map(|q| view! { <option value=q.to_string()>{format!("{q} agreeing result{}", if q == 1 { "" } else { "s" })}</option> }).collect_view()}
                </select>
                <small class="hint">"How many volunteers with distinct wallets must agree on each unit."</small>
            </div>
            <div class="controls">
                <button type="submit" data-testid="submit" disabled=move || sending.get() || kernel.get().is_none()>
                    {move || if sending.get() { "Submitting…" } else { "Submit job" }}
                </button>
                {move || (attempted.get() && !errors.get().is_empty()).then(|| view! {
                    <span class="error" role="alert" data-testid="form-error">"Fix the fields marked above; nothing was sent."</span>
                })}
                {move || submit_error.get().map(|e| view! { <span class="error" role="alert" data-testid="submit-error">{e}</span> })}
            </div>
        </form>
        {move || job_card.get().map(|(id, kernel, params)| {
            // Built once per job: each part below follows the job's record by itself, so
            // a progress update changes a few text nodes, not the card and its tile map.
            let field = move |f: fn(&Tracked) -> String| {
                move || tracked.with(|t| t.as_ref().map(f).unwrap_or_default())
            };
            let pct = move || tracked.with(|t| t.as_ref().map_or(0.0, |t| (t.fraction() * 100.0).round()));
            let state = move || tracked.with(|t| t.as_ref().map(|t| t.state));
            let render = kernel == "render";
            // Named for what it holds, so the saved file opens in the right program.
            let extension = kernels.with_untracked(|k| {
                let content_type = k
                    .as_ref()
                    .and_then(|k| k.as_ref().ok())
                    .and_then(|list| list.iter().find(|k| k.id == kernel))
                    .map(|k| k.output_content_type.clone())
                    .unwrap_or_default();
                extension_for(&content_type)
            });
            let download = format!("starling-{kernel}-{id}.{extension}");
            view! {
                <section class="card" aria-labelledby="progress-title" data-testid="job">
                    <h2 id="progress-title">"Job " <code data-testid="job-id">{id.clone()}</code></h2>
                    <div class="progress" role="progressbar" aria-valuemin="0" aria-valuemax="100"
                        aria-valuenow=move || pct().to_string() aria-label="Job progress">
                        <div class="bar-fill" style=move || format!("width: {}%", pct())></div>
                    </div>
                    <p>
                        <span data-testid="progress">{move || format!("{}%", pct())}</span>
                        {field(|t| format!(" · {} of {} units · ", t.units_done, t.units_total))}
                        <span data-testid="job-state" class=move || format!("pill {}", state().map(|s| s.to_string()).unwrap_or_default())>
                            {move || state().map(|s| s.to_string()).unwrap_or_default()}
                        </span>
                        {field(|t| format!(" · {}", t.eta()))}
                    </p>
                    {move || result_url.get().map(|href| view! {
                        <p><a class="button" href=href download=download.clone() data-testid="result-link">"Download result"</a></p>
                    })}
                    {render.then(|| view! {
                        <Show when=move || state() != Some(JobState::Done)>
                            <TileMap params=params.clone() tiles=tiles />
                        </Show>
                    })}
                    {move || result_url.get().filter(|_| render).map(|src| view! {
                        <img class="render" src=src alt="The rendered image" data-testid="result-image" />
                    })}
                </section>
            }
        })}
    }
}

#[cfg(test)]
mod tests {
    use super::Tracked;
    use starling_api::JobState;

    fn job(done: i64, elapsed_ms: f64, network: Option<(f64, u64)>) -> Tracked {
        Tracked {
            id: "j".into(),
            key: "k".into(),
            kernel: "matmul".into(),
            params: serde_json::Value::Null,
            state: JobState::Running,
            units_total: 10,
            units_done: done,
            started_ms: 0.0,
            now_ms: elapsed_ms,
            work_gflop: 40.0,
            network,
        }
    }

    #[test]
    fn eta_uses_the_networks_speed_before_the_first_unit_then_the_jobs_own_pace() {
        assert_eq!(job(0, 1_000.0, None).eta(), "estimating…");
        assert_eq!(
            job(0, 1_000.0, Some((0.0, 0))).eta(),
            "waiting for a volunteer"
        );
        // 40 GFLOP at 8 GFLOP/s.
        assert_eq!(
            job(0, 1_000.0, Some((8.0, 3))).eta(),
            "about 5 s left at the network's pace"
        );
        // A quarter done in 10 s: 30 s to go, whatever the network does.
        let mut quarter = job(0, 10_000.0, Some((8.0, 3)));
        quarter.units_total = 4;
        quarter.units_done = 1;
        assert_eq!(quarter.eta(), "about 30 s left");
    }
}
