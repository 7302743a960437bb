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
    Account, Job, JobList, JobState, KernelCatalog, KernelInfo, Quote, SubmitJob, UnitOutputs,
    UnitState, UnitStates, Verification,
};
use std::collections::BTreeMap;
use wasm_bindgen::{JsCast, JsValue};

/// sessionStorage key of the API key: kept for this tab only.
const KEY_STORAGE: &str = "starling.api_key";

/// sessionStorage key of the job the card follows, followed again after a reload.
const FOLLOWED_STORAGE: &str = "starling.followed_job";

/// Jobs the "My jobs" list shows, newest first.
const MY_JOBS: u32 = 20;

/// How long the form must rest before it is quoted.
const QUOTE_DEBOUNCE_MS: u32 = 400;

/// Input files larger than this in all are not sent for a quote: each change of the form
/// would upload them again.
const QUOTE_MAX_INPUT_BYTES: f64 = 4.0 * 1024.0 * 1024.0;

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

/// Settled tiles' pixels fetched and not drawn yet: (unit index, the unit's output).
type PendingTiles = RwSignal<Vec<(usize, Vec<u8>)>>;

/// Polls a render job's unit map while it runs, for the tile map: each unit's state, as
/// runs of one state (`/units/states`), a few hundred bytes however many units it has;
/// then the outputs of the tiles settled since the last round (`/units/outputs`, by
/// index range), so the picture grows tile by tile and no tile is fetched twice.
fn watch_tiles(
    id: String,
    key: String,
    tracked: RwSignal<Option<Tracked>>,
    tiles: RwSignal<Vec<UnitState>>,
    pending: PendingTiles,
    fetched_count: RwSignal<usize>,
) {
    tiles.set(Vec::new());
    pending.set(Vec::new());
    fetched_count.set(0);
    spawn_local(async move {
        let url = format!("/api/v1/jobs/{id}/units/states");
        let following = || tracked.with_untracked(|t| t.as_ref().is_some_and(|t| t.id == id));
        let mut fetched = Vec::<bool>::new();
        loop {
            let running = tracked
                .with_untracked(|t| t.as_ref().is_some_and(|t| t.id == id && !t.state.ended()));
            // A failed request leaves the map as it was until the next round.
            if let Ok(Ok(map)) = net::request("GET", &url, None, false, Some(&key))
                .await
                .map(|r| r.decode::<UnitStates>())
            {
                let states: Vec<UnitState> = map.states().collect();
                if !following() {
                    return;
                }
                if tiles.with_untracked(|old| *old != states) {
                    tiles.set(states.clone());
                }
                fetched.resize(states.len(), false);
                for (start, end) in crate::tiles::ranges_to_fetch(&states, &fetched) {
                    fetch_tiles(&id, &key, start, end, &mut fetched, pending).await;
                    if !following() {
                        return;
                    }
                }
                fetched_count.set(fetched.iter().filter(|f| **f).count());
            }
            if !running {
                break;
            }
            gloo_timers::future::TimeoutFuture::new(700).await;
        }
    });
}

/// Fetches the outputs of the settled units in `start..end`, page by page, into `pending`.
async fn fetch_tiles(
    id: &str,
    key: &str,
    start: usize,
    end: usize,
    fetched: &mut [bool],
    pending: PendingTiles,
) {
    use base64::Engine as _;
    let mut from = start;
    while from < end {
        let url = format!("/api/v1/jobs/{id}/units/outputs?from={from}&to={end}");
        let Ok(Ok(page)) = net::request("GET", &url, None, false, Some(key))
            .await
            .map(|r| r.decode::<UnitOutputs>())
        else {
            // Tried again next round: these tiles are still not marked fetched.
            return;
        };
        let mut batch = Vec::with_capacity(page.outputs.len());
        for tile in page.outputs {
            let Ok(index) = usize::try_from(tile.index) else {
                continue;
            };
            let Some(seen) = fetched.get_mut(index) else {
                continue;
            };
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&tile.output) {
                *seen = true;
                batch.push((index, bytes));
            }
        }
        pending.update(|p| p.extend(batch));
        match page.next.and_then(|n| usize::try_from(n).ok()) {
            Some(next) if next > from => from = next,
            _ => return,
        }
    }
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

