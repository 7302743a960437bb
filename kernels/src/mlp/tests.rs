use super::*;
use proptest::prelude::*;

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Deterministic pseudo-random values in [-scale, scale).
fn values(count: u64, salt: u64, scale: f32) -> Vec<f32> {
    let mut state = salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A random network with weights ~ U(-a, a), a = sqrt(3 / fan_in) * gain (variance
/// gain^2 / fan_in, roughly what trained networks have), biases in [-0.1, 0.1).
fn network(layers: &[u32], salt: u64, gain: f32) -> Vec<f32> {
    let mut w = Vec::new();
    for (l, pair) in layers.windows(2).enumerate() {
        let scale = (3.0 / pair[0] as f32).sqrt() * gain;
        let salt = salt.wrapping_mul(31).wrapping_add(l as u64);
        w.extend(values(u64::from(pair[0] * pair[1]), salt, scale));
        w.extend(values(u64::from(pair[1]), salt ^ 0xb1a5, 0.1));
    }
    w
}

fn job(p: &MlpParams, salt: u64, gain: f32) -> Vec<u8> {
    let mut inputs = NamedInputs::new();
    inputs.insert("weights".into(), to_bytes(&network(&p.layers, salt, gain)));
    let n = u64::from(p.batch) * u64::from(first(&p.layers));
    inputs.insert("inputs".into(), to_bytes(&values(n, salt ^ 0x1234, 1.0)));
    Mlp::pack_input(p, &inputs).expect("valid job")
}

fn whole(p: &MlpParams) -> MlpUnit {
    MlpUnit {
        row_start: 0,
        rows: p.batch,
        layers: p.layers.clone(),
        output: p.output,
    }
}

fn params(layers: &[u32], batch: u32, output: Activation) -> MlpParams {
    MlpParams {
        layers: layers.to_vec(),
        batch,
        output,
    }
}

fn activation() -> impl Strategy<Value = Activation> {
    prop::sample::select(vec![Activation::Softmax, Activation::Linear])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn split_then_merge_equals_the_whole_batch(
        layers in prop::collection::vec(1u32..40, 2..6), batch in 1u32..50,
        output in activation(), target in 1u64..20_000, salt: u64,
    ) {
        let p = MlpParams { layers, batch, output };
        let input = job(&p, salt, 1.0);
        let expected = Mlp::run_cpu(&whole(&p), &input).expect("whole batch");
        let units = Mlp::split(&p, target);
        prop_assert_eq!(units.iter().map(|u| u.rows).sum::<u32>(), batch);
        let outputs: Vec<Vec<u8>> = units
            .iter()
            .map(|u| {
                let unit_input = Mlp::unit_input(&p, &input, u).expect("slice");
                Mlp::run_cpu(u, &unit_input).expect("unit")
            })
            .collect();
        prop_assert_eq!(Mlp::merge(&p, &outputs).expect("merge"), expected);
        prop_assert_eq!(
            units.iter().map(Mlp::unit_flops).sum::<u64>(),
            u64::from(batch) * row_flops(&p.layers)
        );
    }
}

/// Reference in f64 (then rounded to f32), and in f32 with fused multiply-adds: two
/// other honest ways to compute the same outputs.
fn forward_f64(layers: &[u32], output: Activation, w: &[f32], rows: &[f32]) -> Vec<f32> {
    let depth = layers.len() - 1;
    let mut out = Vec::new();
    for row in rows.chunks_exact(first(layers) as usize) {
        let mut cur: Vec<f64> = row.iter().map(|v| f64::from(*v)).collect();
        let mut off = 0;
        for (l, pair) in layers.windows(2).enumerate() {
            let (n, m) = (pair[0] as usize, pair[1] as usize);
            cur = (0..m)
                .map(|j| {
                    let z = (0..n)
                        .map(|i| cur[i] * f64::from(w[off + i * m + j]))
                        .sum::<f64>()
                        + f64::from(w[off + n * m + j]);
                    if l + 1 < depth {
                        z.max(0.0)
                    } else {
                        z
                    }
                })
                .collect();
            off += n * m + m;
        }
        if output == Activation::Softmax {
            let top = cur.iter().copied().fold(f64::MIN, f64::max);
            let e: Vec<f64> = cur.iter().map(|z| (z - top).exp()).collect();
            let s: f64 = e.iter().sum();
            cur = e.iter().map(|v| v / s).collect();
        }
        out.extend(cur.iter().map(|v| *v as f32));
    }
    out
}

fn forward_fma(layers: &[u32], output: Activation, w: &[f32], rows: &[f32]) -> Vec<f32> {
    let depth = layers.len() - 1;
    let mut out = Vec::new();
    for row in rows.chunks_exact(first(layers) as usize) {
        let mut cur = row.to_vec();
        let mut off = 0;
        for (l, pair) in layers.windows(2).enumerate() {
            let (n, m) = (pair[0] as usize, pair[1] as usize);
            let mut next = vec![0f32; m];
            for (i, x) in cur.iter().enumerate() {
                for (j, acc) in next.iter_mut().enumerate() {
                    *acc = x.mul_add(w[off + i * m + j], *acc);
                }
            }
            for (j, acc) in next.iter_mut().enumerate() {
                *acc += w[off + n * m + j];
                if l + 1 < depth {
                    *acc = acc.max(0.0);
                }
            }
            cur = next;
            off += n * m + m;
        }
        if output == Activation::Softmax {
            softmax(&mut cur);
        }
        out.extend_from_slice(&cur);
    }
    out
}

/// Largest |x - y| / (tolerance of `outputs_agree`) over all elements.
fn worst_ratio(layers: &[u32], output: Activation, x: &[f32], y: &[f32]) -> f32 {
    let tol = tolerance_terms(layers, output) as f32 * f32::EPSILON;
    x.iter()
        .zip(y)
        .map(|(a, b)| (a - b).abs() / (tol * a.abs().max(b.abs()).max(1.0)))
        .fold(0.0, f32::max)
}

fn split_input(unit: &MlpUnit, input: &[u8]) -> (Vec<f32>, Vec<f32>) {
    let w = floats(&input[..unit.weight_bytes()]).collect();
    let rows = floats(&input[unit.weight_bytes()..]).collect();
    (w, rows)
}

#[test]
fn honest_alternatives_agree_with_a_wide_margin() {
    // Deep and wide networks, gains that keep activations O(1) and that let them grow.
    let cases: [(&[u32], u32, f32); 5] = [
        (&[784, 512, 256, 10], 6, 1.0),
        (&[1024, 1024, 1024, 1024], 3, 1.4),
        (&[64, 64, 64, 64, 64, 64, 64, 64, 64], 8, 1.4),
        (&[300, 1000, 3], 6, 3.0),
        (&[5, 2], 20, 1.0),
    ];
    for (layers, batch, gain) in cases {
        for output in [Activation::Softmax, Activation::Linear] {
            let p = params(layers, batch, output);
            let unit = whole(&p);
            let input = job(&p, u64::from(batch), gain);
            let (w, rows) = split_input(&unit, &input);
            let reference = forward(layers, output, &w, &rows);
            let fma = forward_fma(layers, output, &w, &rows);
            let exact = forward_f64(layers, output, &w, &rows);
            let r_fma = worst_ratio(layers, output, &reference, &fma);
            let r_exact = worst_ratio(layers, output, &reference, &exact);
            eprintln!("{layers:?} {output:?}: fma {r_fma:.2e}, f64 {r_exact:.2e} of tolerance");
            assert!(r_fma < 0.1 && r_exact < 0.1, "{layers:?} {output:?}");
            assert!(outputs_agree(
                layers,
                output,
                &to_bytes(&reference),
                &to_bytes(&fma)
            ));
        }
    }
}

#[test]
fn verifier_rejects_tampered_outputs() {
    let p = params(&[32, 48, 40, 16], 24, Activation::Linear);
    let unit = whole(&p);
    let input = job(&p, 5, 2.0);
    let honest = Mlp::run_cpu(&unit, &input).expect("valid");
    let values: Vec<f32> = floats(&honest).collect();
    let agree = |x: &[f32]| Mlp::outputs_agree(&unit, &honest, &to_bytes(x));
    assert!(agree(&values));

    // Every element that is not tiny, changed by 1%, alone.
    for i in (0..values.len()).filter(|i| values[*i].abs() > 0.11) {
        let mut tampered = values.clone();
        tampered[i] *= 1.01;
        assert!(!agree(&tampered), "element {i} = {}", values[i]);
    }
    let mut flipped = honest.clone();
    flipped[4 * 77 + 3] ^= 0x40; // an exponent bit of element 77
    assert!(!Mlp::outputs_agree(&unit, &honest, &flipped));
    let mut nan = values.clone();
    nan[3] = f32::NAN;
    assert!(!agree(&nan));

    let mut scaled = values.clone();
    for v in &mut scaled[5 * 16..9 * 16] {
        *v *= 1.01;
    }
    assert!(!agree(&scaled));

    let other = Mlp::run_cpu(&unit, &job(&p, 6, 2.0)).expect("valid");
    assert!(!Mlp::outputs_agree(&unit, &honest, &other));
    assert!(!Mlp::outputs_agree(&unit, &honest, &honest[4..]));
}

#[test]
fn verifier_rejects_a_tampered_probability() {
    let p = params(&[20, 30, 4], 16, Activation::Softmax);
    let unit = whole(&p);
    let honest = Mlp::run_cpu(&unit, &job(&p, 9, 3.0)).expect("valid");
    let values: Vec<f32> = floats(&honest).collect();
    for row in values.chunks_exact(4) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6, "{row:?}");
    }
    for i in (0..values.len()).filter(|i| values[*i] > 0.01) {
        let mut tampered = values.clone();
        tampered[i] *= 1.01;
        assert!(
            !Mlp::outputs_agree(&unit, &honest, &to_bytes(&tampered)),
            "{i}"
        );
    }
}

