//! Registering a submitter's own WGSL kernel (`POST /api/v1/kernels`) through the real
//! router: the examples in `examples/kernels/` register; bad shaders and manifests get a
//! 422 naming the line and column or the field at fault; a kernel is content-addressed,
//! owned by its first registrant, listed beside the built-ins and readable by anyone.

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use common::router::call;
use common::websocket;
use common::TempDir;
use serde_json::{json, Value};
use starling_api::manifest::{content_id, KernelManifest};
use starling_api::Job;
use starling_api::{CustomKernel, KernelCatalog};
use starling_kernels::NamedInputs;
use starling_protocol::LeaseId;
use starling_protocol::WalletKey;
use starling_protocol::{DeviceInfo, ToRelay, ToVolunteer};
use starling_relay::app::Limits;
use starling_relay::ledger::MicroCredits;
use starling_relay::storage::{
    Billing, Judging, LeaseRequest, LeaseTerms, PeerId, Pricing, Recorded, ReturnedResult, Storage,
};
use starling_relay::validation::Reference;
use std::sync::Arc;
use std::time::Duration;

const SAXPY_WGSL: &str = include_str!("../../examples/kernels/saxpy.wgsl");
const SAXPY_JSON: &str = include_str!("../../examples/kernels/saxpy.json");
const MANDELBROT_WGSL: &str = include_str!("../../examples/kernels/mandelbrot.wgsl");
const MANDELBROT_JSON: &str = include_str!("../../examples/kernels/mandelbrot.json");
const BLUR_WGSL: &str = include_str!("../../examples/kernels/blur.wgsl");
const BLUR_JSON: &str = include_str!("../../examples/kernels/blur.json");

struct Relay {
    router: Router,
    storage: Storage,
    _dir: TempDir,
}

/// A relay on SQLite that bills, so every registration names an account.
async fn relay(name: &str) -> Relay {
    relay_on(name, false).await
}