/// What a tile map's canvas shows: the tiling, each tile's state as last painted, and
/// which tiles hold their own pixels (never painted over again).
#[derive(Default)]
struct Drawn {
    layout: Vec<(u32, u32, u32, u32)>,
    shown: Vec<Option<UnitState>>,
    pixels: Vec<bool>,
}

/// The render job's tiles as they fill in, drawn on a canvas: each update paints only
/// the tiles whose state changed, so a 100,000-unit job costs a few rectangles per poll
/// rather than a DOM node per unit, and each settled tile's pixels are drawn once, as
/// they arrive, so the picture grows into the result.
#[component]
fn TileMap(
    params: Value,
    tiles: RwSignal<Vec<UnitState>>,
    pending: PendingTiles,
    fetched_count: RwSignal<usize>,
    /// Shown while the job runs; kept (hidden) after, with what it drew.
    hidden: Signal<bool>,
) -> impl IntoView {
    let width = params["width"].as_u64().unwrap_or(0) as u32;
    let height = params["height"].as_u64().unwrap_or(0) as u32;
    let canvas = NodeRef::<leptos::html::Canvas>::new();
    let drawn = StoredValue::new_local(Drawn::default());
    let label = move || {
        let done = tiles.with(|t| t.iter().filter(|s| **s == UnitState::Done).count());
        format!(
            "Tiles of the image: {done} of {} computed",
            tiles.with(Vec::len)
        )
    };
    let context = move || {
        canvas
            .get()?
            .get_context("2d")
            .ok()
            .flatten()?
            .dyn_into::<web_sys::CanvasRenderingContext2d>()
            .ok()
    };
    Effect::new(move |_| {
        let Some(context) = context() else {
            return;
        };
        tiles.with(|states| {
            drawn.update_value(|drawn| {
                if drawn.layout.len() != states.len() {
                    drawn.layout =
                        crate::tiles::layout(width, height, states.len()).unwrap_or_default();
                    drawn.shown = vec![None; drawn.layout.len()];
                    drawn.pixels = vec![false; drawn.layout.len()];
                }
                for (i, (&(x, y, w, h), &state)) in drawn.layout.iter().zip(states).enumerate() {
                    if drawn.shown[i] == Some(state) || drawn.pixels[i] {
                        continue;
                    }
                    drawn.shown[i] = Some(state);
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
            });
        });
    });
    // Tiles' pixels, drawn once each as they arrive; kept waiting until the tiling is
    // known (the first unit map) and the canvas exists.
    Effect::new(move |_| {
        pending.track();
        tiles.track();
        let Some(context) = context() else {
            return;
        };
        if drawn.with_value(|d| d.layout.is_empty()) {
            return;
        }
        let batch = pending
            .try_update_untracked(std::mem::take)
            .unwrap_or_default();
        drawn.update_value(|drawn| {
            for (index, output) in batch {
                let Some(&(x, y, w, h)) = drawn.layout.get(index) else {
                    continue;
                };
                let Some(rgba) = crate::tiles::tile_rgba(&output, w, h) else {
                    continue;
                };
                let image = web_sys::ImageData::new_with_u8_clamped_array_and_sh(
                    wasm_bindgen::Clamped(&rgba),
                    w,
                    h,
                );
                if let Ok(image) = image {
                    if context
                        .put_image_data(&image, f64::from(x), f64::from(y))
                        .is_ok()
                    {
                        drawn.pixels[index] = true;
                    }
                }
            }
        });
    });
    view! {
        <canvas class="tilemap" node_ref=canvas width=width height=height role="img"
            hidden=move || hidden.get()
            aria-label=label data-testid="tile-map"
            data-fetched=move || fetched_count.get().to_string()></canvas>
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

/// What the job card shows, each part followed by its own watcher.
#[derive(Clone, Copy)]
struct JobViews {
    tracked: RwSignal<Option<Tracked>>,
    tiles: RwSignal<Vec<UnitState>>,
    pending: PendingTiles,
    fetched_count: RwSignal<usize>,
    result_url: RwSignal<Option<String>>,
}

/// Follows job `record` (submitted with `key`) on the card, and remembers it for this tab
/// so a reload follows it again.
fn follow(key: String, record: &Job, views: JobViews) {
    let id = record.id.to_string();
    let kernel = record.kernel.clone();
    let params = record.params.clone();
    let work_gflop = record.flops as f64 * f64::from(record.quorum.max(1)) / 1e9;
    let started = now_ms();
    let render = kernel == "render";
    net::session_set(FOLLOWED_STORAGE, &id);
    if let Some(old) = views.result_url.get_untracked() {
        let _ = web_sys::Url::revoke_object_url(&old);
        views.result_url.set(None);
    }
    views.tracked.set(Some(Tracked {
        id: id.clone(),
        key: key.clone(),
        kernel,
        params,
        state: record.state,
        units_total: record.progress.units_total,
        units_done: record.progress.units_done,
        started_ms: started,
        now_ms: started,
        work_gflop,
        network: None,
    }));
    watch_job(id.clone(), key.clone(), views.tracked, views.result_url);
    watch_network(id.clone(), views.tracked);
    if render {
        watch_tiles(
            id,
            key,
            views.tracked,
            views.tiles,
            views.pending,
            views.fetched_count,
        );
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
    let views = JobViews {
        tracked,
        tiles,
        pending: RwSignal::new(Vec::new()),
        fetched_count: RwSignal::new(0),
        result_url,
    };
    // The relay's refusals of the current form, by the form's field key.
    let relay_errors = RwSignal::new(BTreeMap::<String, String>::new());
    let quote = RwSignal::new(None::<Result<Quote, String>>);
    let balance = RwSignal::new(None::<Account>);
    let my_jobs = RwSignal::new(None::<Result<Vec<Job>, String>>);
    // The cursor of the next page of "My jobs", while there is one.
    let my_jobs_next = RwSignal::new(None::<String>);
    // Bumped when an input file is chosen, which no signal sees otherwise.
    let files_changed = RwSignal::new(0u32);
    let quote_round = StoredValue::new(0u32);

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

    // The form as a request body: JSON, or multipart with the chosen input files.
    let request_body = move || -> Result<(JsValue, bool), String> {
        let k = kernel.get_untracked().ok_or("no kernel chosen")?;
        let v = values.get_untracked();
        let mut params = Map::new();
        for f in form_fields.get_untracked() {
            if let Ok(Some(value)) =
                parse_field(&f, v.get(&f.name).map(String::as_str).unwrap_or(""))
            {
                params.insert(f.name.clone(), value);
            }
        }
        let job = SubmitJob {
            verification: quorum
                .get_untracked()
                .parse::<u32>()
                .ok()
                .map(|quorum| Verification { quorum }),
            ..SubmitJob::new(k.id.clone(), Value::Object(params))
        };
        // Our own type with string keys: serialising it cannot fail.
        let job = serde_json::to_string(&job).unwrap_or_default();
        let mut files = Vec::new();
        for input in &k.inputs {
            let name = &input.name;
            let file = file_of(name).ok_or_else(|| format!("Choose a file for input `{name}`."))?;
            files.push((name.clone(), file));
        }
        if files.is_empty() {
            return Ok((JsValue::from_str(&job), true));
        }
        let form = web_sys::FormData::new().map_err(|_| "FormData".to_owned())?;
        form.append_with_str("job", &job)
            .map_err(|_| "FormData".to_owned())?;
        for (name, file) in &files {
            form.append_with_blob_and_filename(name, file, &file.name())
                .map_err(|_| "FormData".to_owned())?;
        }
        Ok((form.into(), false))
    };
    // A refusal naming a field of the form goes beside it; anything else is returned.
    let place_problem = move |reply: &net::Reply| -> Option<String> {
        let problem = reply.problem_body();
        let placed = problem.as_ref().and_then(|p| {
            crate::form::field_of_problem(p.field.as_deref().unwrap_or_default(), &p.detail)
        });
        match placed {
            Some((key, message)) => {
                relay_errors.update(|e| {
                    e.insert(key, message);
                });
                None
            }
            None if reply.status == 401 => {
                Some(format!("The relay wants an API key: {}", reply.problem()))
            }
            None => Some(reply.problem()),
        }
    };

    let refresh_account = move || {
        let key = api_key.get_untracked();
        if key.is_empty() {
            balance.set(None);
            my_jobs.set(None);
            return;
        }
        spawn_local(async move {
            // Answers for a key since replaced (typed one character at a time) are dropped.
            let current = || api_key.with_untracked(|k| *k == key);
            let account = net::request("GET", "/api/v1/account", None, false, Some(&key))
                .await
                .and_then(|r| r.decode::<Account>());
            if !current() {
                return;
            }
            balance.set(account.ok());
            let url = format!("/api/v1/jobs?limit={MY_JOBS}");
            let list = net::request("GET", &url, None, false, Some(&key))
                .await
                .and_then(|r| r.decode::<JobList>());
            if !current() {
                return;
            }
            my_jobs_next.set(list.as_ref().ok().and_then(|l| l.next.clone()));
            my_jobs.set(Some(list.map(|l| l.jobs)));
            // After a reload, the job this tab followed is followed again (if this key
            // owns it: another key gets the same 404 as for no job at all).
            let followed = net::session_get(FOLLOWED_STORAGE).unwrap_or_default();
            if tracked.get_untracked().is_none() && !followed.is_empty() {
                let url = format!("/api/v1/jobs/{followed}");
                if let Ok(Ok(job)) = net::request("GET", &url, None, false, Some(&key))
                    .await
                    .map(|r| r.decode::<Job>())
                {
                    if tracked.get_untracked().is_none() {
                        follow(key, &job, views);
                    }
                }
            }
        });
    };
    let more_jobs = move |_| {
        let (Some(cursor), key) = (my_jobs_next.get_untracked(), api_key.get_untracked()) else {
            return;
        };
        spawn_local(async move {
            let url = format!("/api/v1/jobs?limit={MY_JOBS}&cursor={cursor}");
            let page = net::request("GET", &url, None, false, Some(&key))
                .await
                .and_then(|r| r.decode::<JobList>());
            if api_key.with_untracked(|k| *k != key) {
                return;
            }
            match page {
                Ok(page) => {
                    my_jobs_next.set(page.next);
                    my_jobs.update(|list| {
                        if let Some(Ok(jobs)) = list {
                            jobs.extend(page.jobs);
                        }
                    });
                }
                Err(e) => my_jobs.set(Some(Err(e))),
            }
        });
    };
    Effect::new(move |_| {
        api_key.track();
        refresh_account();
    });
    // A followed job that ends changes the balance (its refund) and the list.
    let followed_state = Memo::new(move |_| tracked.with(|t| t.as_ref().map(|t| t.state)));
    Effect::new(move |previous: Option<Option<JobState>>| {
        let now = followed_state.get();
        if previous.is_some_and(|p| p != now) && now.is_some_and(JobState::ended) {
            refresh_account();
        }
        now
    });

    // The quote: the form as it stands, priced by the relay once it rests for a moment.
    Effect::new(move |_| {
        values.track();
        quorum.track();
        selected.track();
        api_key.track();
        files_changed.track();
        relay_errors.set(BTreeMap::new());
        quote_round.update_value(|r| *r = r.wrapping_add(1));
        let round = quote_round.get_value();
        spawn_local(async move {
            gloo_timers::future::TimeoutFuture::new(QUOTE_DEBOUNCE_MS).await;
            if quote_round.get_value() != round {
                return;
            }
            if !errors.get_untracked().is_empty() || kernel.get_untracked().is_none() {
                quote.set(None);
                return;
            }
            // The relay prices a job for a submitter's key; asking without one is a 401.
            if api_key.with_untracked(String::is_empty) {
                quote.set(Some(Err(
                    "enter your API key above to see the price".to_owned()
                )));
                return;
            }
            let inputs_bytes: f64 = kernel
                .get_untracked()
                .map(|k| {
                    k.inputs
                        .iter()
                        .filter_map(|i| file_of(&i.name))
                        .map(|f| f.size())
                        .sum()
                })
                .unwrap_or(0.0);
            if inputs_bytes > QUOTE_MAX_INPUT_BYTES {
                quote.set(Some(Err(
                    "the inputs are too large to send for a quote at every change; \
                     the relay prices the job when you submit it"
                        .to_owned(),
                )));
                return;
            }
            let reply = match request_body() {
                Ok((body, is_json)) => {
                    let key = api_key.get_untracked();
                    net::request(
                        "POST",
                        "/api/v1/jobs/quote",
                        Some(&body),
                        is_json,
                        Some(&key),
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            if quote_round.get_value() != round {
                return;
            }
            match reply {
                Ok(r) if r.ok() => quote.set(Some(r.decode::<Quote>())),
                Ok(r) => quote.set(place_problem(&r).map(Err)),
                Err(e) => quote.set(Some(Err(e))),
            }
        });
    });

    let submit = move |e: leptos::ev::SubmitEvent| {
        e.prevent_default();
        attempted.set(true);
        submit_error.set(None);
        if !errors.get_untracked().is_empty() {
            return;
        }
        let body = match request_body() {
            Ok(body) => body,
            Err(e) => {
                submit_error.set(Some(e));
                return;
            }
        };
        let key = api_key.get_untracked();
        sending.set(true);
        spawn_local(async move {
            let (body, is_json) = body;
            let reply =
                net::request("POST", "/api/v1/jobs", Some(&body), is_json, Some(&key)).await;
            sending.set(false);
            match reply {
                Ok(r) if r.ok() => match r.decode::<Job>() {
                    Ok(job) => {
                        follow(key, &job, views);
                        refresh_account();
                    }
                    Err(e) => submit_error.set(Some(e)),
                },
                Ok(r) => {
                    if let Some(message) = place_problem(&r) {
                        submit_error.set(Some(message));
                    } else {
                        submit_error.set(Some(
                            "The relay refused a field marked above; nothing was sent.".into(),
                        ));
                    }
                }
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
                .or_else(|| relay_errors.with(|e| e.get(&name_for_err).cloned()))
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
                                // A registered kernel's id is 64 hex digits: named by what
                                // its owner says it does, and the start of its id.
                                let label = match &k.custom {
                                    Some(_) => format!(
                                        "{} ({}…)",
                                        k.description.chars().take(60).collect::<String>(),
                                        id.chars().take(12).collect::<String>()
                                    ),
                                    None => id.clone(),
                                };
                                view! { <option value=id.clone()>{label}</option> }
                            }).collect_view()}
                        </select>
                        <small class="hint">{move || kernel.get().map(|k| k.description)}</small>
                        {relay_error_view(relay_errors, "kernel")}
                    </div>
                }.into_any(),
            }}
            // The rest of the form waits for the kernels, so that nothing moves down under
            // the reader's eyes when they arrive (Lighthouse measured a layout shift of 0.24;
            // 0.06 with this and "My jobs" waiting too, the footer still moving).
            <div hidden=move || kernel.get().is_none()>
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
                                    <input id=id.clone() type="file" data-testid=id.clone()
                                        on:change=move |_| files_changed.update(|n| *n = n.wrapping_add(1)) />
                                    <small class="hint">{i.encoding.clone()}</small>
                                    {relay_error_view(relay_errors, &id)}
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
                {relay_error_view(relay_errors, "quorum")}
            </div>
            <p class="quote" data-testid="quote" aria-live="polite">
                {move || match quote.get() {
                    None => String::new(),
                    Some(Ok(q)) => quote_text(&q, balance.get().as_ref()),
                    Some(Err(e)) => format!("No quote: {e}"),
                }}
            </p>
            <p class="hint" data-testid="balance">
                {move || balance.get().map(|b| format!("Your balance: {} credits", b.balance))}
            </p>
            <div class="controls">
                <button type="submit" data-testid="submit" disabled=move || sending.get() || kernel.get().is_none()>
                    {move || if sending.get() { "Submitting…" } else { "Submit job" }}
                </button>
                {move || (attempted.get() && !errors.get().is_empty()).then(|| view! {
                    <span class="error" role="alert" data-testid="form-error">"Fix the fields marked above; nothing was sent."</span>
                })}
                {move || submit_error.get().map(|e| view! { <span class="error" role="alert" data-testid="submit-error">{e}</span> })}
            </div>
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
                        <TileMap params=params.clone() tiles=tiles pending=views.pending
                            fetched_count=views.fetched_count
                            hidden=Signal::derive(move || state() == Some(JobState::Done)) />
                    })}
                    {move || result_url.get().filter(|_| render).map(|src| view! {
                        <img class="render" src=src alt="The rendered image" data-testid="result-image" />
                    })}
                </section>
            }
        })}
        // Shown with the form's kernels, for the same reason as the form's lower half: it
        // would otherwise move down as they arrive.
        <section class="card" aria-labelledby="my-jobs-title" data-testid="my-jobs" hidden=move || kernels.get().is_none()>
            <h2 id="my-jobs-title">"My jobs"</h2>
            {move || match my_jobs.get() {
                None => view! { <p class="hint">"Enter your API key to see your jobs."</p> }.into_any(),
                Some(Err(e)) => view! { <p class="error" role="alert">{format!("Your jobs could not be loaded: {e}")}</p> }.into_any(),
                Some(Ok(jobs)) if jobs.is_empty() => view! { <p class="hint">"No jobs yet."</p> }.into_any(),
                Some(Ok(jobs)) => view! {
                    <ul class="my-jobs">
                        {jobs.into_iter().map(|job| {
                            let id = job.id.to_string();
                            let key = api_key.get_untracked();
                            let line = format!(
                                "{} · {} · {} of {} units",
                                job.kernel, job.state, job.progress.units_done, job.progress.units_total
                            );
                            let test_id = format!("my-job-{id}");
                            view! {
                                <li>
                                    <code>{id.clone()}</code>" "{line}" "
                                    <button type="button" data-testid=test_id
                                        on:click=move |_| follow(key.clone(), &job, views)>
                                        "Follow"
                                    </button>
                                </li>
                            }
                        }).collect_view()}
                    </ul>
                }.into_any(),
            }}
            {move || my_jobs_next.get().is_some().then(|| view! {
                <button type="button" data-testid="my-jobs-more" on:click=more_jobs>"More jobs"</button>
            })}
        </section>
    }
}

/// The relay's refusal of form field `key`, beside it.
fn relay_error_view(errors: RwSignal<BTreeMap<String, String>>, key: &str) -> impl IntoView {
    let key = key.to_owned();
    let test_id = format!("relay-error-{key}");
    view! {
        <small class="field-error" role="alert" data-testid=test_id>
            {move || errors.with(|e| e.get(&key).cloned())}
        </small>
    }
}

/// A quote as the form shows it beside Submit, saying so when the balance falls short.
fn quote_text(q: &Quote, balance: Option<&Account>) -> String {
    let eta = match q.eta_s {
        Some(s) => format!("about {:.0} s at the network's pace", s.ceil()),
        None if q.volunteers == 0 => "no volunteer online now".to_owned(),
        None => "no pace measured yet".to_owned(),
    };
    let short = balance
        .filter(|b| b.balance_micro < q.price_micro)
        .map(|b| format!(" · more than your balance of {} credits", b.balance))
        .unwrap_or_default();
    format!("{} units · {} credits{short} · {eta}", q.units, q.price)
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
