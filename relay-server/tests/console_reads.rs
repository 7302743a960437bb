//! What the console reads besides the job itself, through the real router (no socket):
//! a quote before submitting (`POST /api/v1/jobs/quote`), and a running render's settled
//! tiles (`GET /api/v1/jobs/{id}/units/outputs`). Each is checked against what a hostile
//! caller tries: another account reading the tiles, a quote for a job the relay would
//! never take.

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use common::router::call;
use common::TempDir;
use serde_json::{json, Value};
use starling_api::{Account, Job, JobList, Quote, UnitOutputs};
use starling_kernels::{Catalog, NamedInputs};
use starling_protocol::{LeaseId, WalletKey};
use starling_relay::app::Limits;
use starling_relay::ledger::MicroCredits;
use starling_relay::storage::{
    Billing, Judging, LeaseRequest, LeaseTerms, PeerId, Pricing, Recorded, ReturnedResult, Storage,
};
use starling_relay::validation::Reference;
use std::sync::Arc;
use std::time::Instant;

struct Relay {
    router: Router,
    storage: Storage,
    _dir: TempDir,
}

/// A relay that bills jobs at one credit per GFLOP.
async fn billing_relay(name: &str) -> Relay {
    let dir = TempDir::new(&format!("console-reads-{name}"));
    let storage = Storage::open(&dir)
        .await
        .expect("storage opens")
        .with_billing(Billing {
            key: WalletKey::from_seed([42; 32]),
            pricing: Pricing {
                price_per_gflop: MicroCredits(1_000_000),
                site_share_ppm: 0,
                platform_fee_ppm: 0,
            },
        });
    Relay {
        router: common::router::router(&dir, storage.clone(), Limits::default()),
        storage,
        _dir: dir,
    }
}

impl Relay {
    /// A submitter account holding `credits`, and its API key.
    async fn account(&self, credits: u64) -> String {
        self.storage
            .create_account(
                &WalletKey::from_seed([42; 32]),
                MicroCredits(credits * 1_000_000),
                None,
            )
            .await
            .expect("account created")
            .1
    }
}

fn get(uri: &str, key: Option<&str>) -> Request<Body> {
    let mut request = Request::get(uri);
    if let Some(key) = key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    request.body(Body::empty()).expect("valid request")
}

fn post(uri: &str, body: &Value, key: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .body(Body::from(body.to_string()))
        .expect("valid request")
}

async fn balance(relay: &Relay, key: &str) -> u64 {
    call(&relay.router, get("/api/v1/account", Some(key)))
        .await
        .decode::<Account>()
        .balance_micro
}