#[test]
fn info_schema_matches_the_params() {
    let info = Mlp::info();
    assert_eq!((info.id, info.version), (Mlp::ID, Mlp::VERSION));
    let p = params(&[4, 3, 2], 5, Activation::Softmax);
    let value = serde_json::to_value(&p).expect("plain struct");
    let keys: Vec<&String> = value.as_object().expect("object").keys().collect();
    let properties = info.params_schema["properties"]
        .as_object()
        .expect("properties");
    assert_eq!(keys, properties.keys().collect::<Vec<_>>());
    assert_eq!(value["output"], "softmax");
    let names: Vec<&str> = info.inputs.iter().map(|i| i.name).collect();
    assert_eq!(names, ["weights", "inputs"]);
    assert!(info.spot_check.is_none());
}

#[test]
fn cpu_reference_computes_a_known_network() {
    // x = [1, 2]; W1 = [[1, -1], [0.5, 2]], b1 = [0.5, -4]:
    //   xW1 = [2, 3], + b1 = [2.5, -1], ReLU = [2.5, 0].
    // W2 = [[2, 1], [3, -1]], b2 = [0, 0.5]: z = [5, 3].
    // softmax(z) = [1 / (1 + e^-2), e^-2 / (1 + e^-2)].
    let weights = [1., -1., 0.5, 2., 0.5, -4., 2., 1., 3., -1., 0., 0.5];
    let mut input = to_bytes(&weights);
    input.extend(to_bytes(&[1., 2.]));
    let mut unit = MlpUnit {
        row_start: 0,
        rows: 1,
        layers: vec![2, 2, 2],
        output: Activation::Linear,
    };
    let linear = Mlp::run_cpu(&unit, &input).expect("valid");
    assert_eq!(linear, to_bytes(&[5., 3.]));
    unit.output = Activation::Softmax;
    let soft: Vec<f32> = floats(&Mlp::run_cpu(&unit, &input).expect("valid")).collect();
    let e = (-2f64).exp();
    let expected = [1.0 / (1.0 + e), e / (1.0 + e)];
    for (got, want) in soft.iter().zip(expected) {
        assert!((f64::from(*got) - want).abs() < 1e-7, "{soft:?}");
    }
}