/// [`relay`] on SQLite or on a PostgreSQL server of the test's own.
async fn relay_on(name: &str, postgres: bool) -> Relay {
    let dir = TempDir::new(&format!("custom-kernels-{name}"));
    let storage = if postgres {
        let url = common::postgres::Postgres::shared()
            .and_then(|server| server.database())
            .expect("PostgreSQL starts (scripts/setup.sh installs it)");
        Storage::open_postgres(&url, &dir).await
    } else {
        Storage::open(&dir).await
    };
    let storage = storage.expect("storage opens").with_billing(Billing {
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
    /// A new account's id and API key.
    async fn account(&self) -> (String, String) {
        self.account_with(0).await
    }

    /// A new account holding `credits`, its id and API key.
    async fn account_with(&self, credits: u64) -> (String, String) {
        let (id, key) = self
            .storage
            .create_account(
                &WalletKey::from_seed([42; 32]),
                MicroCredits(credits * 1_000_000),
                None,
            )
            .await
            .expect("account created");
        (id.to_string(), key)
    }

    async fn register(
        &self,
        source: &str,
        manifest: &Value,
        key: Option<&str>,
    ) -> common::router::Answer {
        let mut request =
            Request::post("/api/v1/kernels").header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let body = json!({"source": source, "manifest": manifest}).to_string();
        call(
            &self.router,
            request.body(Body::from(body)).expect("valid request"),
        )
        .await
    }

    async fn get(&self, uri: &str) -> common::router::Answer {
        call(
            &self.router,
            Request::get(uri)
                .body(Body::empty())
                .expect("valid request"),
        )
        .await
    }
}

fn post_job(body: &Value, key: &str) -> Request<Body> {
    Request::post("/api/v1/jobs")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .body(Body::from(body.to_string()))
        .expect("valid request")
}

fn f32s_base64(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A lease request from a fresh wallet; `custom_ok` as a GPU volunteer's (true) or the
/// CPU fallback's (false).
fn lease_request(seed: u8, custom_ok: bool) -> LeaseRequest {
    LeaseRequest {
        custom_ok,
        peer: PeerId::new(),
        wallet: WalletKey::from_seed([seed; 32]).address(),
        site: None,
        lease: LeaseId::from_uuid(uuid::Uuid::new_v4()),
        terms: LeaseTerms::until(i64::MAX / 2),
        network: None,
        draw: 0.0,
    }
}

fn manifest(text: &str) -> Value {
    serde_json::from_str(text).expect("the example manifest is JSON")
}

#[tokio::test]
async fn the_examples_register_and_are_listed_beside_the_builtins_with_their_owner() {
    let relay = relay("examples").await;
    let (owner, key) = relay.account().await;
    let mut ids = Vec::new();
    for (source, json) in [
        (SAXPY_WGSL, SAXPY_JSON),
        (MANDELBROT_WGSL, MANDELBROT_JSON),
        (BLUR_WGSL, BLUR_JSON),
    ] {
        let answer = relay.register(source, &manifest(json), Some(&key)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.json());
        let kernel: CustomKernel = answer.decode();
        assert_eq!(kernel.owner.as_deref(), Some(owner.as_str()));
        assert_eq!(kernel.source, source);
        assert_eq!(kernel.id.len(), 64);
        ids.push(kernel.id);
    }
    let catalog: KernelCatalog = relay.get("/api/v1/kernels").await.decode();
    assert!(catalog
        .kernels
        .iter()
        .any(|k| k.id == "matmul" && k.custom.is_none()));
    for id in &ids {
        let listed = catalog
            .kernels
            .iter()
            .find(|k| &k.id == id)
            .expect("a registered kernel is listed");
        let origin = listed.custom.as_ref().expect("marked as custom");
        assert_eq!(origin.owner.as_deref(), Some(owner.as_str()));
    }
    let saxpy = catalog
        .kernels
        .iter()
        .find(|k| k.id == ids[0])
        .expect("listed");
    assert_eq!(
        saxpy.params_schema["properties"]["n"],
        json!({"type": "integer", "minimum": 1, "maximum": 16_777_216, "default": 1})
    );
    assert_eq!(
        saxpy
            .inputs
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "x", "y"]
    );
}

#[tokio::test]
async fn a_kernel_is_content_addressed_and_keeps_its_first_owner() {
    content_addressed_and_owned(relay("content").await).await;
}

#[tokio::test]
async fn a_kernel_is_content_addressed_and_keeps_its_first_owner_on_postgresql() {
    content_addressed_and_owned(relay_on("content-pg", true).await).await;
}

async fn content_addressed_and_owned(relay: Relay) {
    let (first, first_key) = relay.account().await;
    let (_, second_key) = relay.account().await;
    let saxpy = manifest(SAXPY_JSON);
    let created: CustomKernel = relay
        .register(SAXPY_WGSL, &saxpy, Some(&first_key))
        .await
        .decode();

    // The same content from someone else: the same kernel, still the first owner's.
    let again = relay.register(SAXPY_WGSL, &saxpy, Some(&second_key)).await;
    assert_eq!(again.status, StatusCode::OK);
    let again: CustomKernel = again.decode();
    assert_eq!(again.id, created.id);
    assert_eq!(again.owner.as_deref(), Some(first.as_str()));

    // The manifest's key order and spacing are not content: the id is the same.
    let reordered: Value =
        serde_json::from_str(&serde_json::to_string_pretty(&saxpy).expect("JSON")).expect("JSON");
    let same: CustomKernel = relay
        .register(SAXPY_WGSL, &reordered, Some(&second_key))
        .await
        .decode();
    assert_eq!(same.id, created.id);

    // Any change to the source or the manifest is another kernel.
    let edited = SAXPY_WGSL.replace("a[0] * x[id.x] + y[id.x]", "a[0] * x[id.x] - y[id.x]");
    let other = relay.register(&edited, &saxpy, Some(&second_key)).await;
    assert_eq!(other.status, StatusCode::CREATED);
    assert_ne!(other.decode::<CustomKernel>().id, created.id);
    let mut cheaper = saxpy.clone();
    cheaper["flops_per_invocation"] = json!(1);
    let other: CustomKernel = relay
        .register(SAXPY_WGSL, &cheaper, Some(&second_key))
        .await
        .decode();
    assert_ne!(other.id, created.id);

    // Anyone reads the source, without a key.
    let read = relay.get(&format!("/api/v1/kernels/{}", created.id)).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.json());
    let read: CustomKernel = read.decode();
    assert_eq!(read.source, SAXPY_WGSL);
    assert_eq!(
        read.manifest,
        serde_json::from_value(saxpy).expect("a manifest")
    );
}

#[tokio::test]
async fn registering_needs_a_key_and_an_account_holds_a_bounded_number_of_kernels() {
    let relay = relay("owners").await;
    let saxpy = manifest(SAXPY_JSON);
    relay
        .register(SAXPY_WGSL, &saxpy, None)
        .await
        .problem(401, None);
    relay
        .register(SAXPY_WGSL, &saxpy, Some("stk_made_up"))
        .await
        .problem(401, None);

    let (_, key) = relay.account().await;
    let cap = starling_relay::routes::kernels::MAX_KERNELS_PER_ACCOUNT;
    for n in 0..cap {
        let source = format!("{SAXPY_WGSL}\n// variant {n}\n");
        let answer = relay.register(&source, &saxpy, Some(&key)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.json());
    }
    let over = relay
        .register(
            &format!("{SAXPY_WGSL}\n// one too many\n"),
            &saxpy,
            Some(&key),
        )
        .await;
    assert!(over.problem(429, None).contains("kernels"));
    // Another account is not held to the first one's count.
    let (_, other_key) = relay.account().await;
    let answer = relay.register(SAXPY_WGSL, &saxpy, Some(&other_key)).await;
    assert_eq!(answer.status, StatusCode::CREATED);
}

#[tokio::test]
async fn unknown_kernel_ids_are_404_without_echoing_them_whole() {
    let relay = relay("unknown").await;
    let missing = relay
        .get(&format!("/api/v1/kernels/{}", "0".repeat(64)))
        .await;
    missing.problem(404, None);
    let long = "x".repeat(5000);
    let detail = relay
        .get(&format!("/api/v1/kernels/{long}"))
        .await
        .problem(404, None);
    assert!(detail.len() < 200, "{detail}");
}

/// Registers `source` with `manifest`, expecting a 422 naming `field`; its detail.
async fn refused(relay: &Relay, key: &str, source: &str, manifest: &Value, field: &str) -> String {
    relay
        .register(source, manifest, Some(key))
        .await
        .problem(422, Some(field))
}

#[tokio::test]
async fn bad_kernels_are_refused_naming_the_line_or_the_field() {
    let relay = relay("refusals").await;
    let (_, key) = relay.account().await;
    let saxpy = manifest(SAXPY_JSON);

    // A syntax error: the detail names where it is.
    let broken = SAXPY_WGSL.replace("a[0] * x[id.x] + y[id.x];", "a[0] * x[id.x] + ;");
    let line = broken
        .lines()
        .position(|l| l.contains("x[id.x] + ;"))
        .expect("the broken line")
        + 1;
    let detail = refused(&relay, &key, &broken, &saxpy, "source").await;
    assert!(
        detail.contains(&format!("line {line}, column ")),
        "{detail}"
    );

    // Wrong binding types: an input the manifest calls u32 is f32 in the shader, an
    // input the shader may write, an output declared read-only.
    let mut as_u32 = saxpy.clone();
    as_u32["inputs"][1]["element"] = json!("u32");
    let detail = refused(&relay, &key, SAXPY_WGSL, &as_u32, "manifest.inputs[1]").await;
    assert!(detail.contains("array<u32>"), "{detail}");
    let writable = SAXPY_WGSL.replace(
        "var<storage, read> x: array<f32>",
        "var<storage, read_write> x: array<f32>",
    );
    refused(&relay, &key, &writable, &saxpy, "manifest.inputs[1]").await;
    let mut integer_out = saxpy.clone();
    integer_out["output"]["element"] = json!("u32");
    refused(&relay, &key, SAXPY_WGSL, &integer_out, "manifest.output").await;
    // Slices per unit: not of the output, not of an input that does not hold
    // per_invocation elements per invocation, and never of none.
    let mut sliced_out = saxpy.clone();
    sliced_out["output"]["per_unit"] = json!({"per_invocation": 1});
    refused(
        &relay,
        &key,
        SAXPY_WGSL,
        &sliced_out,
        "manifest.output.per_unit",
    )
    .await;
    for per_unit in [json!({"per_invocation": 2}), json!({"per_invocation": 0})] {
        let mut mismatched = saxpy.clone();
        mismatched["inputs"][1]["per_unit"] = per_unit;
        refused(
            &relay,
            &key,
            SAXPY_WGSL,
            &mismatched,
            "manifest.inputs[1].per_unit",
        )
        .await;
    }
    // Writing a read-only buffer is the shader's own error, with its place.
    let read_only_out =
        SAXPY_WGSL.replace("var<storage, read_write> out", "var<storage, read> out");
    let detail = refused(&relay, &key, &read_only_out, &saxpy, "source").await;
    assert!(detail.contains("line "), "{detail}");

    // The entry point the manifest names is not there.
    let mut misnamed = saxpy.clone();
    misnamed["entry_point"] = json!("run");
    let detail = refused(&relay, &key, SAXPY_WGSL, &misnamed, "manifest.entry_point").await;
    assert!(detail.contains("`run`"), "{detail}");

    // A workgroup over WebGPU's 256 invocations, declared the same in both.
    let wide = SAXPY_WGSL.replace("@workgroup_size(256)", "@workgroup_size(512)");
    let mut wide_manifest = saxpy.clone();
    wide_manifest["workgroup_size"] = json!([512, 1, 1]);
    let detail = refused(
        &relay,
        &key,
        &wide,
        &wide_manifest,
        "manifest.workgroup_size",
    )
    .await;
    assert!(detail.contains("256"), "{detail}");
    // ... and a manifest that disagrees with the shader.
    let mut disagreeing = saxpy.clone();
    disagreeing["workgroup_size"] = json!([64, 1, 1]);
    refused(
        &relay,
        &key,
        SAXPY_WGSL,
        &disagreeing,
        "manifest.workgroup_size",
    )
    .await;

    // A length that overflows u64 with n at its max.
    let mut overflowing = saxpy.clone();
    overflowing["inputs"][1]["length"] = json!("n * n * n * n");
    let detail = refused(
        &relay,
        &key,
        SAXPY_WGSL,
        &overflowing,
        "manifest.inputs[1].length",
    )
    .await;
    assert!(detail.contains("overflows"), "{detail}");
    // ... and one that fits u64 but not a WebGPU storage buffer.
    let mut too_big = saxpy.clone();
    too_big["output"]["length"] = json!("n * 16");
    refused(&relay, &key, SAXPY_WGSL, &too_big, "manifest.output.length").await;

    // A parameter the manifest never declared.
    let mut unknown = saxpy.clone();
    unknown["inputs"][2]["length"] = json!("m");
    let detail = refused(
        &relay,
        &key,
        SAXPY_WGSL,
        &unknown,
        "manifest.inputs[2].length",
    )
    .await;
    assert!(
        detail.contains("`m` is not a declared parameter"),
        "{detail}"
    );
    let mut unknown_range = saxpy.clone();
    unknown_range["split"]["range"] = json!(["count"]);
    refused(
        &relay,
        &key,
        SAXPY_WGSL,
        &unknown_range,
        "manifest.split.range[0]",
    )
    .await;

    // Nothing registered by any of them.
    let catalog: KernelCatalog = relay.get("/api/v1/kernels").await.decode();
    assert!(catalog.kernels.iter().all(|k| k.custom.is_none()));
}

#[tokio::test]
async fn shaders_reaching_past_the_manifest_are_refused() {
    let relay = relay("reach").await;
    let (_, key) = relay.account().await;
    let saxpy = manifest(SAXPY_JSON);

    // A binding the manifest does not declare (here a texture) is not bound by anyone.
    let texture = format!("{SAXPY_WGSL}\n@group(0) @binding(7) var extra: texture_2d<f32>;\n");
    let detail = refused(&relay, &key, &texture, &saxpy, "source").await;
    assert!(detail.contains("`extra`"), "{detail}");
    let other_group = SAXPY_WGSL.replace("@group(0) @binding(2)", "@group(1) @binding(2)");
    refused(&relay, &key, &other_group, &saxpy, "source").await;

    // A unit uniform without the fields the relay fills in.
    let bare_unit = SAXPY_WGSL.replace("    range: vec2<u32>,\n", "");
    refused(&relay, &key, &bare_unit, &saxpy, "manifest.unit_binding").await;

    // Workgroup memory over WebGPU's 16 KiB.
    let hoard = SAXPY_WGSL
        .replace(
            "@compute",
            "var<workgroup> hoard: array<f32, 8192>;\n\n@compute",
        )
        .replace("return;\n    }", "return;\n    }\n    hoard[id.x] = 1.0;");
    refused(&relay, &key, &hoard, &saxpy, "source").await;

    // A source over the limit, a tolerance on integers, silly FLOPs.
    let huge = format!("{SAXPY_WGSL}\n//{}\n", "x".repeat(70 * 1024));
    refused(&relay, &key, &huge, &saxpy, "source").await;
    let mut tolerant = manifest(MANDELBROT_JSON);
    tolerant["compare"] = json!({"abs": 1.0});
    refused(&relay, &key, MANDELBROT_WGSL, &tolerant, "manifest.compare").await;
    let mut free = saxpy.clone();
    free["flops_per_invocation"] = json!(0);
    refused(
        &relay,
        &key,
        SAXPY_WGSL,
        &free,
        "manifest.flops_per_invocation",
    )
    .await;

    // Deeply nested source costs naga a bounded effort and is an error, not a crash.
    let nested = SAXPY_WGSL.replace(
        "a[0] * x[id.x] + y[id.x]",
        &format!("{}a[0]{}", "(".repeat(5000), ")".repeat(5000)),
    );
    refused(&relay, &key, &nested, &saxpy, "source").await;
}

#[tokio::test]
async fn a_registered_kernels_units_are_replicated_and_never_leased_to_the_cpu_fallback() {
    jobs_replicated_and_gpu_only(relay("jobs").await).await;
}

#[tokio::test]
async fn a_registered_kernels_units_are_replicated_and_never_leased_to_the_cpu_fallback_on_postgresql(
) {
    jobs_replicated_and_gpu_only(relay_on("jobs-pg", true).await).await;
}

async fn jobs_replicated_and_gpu_only(relay: Relay) {
    let (_, key) = relay.account_with(100).await;
    let kernel: CustomKernel = relay
        .register(SAXPY_WGSL, &manifest(SAXPY_JSON), Some(&key))
        .await
        .decode();
    let n = 1000;
    let job = json!({
        "kernel": kernel.id,
        "params": {"n": n},
        "input": {
            "a": f32s_base64(&[2.0]),
            "x": f32s_base64(&vec![1.0; n]),
            "y": f32s_base64(&vec![0.5; n]),
        },
    });

    // A single result is never enough: nothing else would check it.
    let mut solo = job.clone();
    solo["verification"] = json!({"quorum": 1});
    let detail = call(&relay.router, post_job(&solo, &key))
        .await
        .problem(422, Some("verification.quorum"));
    assert!(detail.contains("at least 2"), "{detail}");
    // A job that does not fit the manifest names the parameter or input.
    let mut short = job.clone();
    short["params"]["n"] = json!(n + 1);
    call(&relay.router, post_job(&short, &key))
        .await
        .problem(422, Some("input.x"));

    let submitted = call(&relay.router, post_job(&job, &key)).await;
    assert_eq!(
        submitted.status,
        StatusCode::CREATED,
        "{}",
        submitted.json()
    );
    let submitted: Job = submitted.decode();
    assert_eq!(submitted.kernel, kernel.id);
    assert!(submitted.quorum >= 2, "{submitted:?}");
    assert_eq!(submitted.flops, 2 * n as u64);

    // The CPU fallback is never handed the unit; a GPU volunteer is.
    let on_cpu = relay
        .storage
        .lease_work(&lease_request(1, false), |_, q| q)
        .await
        .expect("lease query");
    assert!(on_cpu.is_none(), "a CPU volunteer was leased {on_cpu:?}");
    let on_gpu = relay
        .storage
        .lease_work(&lease_request(2, true), |_, q| q)
        .await
        .expect("lease query")
        .expect("a GPU volunteer gets the unit");
    assert_eq!(on_gpu.kernel, kernel.id);

    // Settled by two GPU wallets, the unit becomes a known answer, sent to GPU
    // volunteers only.
    let output: Vec<u8> = std::iter::repeat_n(2.5f32.to_le_bytes(), n)
        .flatten()
        .collect();
    let second = lease_request(4, true);
    let leased = relay
        .storage
        .lease_work(&second, |_, q| q)
        .await
        .expect("lease query")
        .expect("the second replica");
    assert_eq!(leased.unit_params, on_gpu.unit_params);
    let mut recorded = Vec::new();
    for request in [lease_request(2, true), second] {
        let lease = if request.wallet == second.wallet {
            second.lease
        } else {
            on_gpu.lease
        };
        recorded.push(
            relay
                .storage
                .record_result(
                    ReturnedResult {
                        lease,
                        wallet: request.wallet,
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
                .expect("result query"),
        );
    }
    assert!(
        matches!(recorded[1], Recorded::Valid { .. }),
        "{recorded:?}"
    );
    // The kernel shows its two accepted results beside its declared FLOPs.
    let shown: CustomKernel = relay
        .get(&format!("/api/v1/kernels/{}", kernel.id))
        .await
        .decode();
    let runs = shown.measured.expect("runs measured");
    assert_eq!(runs.results, 2, "{runs:?}");
    for pick in [0.0, 0.5, 1.0] {
        let canary = relay
            .storage
            .lease_canary(&lease_request(3, false), pick)
            .await
            .expect("canary query");
        assert!(
            canary.is_none(),
            "the CPU fallback got a known answer: {canary:?}"
        );
    }
    let canary = relay
        .storage
        .lease_canary(&lease_request(5, true), 0.0)
        .await
        .expect("canary query");
    assert!(canary.is_some(), "a GPU volunteer gets the known answer");
}

/// A hello over the WebSocket from `key` computing on `backend` ("vulkan", "cpu").
fn hello_on(key: &WalletKey, binding: &starling_protocol::Binding, backend: &str) -> ToRelay {
    ToRelay::Hello {
        version: starling_protocol::PROTOCOL_VERSION,
        client: "test-ws/0".into(),
        device: DeviceInfo {
            adapter: backend.into(),
            backend: backend.into(),
            fallback: backend == "cpu",
        },
        wallet: key.address(),
        site: None,
        proof: key.sign_binding(binding),
    }
}

/// The kernel of the next unit the relay leases to a volunteer on `backend` with these
/// preferences (`None`: it sends none), and the assignment.
async fn next_kernel(
    url: &str,
    seed: u8,
    backend: &str,
    builtin_only: Option<bool>,
) -> anyhow::Result<(String, starling_protocol::Assignment)> {
    let key = WalletKey::from_seed([seed; 32]);
    let (mut socket, binding) = websocket::open(url).await?;
    websocket::send(&mut socket, &hello_on(&key, &binding, backend)).await?;
    if let Some(builtin_only) = builtin_only {
        websocket::send(&mut socket, &ToRelay::Preferences { builtin_only }).await?;
    }
    anyhow::ensure!(matches!(
        websocket::receive(&mut socket, 1 << 20).await?,
        ToVolunteer::Welcome { .. }
    ));
    websocket::send(&mut socket, &ToRelay::Ready { slots: 1 }).await?;
    match websocket::receive(&mut socket, 64 << 20).await? {
        ToVolunteer::Assign(assignment) => Ok((assignment.kernel.clone(), assignment)),
        other => anyhow::bail!("expected work, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_kernel_goes_only_to_gpu_volunteers_that_did_not_ask_for_builtins_only(
) -> anyhow::Result<()> {
    let dir = TempDir::new("custom-kernels-sessions");
    let (url, scheduler) = common::loopback::relay(&dir, Duration::from_secs(15)).await?;
    let manifest: KernelManifest = serde_json::from_str(SAXPY_JSON)?;
    let id = content_id(SAXPY_WGSL, &manifest);
    scheduler
        .storage()
        .register_kernel(id.clone(), None, SAXPY_WGSL.into(), &manifest, 100)
        .await?;
    // 20 units: the oldest work, filling the window a lease is drawn from (16 units),
    // so a volunteer allowed to run them always gets one, and one that is not gets the
    // built-in job submitted after them.
    let n = 20 * 65_536;
    let inputs = NamedInputs::from([
        ("a".to_owned(), vec![0u8; 4]),
        ("x".to_owned(), vec![0u8; 4 * n]),
        ("y".to_owned(), vec![0u8; 4 * n]),
    ]);
    scheduler
        .submit(&id, json!({"n": n}), &inputs, None, None, None)
        .await?;
    scheduler
        .submit(
            "montecarlo",
            json!({"samples": 1000, "seed": 1}),
            &NamedInputs::new(),
            Some(1),
            None,
            None,
        )
        .await?;

    // Each volunteer disconnects after its lease, which goes back to the queue.
    for (seed, backend, builtin_only) in [
        (11, "vulkan", Some(true)),
        (12, "cpu", None),
        // Saying it runs everything does not make the CPU fallback a GPU.
        (13, "cpu", Some(false)),
    ] {
        let (kernel, _) = next_kernel(&url, seed, backend, builtin_only).await?;
        assert_eq!(
            kernel, "montecarlo",
            "{backend} volunteer, builtin_only {builtin_only:?}"
        );
    }

    // A GPU volunteer, as it is or having said it runs everything, gets one, carrying
    // the kernel it checks against the id.
    for (seed, builtin_only) in [(21, None), (22, Some(false))] {
        let (kernel, assignment) = next_kernel(&url, seed, "vulkan", builtin_only).await?;
        assert_eq!(kernel, id);
        let (carried, unit) =
            starling_kernels::custom::CustomKernel::from_assignment(&id, &assignment.params_json)?;
        assert_eq!(carried.id(), id);
        assert!(unit.contains("\"offset\""), "{unit}");
        // The same kernel under another id is refused by the volunteer.
        assert!(starling_kernels::custom::CustomKernel::from_assignment(
            &"0".repeat(64),
            &assignment.params_json
        )
        .is_err());
    }
    Ok(())
}

#[tokio::test]
async fn a_kernel_whose_units_outlive_leases_on_three_wallets_is_found_and_suspended() {
    hung_kernels_suspended(relay("hung").await).await;
}

#[tokio::test]
async fn a_kernel_whose_units_outlive_leases_on_three_wallets_is_found_and_suspended_on_postgresql()
{
    hung_kernels_suspended(relay_on("hung-pg", true).await).await;
}

/// An account's key, SAXPY registered by it, and a job of 4 units it submitted.
async fn saxpy_job(relay: &Relay) -> (String, CustomKernel, Job) {
    let (_, key) = relay.account_with(100).await;
    let kernel: CustomKernel = relay
        .register(SAXPY_WGSL, &manifest(SAXPY_JSON), Some(&key))
        .await
        .decode();
    let n = 4 * 65_536;
    let job = json!({
        "kernel": kernel.id,
        "params": {"n": n},
        "input": {
            "a": f32s_base64(&[2.0]),
            "x": f32s_base64(&vec![1.0; n]),
            "y": f32s_base64(&vec![0.5; n]),
        },
    });
    let job: Job = call(&relay.router, post_job(&job, &key)).await.decode();
    (key, kernel, job)
}

async fn hung_kernels_suspended(relay: Relay) {
    let (key, kernel, job) = saxpy_job(&relay).await;
    // Leases that ended long ago, expired by the sweep: two wallets are not enough.
    // Only wallets with a record count: three fresh ones sitting on units cost nothing.
    for seed in [31, 32, 33] {
        earn_record(&relay, &key, seed).await;
    }
    let expire_one = |seed: u8| {
        let storage = relay.storage.clone();
        async move {
            let mut request = lease_request(seed, true);
            request.terms = LeaseTerms::until(1);
            storage
                .lease_work(&request, |_, q| q)
                .await
                .expect("lease query")
                .expect("a unit");
            storage.expire_leases(2).await.expect("expiry");
        }
    };
    expire_one(31).await;
    expire_one(32).await;
    assert!(relay
        .storage
        .hung_custom_kernels(3)
        .await
        .expect("query")
        .is_empty());
    for fresh in [41, 42, 43] {
        expire_one(fresh).await;
    }
    assert!(
        relay
            .storage
            .hung_custom_kernels(3)
            .await
            .expect("query")
            .is_empty(),
        "three fresh wallets letting their leases expire count as volunteers the kernel hung on"
    );
    expire_one(33).await;
    let hung = relay.storage.hung_custom_kernels(3).await.expect("query");
    assert_eq!(hung, vec![(kernel.id.clone(), 3)]);

    let jobs = relay
        .storage
        .suspend_kernel(&kernel.id, "hangs")
        .await
        .expect("suspends");
    assert_eq!(jobs, vec![job.id]);
    let shown: CustomKernel = relay
        .get(&format!("/api/v1/kernels/{}", kernel.id))
        .await
        .decode();
    assert_eq!(shown.suspended.as_deref(), Some("hangs"));
    // A second suspension keeps the first reason.
    relay
        .storage
        .suspend_kernel(&kernel.id, "later")
        .await
        .expect("suspends");
    let shown: CustomKernel = relay
        .get(&format!("/api/v1/kernels/{}", kernel.id))
        .await
        .decode();
    assert_eq!(shown.suspended.as_deref(), Some("hangs"));
}

#[tokio::test]
async fn a_kernel_that_fails_on_three_volunteers_devices_is_found() {
    failing_kernels_found(relay("failing").await).await;
}

#[tokio::test]
async fn a_kernel_that_fails_on_three_volunteers_devices_is_found_on_postgresql() {
    failing_kernels_found(relay_on("failing-pg", true).await).await;
}

/// A unit given back (`Failed`: the device was lost, the shader crashed) counts like a
/// lease that expired, once per wallet, and only from wallets with a record.
async fn failing_kernels_found(relay: Relay) {
    let (key, kernel, _) = saxpy_job(&relay).await;
    let fail_one = |seed: u8| {
        let storage = relay.storage.clone();
        let id = kernel.id.clone();
        async move {
            let request = lease_request(seed, true);
            let unit = storage
                .lease_work(&request, |_, q| q)
                .await
                .expect("lease query")
                .expect("a unit");
            assert_eq!(unit.kernel, id);
            storage
                .release_lease(request.lease, request.peer)
                .await
                .expect("release");
        }
    };
    let hung = || async { relay.storage.hung_custom_kernels(3).await.expect("query") };
    // Fresh wallets' failures cost them nothing: they do not count.
    for fresh in [61, 62, 63] {
        fail_one(fresh).await;
    }
    assert!(hung().await.is_empty(), "fresh wallets' failures counted");
    for seed in [51, 52, 53] {
        earn_record(&relay, &key, seed).await;
    }
    fail_one(51).await;
    fail_one(52).await;
    // The same wallet failing again is still one volunteer.
    fail_one(52).await;
    assert!(hung().await.is_empty(), "two volunteers are not enough");
    fail_one(53).await;
    assert_eq!(hung().await, vec![(kernel.id.clone(), 3)]);
}

/// Gives the wallet of `seed` a record (it is then vetted): three one-unit montecarlo
/// jobs of quorum 1 (paid by `key`), computed honestly.
async fn earn_record(relay: &Relay, key: &str, seed: u8) {
    for round in 0..3 {
        let job = json!({
            "kernel": "montecarlo",
            "params": {"samples": 1000, "seed": round},
            "verification": {"quorum": 1},
        });
        let _: Job = call(&relay.router, post_job(&job, key)).await.decode();
        let request = lease_request(seed, false);
        let unit = relay
            .storage
            .lease_work(&request, |_, q| q)
            .await
            .expect("lease query")
            .expect("the montecarlo unit");
        let output = starling_kernels::Catalog::builtin()
            .get("montecarlo")
            .and_then(|k| k.run_cpu(&unit.unit_params, &[]))
            .expect("the CPU reference");
        let recorded = relay
            .storage
            .record_result(
                ReturnedResult {
                    lease: request.lease,
                    wallet: request.wallet,
                    output: &output,
                    spot_check: None,
                },
                Judging {
                    max_results: 6,
                    vet_newcomers: true,
                },
                Arc::new(|a: &[u8], b: &[u8]| a == b),
                Reference::NotRun,
            )
            .await
            .expect("result query");
        assert!(matches!(recorded, Recorded::Valid { .. }), "{recorded:?}");
    }
}

/// A volunteer on a GPU (as it says) driven by hand over the WebSocket.
struct GpuHand {
    key: WalletKey,
    socket: websocket::Socket,
    /// Built-in units `unit_of` computed honestly on the way and saw accepted.
    honest_accepted: u32,
}

impl GpuHand {
    async fn join(url: &str, seed: u8) -> anyhow::Result<Self> {
        let key = WalletKey::from_seed([seed; 32]);
        let (mut socket, binding) = websocket::open(url).await?;
        websocket::send(&mut socket, &hello_on(&key, &binding, "vulkan")).await?;
        anyhow::ensure!(matches!(
            websocket::receive(&mut socket, 1 << 20).await?,
            ToVolunteer::Welcome { .. }
        ));
        Ok(Self {
            key,
            socket,
            honest_accepted: 0,
        })
    }

    /// The next unit of `kernel`, computing any built-in unit before it honestly (a
    /// known-answer unit may come first, and a volunteer cannot tell).
    async fn unit_of(&mut self, kernel: &str) -> anyhow::Result<starling_protocol::Assignment> {
        for _ in 0..20 {
            websocket::send(&mut self.socket, &ToRelay::Ready { slots: 1 }).await?;
            let unit = loop {
                match websocket::receive(&mut self.socket, 64 << 20).await? {
                    ToVolunteer::Assign(unit) => break unit,
                    ToVolunteer::Receipt(_) => {}
                    other => anyhow::bail!("expected work, got {other:?}"),
                }
            };
            if unit.kernel == kernel {
                return Ok(unit);
            }
            let output = starling_kernels::Catalog::builtin()
                .get(&unit.kernel)?
                .run_cpu(&unit.params_json, &unit.input)?;
            if self.answer(&unit, output).await? {
                self.honest_accepted += 1;
            }
        }
        anyhow::bail!("twenty units and none of {kernel}")
    }

    async fn answer(
        &mut self,
        unit: &starling_protocol::Assignment,
        output: Vec<u8>,
    ) -> anyhow::Result<bool> {
        websocket::send(
            &mut self.socket,
            &ToRelay::Result {
                lease: unit.lease,
                output,
                elapsed_ms: 1,
                more: 0,
            },
        )
        .await?;
        loop {
            match websocket::receive(&mut self.socket, 1 << 20).await? {
                ToVolunteer::Ack {
                    lease, accepted, ..
                } if lease == unit.lease => return Ok(accepted),
                ToVolunteer::Ack { .. } | ToVolunteer::Receipt(_) => {}
                other => anyhow::bail!("expected an ack, got {other:?}"),
            }
        }
    }
}

/// Nobody has a record on a kernel just registered and no CPU reference can check it, so
/// two fresh wallets of one attacker agreeing on a lie would settle its units and be paid
/// for them. They do not: such a quorum waits for a wallet trusted over the network's
/// kernels, whose honest result, with one more, settles the truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fresh_wallets_agreeing_on_a_lie_settle_no_registered_kernel_unit() -> anyhow::Result<()>
{
    let dir = TempDir::new("custom-kernels-collusion");
    let (url, scheduler) = common::loopback::relay(&dir, Duration::from_secs(15)).await?;
    // A wallet earns trust on matmul first: twenty one-unit jobs computed honestly.
    let mut trusted = GpuHand::join(&url, 40).await?;
    let (m, k) = (4u32, 4u32);
    let matmul_inputs = NamedInputs::from([
        ("a".to_owned(), vec![0u8; (m * k * 4) as usize]),
        ("b".to_owned(), vec![0u8; (k * k * 4) as usize]),
    ]);
    for _ in 0..20 {
        scheduler
            .submit(
                "matmul",
                json!({"m": m, "k": k, "n": k}),
                &matmul_inputs,
                Some(1),
                None,
                None,
            )
            .await?;
        let unit = trusted.unit_of("matmul").await?;
        let output = starling_kernels::Catalog::builtin()
            .get("matmul")?
            .run_cpu(&unit.params_json, &unit.input)?;
        anyhow::ensure!(trusted.answer(&unit, output).await?);
    }
    let standing = |key: &WalletKey| {
        let storage = scheduler.storage().clone();
        let address = key.address();
        async move {
            storage
                .wallet(&address)
                .await?
                .ok_or_else(|| anyhow::anyhow!("wallet unknown"))
        }
    };
    anyhow::ensure!(standing(&trusted.key).await?.reliability.trusted());

    // SAXPY of zeros: the truth is zeros, the lie is ones.
    let manifest: KernelManifest = serde_json::from_str(SAXPY_JSON)?;
    let id = content_id(SAXPY_WGSL, &manifest);
    scheduler
        .storage()
        .register_kernel(id.clone(), None, SAXPY_WGSL.into(), &manifest, 100)
        .await?;
    let n = 65_536;
    let inputs = NamedInputs::from([
        ("a".to_owned(), vec![0u8; 4]),
        ("x".to_owned(), vec![0u8; 4 * n]),
        ("y".to_owned(), vec![0u8; 4 * n]),
    ]);
    let job = scheduler
        .submit(&id, json!({"n": n}), &inputs, None, None, None)
        .await?;
    let truth = vec![0u8; 4 * n];
    let lie: Vec<u8> = std::iter::repeat_n(1.0f32.to_le_bytes(), n)
        .flatten()
        .collect();
    let mut liars = Vec::new();
    for seed in [1, 2] {
        let mut liar = GpuHand::join(&url, seed).await?;
        let unit = liar.unit_of(&id).await?;
        liar.answer(&unit, lie.clone()).await?;
        liars.push(liar);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let state = scheduler.storage().job_result(job).await?.map(|o| o.state);
    assert!(
        !matches!(state, Some(starling_relay::storage::JobState::Done)),
        "two fresh wallets settled a registered kernel's unit on their lie"
    );
    // A liar may have been handed a known-answer unit first and computed it honestly;
    // only that counts for it, never the lie.
    for liar in &liars {
        let record = standing(&liar.key).await?;
        assert_eq!(record.reliability.valid, liar.honest_accepted, "{record:?}");
    }

    // The trusted wallet anchors the truth; two against two is a tie that one more
    // result breaks, and two honest newcomers outnumber the liars.
    let unit = trusted.unit_of(&id).await?;
    trusted.answer(&unit, truth.clone()).await?;
    for seed in [50, 51] {
        let mut newcomer = GpuHand::join(&url, seed).await?;
        let unit = newcomer.unit_of(&id).await?;
        newcomer.answer(&unit, truth.clone()).await?;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let done = loop {
        let output = scheduler.storage().job_result(job).await?;
        if let Some(output) = output.filter(|o| o.state == starling_relay::storage::JobState::Done)
        {
            break output;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the truth did not settle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done.result.as_deref(), Some(&truth[..]));
    for liar in &liars {
        let record = standing(&liar.key).await?;
        assert_eq!(
            (record.reliability.valid, record.reliability.invalid),
            (liar.honest_accepted, 1),
            "{record:?}"
        );
    }
    Ok(())
}