#[tokio::test]
async fn a_quote_is_what_the_submission_then_costs_and_stores_nothing() {
    let relay = billing_relay("quote").await;
    let key = relay.account(1_000).await;
    let job = json!({
        "kernel": "render",
        "params": {"width": 640, "height": 480, "samples_per_pixel": 16, "seed": 3},
        "verification": {"quorum": 2},
    });
    let before = balance(&relay, &key).await;
    let answer = call(&relay.router, post("/api/v1/jobs/quote", &job, &key)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let quote: Quote = answer.decode();
    assert!(quote.units > 1, "{quote:?}");
    assert_eq!(quote.quorum, 2);
    assert!(quote.price_micro > 0, "{quote:?}");
    assert_eq!(
        quote.price,
        MicroCredits(quote.price_micro).to_string(),
        "{quote:?}"
    );
    assert_eq!(quote.eta_s, None, "no pace measured yet: no estimate");

    // Quoting stored nothing and charged nothing.
    assert_eq!(balance(&relay, &key).await, before);
    let list: JobList = call(&relay.router, get("/api/v1/jobs", Some(&key)))
        .await
        .decode();
    assert!(list.jobs.is_empty(), "{list:?}");

    // Submitting the same job costs exactly the quote, in as many units.
    let created = call(&relay.router, post("/api/v1/jobs", &job, &key)).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let record: Job = created.decode();
    assert_eq!(record.progress.units_total as u64, quote.units);
    assert_eq!(record.flops, quote.flops);
    assert_eq!(before - balance(&relay, &key).await, quote.price_micro);
}

#[tokio::test]
async fn a_quote_refuses_what_submit_refuses_as_cheaply_and_in_plain_words() {
    let relay = billing_relay("quote-refusals").await;
    let key = relay.account(1_000).await;
    let render = |params: Value| json!({"kernel": "render", "params": params});
    let cases = [
        (
            render(json!({"width": 0, "height": 8, "samples_per_pixel": 1, "seed": 1})),
            Some("params.width"),
        ),
        // A parameter left out is the parameters' fault, not a field named `params`.
        (render(json!({"width": 8, "height": 8})), Some("params")),
        (
            json!({"kernel": "render", "params": {"width": 8, "height": 8, "samples_per_pixel": 1, "seed": 1}, "verification": {"quorum": 9}}),
            Some("verification.quorum"),
        ),
        (json!({"kernel": "nope", "params": {}}), Some("kernel")),
        // A huge image at many samples: more units than the relay takes in one
        // job, refused after the split, before anything is stored.
        (
            render(json!({"width": 4096, "height": 2048, "samples_per_pixel": 1024, "seed": 1})),
            Some("params"),
        ),
    ];
    for (job, field) in cases {
        let started = Instant::now();
        let quoted = call(&relay.router, post("/api/v1/jobs/quote", &job, &key)).await;
        let quote_time = started.elapsed();
        let started = Instant::now();
        let submitted = call(&relay.router, post("/api/v1/jobs", &job, &key)).await;
        let submit_time = started.elapsed();
        let detail = quoted.problem(422, field);
        assert_eq!(detail, submitted.problem(422, field), "{job}");
        // The operator's flags belong in the relay's log, not in the submitter's form.
        assert!(!detail.contains("--"), "{detail}");
        println!("{field:?}: quote refused in {quote_time:?}, submit in {submit_time:?}");
        assert!(
            quote_time < submit_time * 3 + std::time::Duration::from_millis(250),
            "{job}: the quote took {quote_time:?}, the submission {submit_time:?}"
        );
        // Counted, not planned: 131,072 units written out took seconds.
        assert!(
            quote_time + submit_time < std::time::Duration::from_secs(2),
            "{job}: refused in {quote_time:?} and {submit_time:?}"
        );
    }
    let list: JobList = call(&relay.router, get("/api/v1/jobs", Some(&key)))
        .await
        .decode();
    assert!(list.jobs.is_empty(), "{list:?}");
}

/// Leases one unit of the relay's work to a fresh wallet and returns `output_of` its
/// unit as the result; the unit's index in `plan_units` (its parameters' JSON text).
async fn settle_one(
    relay: &Relay,
    seed: u8,
    plan_units: &[String],
    output_of: impl Fn(usize, &Value) -> Vec<u8>,
) -> usize {
    let wallet = WalletKey::from_seed([seed; 32]).address();
    let lease = LeaseId::from_uuid(uuid::Uuid::new_v4());
    let request = LeaseRequest {
        custom_ok: true,
        peer: PeerId::new(),
        wallet,
        site: None,
        lease,
        terms: LeaseTerms::until(i64::MAX / 2),
        network: None,
        draw: 0.0,
    };
    let leased = relay
        .storage
        .lease_work(&request, |_, q| q)
        .await
        .expect("lease query")
        .expect("a unit to lease");
    let index = plan_units
        .iter()
        .position(|u| *u == leased.unit_params)
        .expect("the unit is one of the plan's");
    let unit: Value = serde_json::from_str(&leased.unit_params).expect("unit params");
    let output = output_of(index, &unit);
    let recorded = relay
        .storage
        .record_result(
            ReturnedResult {
                lease,
                wallet,
                output: &output,
                spot_check: None,
            },
            Judging {
                max_results: 6,
                vet_newcomers: false,
            },
            Arc::new(|a: &[u8], b: &[u8]| a == b),
            Reference::NotRun,
        )
        .await
        .expect("result query");
    assert!(matches!(recorded, Recorded::Valid { .. }), "{recorded:?}");
    index
}

/// A render tile's output as the test fakes it: every byte is the unit's index.
fn tile(index: usize, unit: &Value) -> Vec<u8> {
    let pixels = unit["w"].as_u64().unwrap_or(0) * unit["h"].as_u64().unwrap_or(0);
    vec![index as u8; pixels as usize * 12]
}

#[tokio::test]
async fn settled_tiles_are_read_in_ranges_under_a_byte_cap_by_their_owner_only() {
    let relay = billing_relay("outputs").await;
    let owner = relay.account(1_000).await;
    let other = relay.account(1_000).await;
    // 64 MFLOP units (the default) of a 1024x512 render at one sample and one bounce:
    // tiles of over 1 MiB of output each, so one tile fills a page.
    let params = json!({
        "width": 1024, "height": 512, "samples_per_pixel": 1, "max_bounces": 1, "seed": 1,
    });
    let job = json!({"kernel": "render", "params": params, "verification": {"quorum": 1}});
    let created = call(&relay.router, post("/api/v1/jobs", &job, &owner)).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.decode::<Job>().id;
    let plan = Catalog::builtin()
        .get("render")
        .expect("render")
        .plan(&params, &NamedInputs::new(), 64_000_000)
        .expect("plan");
    assert!(plan.units.len() >= 2, "{}", plan.units.len());
    let first_unit: Value = serde_json::from_str(&plan.units[0]).expect("unit");
    assert!(
        tile(0, &first_unit).len() > starling_api::jobs::OUTPUTS_PAGE_BYTES,
        "{first_unit}"
    );
    let outputs = |query: &str, key: Option<&str>| {
        let router = relay.router.clone();
        let uri = format!("/api/v1/jobs/{id}/units/outputs{query}");
        let key = key.map(str::to_owned);
        async move { call(&router, get(&uri, key.as_deref())).await }
    };

    // Nothing settled: an empty page, and the range is covered.
    let page: UnitOutputs = outputs("", Some(&owner)).await.decode();
    assert_eq!(
        page,
        UnitOutputs {
            outputs: vec![],
            next: None
        }
    );

    let first = settle_one(&relay, 1, &plan.units, tile).await;
    let second = settle_one(&relay, 2, &plan.units, tile).await;
    let mut settled = [first, second];
    settled.sort_unstable();

    // Another account, or no key, learns nothing: 404 as for a job that does not exist.
    outputs("", Some(&other)).await.problem(404, None);
    outputs("", None).await.problem(401, None);
    let page = call(
        &relay.router,
        get(
            &format!("/api/v1/jobs/{}/units/outputs", uuid::Uuid::new_v4()),
            Some(&owner),
        ),
    )
    .await;
    page.problem(404, None);

    // Each tile is over the page's 1 MiB: one per page, `next` going on to the
    // other, in unit order.
    let page: UnitOutputs = outputs("", Some(&owner)).await.decode();
    assert_eq!(page.outputs.len(), 1);
    assert_eq!(page.outputs[0].index, settled[0] as i64);
    assert_eq!(page.next, Some(settled[1] as i64));
    let b64 = base64::engine::general_purpose::STANDARD;
    let bytes = b64.decode(&page.outputs[0].output).expect("base64");
    let unit: Value = serde_json::from_str(&plan.units[settled[0]]).expect("unit");
    assert_eq!(bytes, tile(settled[0], &unit));
    let rest: UnitOutputs = outputs(&format!("?from={}", settled[1]), Some(&owner))
        .await
        .decode();
    assert_eq!(rest.outputs.len(), 1);
    assert_eq!(rest.outputs[0].index, settled[1] as i64);
    assert_eq!(rest.next, None);

    // A range names only the units it covers.
    let only_first: UnitOutputs = outputs(
        &format!("?from={}&to={}", settled[0], settled[0] + 1),
        Some(&owner),
    )
    .await
    .decode();
    assert_eq!(only_first.outputs.len(), 1);
    assert_eq!(only_first.next, None);
    for bad in ["?from=-1", "?to=-5", "?from=x", "?since=3"] {
        let answer = outputs(bad, Some(&owner)).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }

    // Cancelled and purged, the tiles are gone for good.
    let cancel = Request::delete(format!("/api/v1/jobs/{id}"))
        .header(header::AUTHORIZATION, format!("Bearer {owner}"))
        .body(Body::empty())
        .expect("valid request");
    assert_eq!(call(&relay.router, cancel).await.status, StatusCode::OK);
    let purge = Request::delete(format!("/api/v1/jobs/{id}/data"))
        .header(header::AUTHORIZATION, format!("Bearer {owner}"))
        .body(Body::empty())
        .expect("valid request");
    assert_eq!(call(&relay.router, purge).await.status, StatusCode::OK);
    outputs("", Some(&owner)).await.problem(410, None);
}