#[test]
fn softmax_is_stable_for_large_logits() {
    let mut z = vec![1e30f32, 1e30 - 1e24, -1e30];
    softmax(&mut z);
    assert!(z.iter().all(|v| v.is_finite()), "{z:?}");
    assert_eq!(z[0], 1.0);
    assert_eq!(z[2], 0.0);
    // 100 equal logits: the 64-way tree sums exactly to 100.
    let mut z = vec![7.5f32; 100];
    softmax(&mut z);
    assert!(z.iter().all(|v| *v == 0.01), "{z:?}");
}

#[test]
fn rejects_bad_params_with_precise_messages() {
    let check = |p: MlpParams, message: &str| {
        let err = Mlp::validate(&p).expect_err("invalid");
        assert_eq!(err.to_string(), message);
    };
    check(
        params(&[3], 1, Activation::Linear),
        "invalid parameter `layers`: must list 2 to 9 sizes (input, hidden layers, \
         output), got 1",
    );
    check(
        params(&[1; 10], 1, Activation::Linear),
        "invalid parameter `layers`: must list 2 to 9 sizes (input, hidden layers, \
         output), got 10",
    );
    check(
        params(&[4, 8, 0, 2], 1, Activation::Linear),
        "invalid parameter `layers[2]`: must be between 1 and 1024, got 0",
    );
    check(
        params(&[4, 1025], 1, Activation::Linear),
        "invalid parameter `layers[1]`: must be between 1 and 1024, got 1025",
    );
    check(
        params(&[4, 2], 0, Activation::Linear),
        "invalid parameter `batch`: must be between 1 and 1000000, got 0",
    );
    check(
        params(&[4, 2], 1_000_001, Activation::Linear),
        "invalid parameter `batch`: must be between 1 and 1000000, got 1000001",
    );
    assert!(Mlp::validate(&params(&[1024; 9], 1_000_000, Activation::Softmax)).is_ok());

    let catalog = crate::Catalog::builtin();
    let kernel = catalog.get("mlp").expect("built in");
    let plan = |params: serde_json::Value| {
        kernel
            .plan(&params, &NamedInputs::new(), 1000)
            .expect_err("invalid")
            .to_string()
    };
    let err = plan(json!({"layers": [2, 2], "batch": 1, "output": "relu"}));
    assert!(err.contains("unknown variant `relu`"), "{err}");
    let err = plan(json!({"layers": [2, 2], "batch": 1, "output": "linear", "depth": 2}));
    assert!(err.contains("unknown field `depth`"), "{err}");
    let err = plan(json!({"layers": [2, 2], "batch": 1}));
    assert!(err.contains("missing field `output`"), "{err}");
}

#[test]
fn rejects_bad_inputs_with_precise_messages() {
    let p = params(&[2, 3, 2], 2, Activation::Softmax);
    // Weights: 2*3 + 3 + 3*2 + 2 = 17 f32.
    let good_weights = to_bytes(&[0.5; 17]);
    let good_inputs = to_bytes(&[1.0; 4]);
    let check = |weights: Vec<u8>, inputs: Vec<u8>, message: &str| {
        let mut named = NamedInputs::new();
        named.insert("weights".into(), weights);
        named.insert("inputs".into(), inputs);
        let err = Mlp::pack_input(&p, &named).expect_err("invalid");
        assert_eq!(err.to_string(), message);
    };
    check(
        good_weights[4..].to_vec(),
        good_inputs.clone(),
        "invalid input `weights`: layers [2, 3, 2] need 17 f32 = 68 bytes, got 64 bytes",
    );
    check(
        good_weights.clone(),
        good_inputs[..15].to_vec(),
        "invalid input `inputs`: expected 2x2 f32 = 16 bytes, got 15 bytes",
    );
    let mut w = vec![0.5f32; 17];
    w[10] = f32::NAN;
    check(
        to_bytes(&w),
        good_inputs.clone(),
        "invalid input `weights`: element 10 (layer 2 W[0][1]) is NaN; weights must be \
         finite",
    );
    w[10] = 0.5;
    w[7] = f32::NEG_INFINITY;
    check(
        to_bytes(&w),
        good_inputs.clone(),
        "invalid input `weights`: element 7 (layer 1 bias[1]) is -inf; weights must be \
         finite",
    );
    check(
        good_weights.clone(),
        to_bytes(&[1.0, 1.0, 1.0, f32::INFINITY]),
        "invalid input `inputs`: element 3 (row 1, column 1) is inf; inputs must be finite",
    );
    check(
        to_bytes(&[1e30; 17]),
        good_inputs.clone(),
        "invalid input `weights`: layer 2 can overflow f32: with inputs up to 1.000e0 \
         in magnitude its outputs may reach 9.000e60, more than 1e38; scale the weights \
         or inputs down",
    );

    let mut named = NamedInputs::new();
    named.insert("weights".into(), good_weights.clone());
    let err = Mlp::pack_input(&p, &named).expect_err("missing");
    assert_eq!(err.to_string(), "invalid input `inputs`: missing");
    named.insert("inputs".into(), good_inputs.clone());
    named.insert("bias".into(), vec![]);
    let err = Mlp::pack_input(&p, &named).expect_err("extra");
    assert_eq!(
        err.to_string(),
        "invalid input `bias`: mlp takes only inputs `weights` and `inputs`"
    );
    named.remove("bias");
    let packed = Mlp::pack_input(&p, &named).expect("valid");
    assert_eq!(packed.len(), 68 + 16);
}

#[test]
fn rejects_malformed_units() {
    let mut unit = MlpUnit {
        row_start: 0,
        rows: 2,
        layers: vec![2, 3],
        output: Activation::Linear,
    };
    // 2*3 + 3 weights, 2*2 inputs.
    let input = vec![0u8; 4 * (9 + 4)];
    assert!(Mlp::run_cpu(&unit, &input).is_ok());
    assert!(Mlp::gpu_dispatch(&unit, &input).is_ok());
    assert_eq!(
        Mlp::run_cpu(&unit, &input[4..]).expect_err("short"),
        KernelError::Shape {
            got: 48,
            expected: 52
        }
    );
    unit.rows = 0;
    let err = Mlp::gpu_dispatch(&unit, &input).expect_err("no rows");
    assert_eq!(
        err.to_string(),
        "invalid parameter `unit.rows`: must be between 1 and 65535 for this network, got 0"
    );
    unit.rows = 2;
    unit.layers = vec![2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
    assert!(Mlp::run_cpu(&unit, &input).is_err());
    unit.layers = vec![2, 2000];
    assert!(Mlp::gpu_dispatch(&unit, &input).is_err());
}

#[test]
fn splits_by_cost_within_the_dispatch_limits() {
    let p = params(&[10, 20, 5], 100, Activation::Softmax);
    // 2*10*20 + 2*20 + 2*20*5 + 2*5 = 650 FLOPs per row.
    assert_eq!(row_flops(&p.layers), 650);
    let units = Mlp::split(&p, 650 * 30);
    assert_eq!(
        units.iter().map(|u| u.rows).collect::<Vec<_>>(),
        [30, 30, 30, 10]
    );
    assert_eq!(units[3].row_start, 90);
    // However cheap the target, a unit's rows are at least a quarter of the 325
    // weights it carries: ceil(325 / (4 * 10)) = 9 rows.
    assert!(Mlp::split(&p, 1)[..11].iter().all(|u| u.rows == 9));

    let tiny = params(&[1, 1], MAX_BATCH, Activation::Linear);
    let units = Mlp::split(&tiny, u64::MAX);
    assert!(units.iter().all(|u| u.rows <= MAX_UNIT_ROWS));
    assert_eq!(units.len(), 16);
    let wide = params(&[1024, 4], 100_000, Activation::Linear);
    assert!(Mlp::split(&wide, u64::MAX)
        .iter()
        .all(|u| u64::from(u.rows) * 1024 <= MAX_UNIT_FLOATS));
}

#[test]
fn unit_input_is_the_weights_and_the_unit_rows() {
    let p = params(&[2, 1], 3, Activation::Linear);
    let mut named = NamedInputs::new();
    named.insert("weights".into(), to_bytes(&[1., 2., 3.]));
    named.insert("inputs".into(), to_bytes(&[4., 5., 6., 7., 8., 9.]));
    let job_input = Mlp::pack_input(&p, &named).expect("valid");
    let unit = MlpUnit {
        row_start: 1,
        rows: 2,
        layers: vec![2, 1],
        output: Activation::Linear,
    };
    let input = Mlp::unit_input(&p, &job_input, &unit).expect("valid");
    assert_eq!(input, to_bytes(&[1., 2., 3., 6., 7., 8., 9.]));
    // [6, 7] . [1, 2] + 3 = 23; [8, 9] . [1, 2] + 3 = 29.
    assert_eq!(
        Mlp::run_cpu(&unit, &input).expect("valid"),
        to_bytes(&[23., 29.])
    );
    let past_end = MlpUnit {
        row_start: 2,
        ..unit.clone()
    };
    assert!(Mlp::unit_input(&p, &job_input, &past_end).is_err());
    let other_net = MlpUnit {
        layers: vec![2, 2],
        ..unit
    };
    assert!(Mlp::unit_input(&p, &job_input, &other_net).is_err());
}
