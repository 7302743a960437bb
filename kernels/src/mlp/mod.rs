//! `mlp`: inference of a dense network (multi-layer perceptron) in f32, split into blocks
//! of batch rows.
//!
//! The network is `layers = [n_0, n_1, ..., n_L]`: layer l maps n_{l-1} activations to
//! n_l with `h_l = act(h_{l-1} W_l + b_l)`, ReLU on hidden layers and softmax or nothing
//! (linear) on the output. Encoding: every array is f32 little-endian. Job input `weights`
//! holds, for each layer in order, W_l (n_{l-1} x n_l, row-major) followed by b_l (n_l);
//! job input `inputs` is batch x n_0, row-major; the job result is batch x n_L, row-major.
//! A unit's input is the whole `weights` blob followed by its block of input rows; its
//! output is the matching block of output rows.

use crate::catalog::{InputInfo, KernelInfo, NamedInputs};
use crate::gpu::GpuDispatch;
use crate::{KernelError, KernelSpec, UnitSpec};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Fewest entries of `layers`: an input and an output size.
pub const MIN_LAYERS: usize = 2;
/// Most entries of `layers`: an input, seven hidden layers and an output. The shader keeps
/// the sizes in a uniform array of 3 x vec4 (12 slots).
pub const MAX_LAYERS: usize = 9;
/// Widest layer. The shader holds one row's activations in workgroup memory, two layers of
/// at most 1024 f32 (8 KiB), within WebGPU's default 16 KiB on every adapter.
pub const MAX_WIDTH: u32 = 1024;
/// Largest batch.
pub const MAX_BATCH: u32 = 1_000_000;
/// Most batch rows in one unit: one workgroup per row, and WebGPU allows at most 65535
/// workgroups per dispatch dimension.
pub const MAX_UNIT_ROWS: u32 = 65_535;
/// Most f32 in a unit's block of input or output rows (64 MiB), so both stay under
/// WebGPU's default 128 MiB storage-binding limit. The weights are at most
/// 8 x (1024 x 1024 + 1024) f32, about 32 MiB.
const MAX_UNIT_FLOATS: u64 = 1 << 24;
/// Largest magnitude an activation may reach in the worst case over the job's inputs
/// (see [`Mlp::pack_input`]): below f32's maximum (3.4e38) with room for the rounding of
/// partial sums and for `z - max(z)` in the softmax, so honest outputs are always finite.
pub const MAX_ACTIVATION: f64 = 1e38;
/// Threads per workgroup in `shader.wgsl`; the CPU reference's softmax sum follows the
/// same 64-way split and tree.
const THREADS: usize = 64;

/// What the output layer applies to its pre-activations.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// Probabilities: exp(z - max z) / sum, per row.
    Softmax,
    /// The pre-activations themselves (regression outputs, logits).
    Linear,
}

/// Parameters of an mlp job.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MlpParams {
    /// Layer sizes: input, hidden layers (ReLU), output.
    pub layers: Vec<u32>,
    /// Rows of the input (samples to run through the network).
    pub batch: u32,
    /// The output layer's activation.
    pub output: Activation,
}

/// One unit: batch rows `row_start .. row_start + rows`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MlpUnit {
    /// First row of the block.
    pub row_start: u32,
    /// Rows in the block.
    pub rows: u32,
    /// Layer sizes, as in the job.
    pub layers: Vec<u32>,
    /// The output layer's activation, as in the job.
    pub output: Activation,
}

/// The mlp kernel.
pub struct Mlp;

/// f32 count in the weights blob: sum over layers of n_{l-1} n_l + n_l.
fn weight_floats(layers: &[u32]) -> u64 {
    layers
        .windows(2)
        .map(|w| u64::from(w[0]) * u64::from(w[1]) + u64::from(w[1]))
        .sum()
}

fn first(layers: &[u32]) -> u32 {
    layers.first().copied().unwrap_or(0)
}

fn last(layers: &[u32]) -> u32 {
    layers.last().copied().unwrap_or(0)
}

/// FLOPs of one batch row: per layer a multiply and an add per weight, plus the bias and
/// the activation per output neuron (the softmax's exp, sum and division are counted as
/// that activation).
fn row_flops(layers: &[u32]) -> u64 {
    layers
        .windows(2)
        .map(|w| 2 * u64::from(w[0]) * u64::from(w[1]) + 2 * u64::from(w[1]))
        .sum()
}

/// Byte length of `floats` f32, saturated: a count that does not fit in `usize` (only
/// possible on 32-bit targets) never equals a real length, so it fails size checks.
fn f32_bytes(floats: u64) -> usize {
    usize::try_from(floats.saturating_mul(4)).unwrap_or(usize::MAX)
}

fn floats(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

fn validate_layers(field: &str, layers: &[u32]) -> Result<(), KernelError> {
    if !(MIN_LAYERS..=MAX_LAYERS).contains(&layers.len()) {
        return Err(KernelError::InvalidParam {
            field: field.to_owned(),
            reason: format!(
                "must list {MIN_LAYERS} to {MAX_LAYERS} sizes (input, hidden layers, output), \
                 got {}",
                layers.len()
            ),
        });
    }
    if let Some((i, size)) = layers
        .iter()
        .enumerate()
        .find(|(_, s)| !(1..=MAX_WIDTH).contains(*s))
    {
        return Err(KernelError::InvalidParam {
            field: format!("{field}[{i}]"),
            reason: format!("must be between 1 and {MAX_WIDTH}, got {size}"),
        });
    }
    Ok(())
}

/// Where element `index` of the weights blob sits, for error messages.
fn weight_position(layers: &[u32], mut index: u64) -> String {
    for (l, w) in layers.windows(2).enumerate() {
        let (n, m) = (u64::from(w[0]), u64::from(w[1]));
        if index < n * m {
            return format!("layer {} W[{}][{}]", l + 1, index / m, index % m);
        }
        index -= n * m;
        if index < m {
            return format!("layer {} bias[{index}]", l + 1);
        }
        index -= m;
    }
    "past the end".to_owned()
}

/// The fewest rows a unit should have: every unit carries the whole weights blob, so a
/// unit's own rows must be at least a quarter of the weights' size, or most of what a
/// volunteer downloads would be weights it already had last unit.
fn min_unit_rows(layers: &[u32]) -> u32 {
    let width_in = u64::from(first(layers).max(1));
    weight_floats(layers)
        .div_ceil(4 * width_in)
        .clamp(1, u64::from(MAX_UNIT_ROWS)) as u32
}

/// The largest number of rows a unit may have for this network.
fn max_unit_rows(layers: &[u32]) -> u32 {
    let widest_end = u64::from(first(layers).max(last(layers)).max(1));
    (MAX_UNIT_FLOATS / widest_end).clamp(1, u64::from(MAX_UNIT_ROWS)) as u32
}

impl MlpUnit {
    fn weight_bytes(&self) -> usize {
        f32_bytes(weight_floats(&self.layers))
    }

    fn input_bytes(&self) -> usize {
        f32_bytes(u64::from(self.rows) * u64::from(first(&self.layers)))
    }

    /// Checks the unit (it arrives as JSON from the relay) and the size of its input.
    fn check_input(&self, input: &[u8]) -> Result<(), KernelError> {
        validate_layers("unit.layers", &self.layers)?;
        let max_rows = max_unit_rows(&self.layers);
        if !(1..=max_rows).contains(&self.rows) {
            return Err(KernelError::InvalidParam {
                field: "unit.rows".to_owned(),
                reason: format!(
                    "must be between 1 and {max_rows} for this network, got {}",
                    self.rows
                ),
            });
        }
        let expected = self.weight_bytes().saturating_add(self.input_bytes());
        if input.len() != expected {
            return Err(KernelError::Shape {
                got: input.len(),
                expected,
            });
        }
        Ok(())
    }
}

/// One layer in f32: `next[j] = sum_i cur[i] W[i][j]` summed over i in increasing order,
/// then + b[j], then ReLU if `relu`. Each `next[j]` sees the same operations in the same
/// order as in `shader.wgsl`; the i-outer loop only streams W row by row.
fn dense(cur: &[f32], w: &[f32], b: &[f32], relu: bool) -> Vec<f32> {
    let mut next = vec![0f32; b.len()];
    for (x, w_row) in cur.iter().zip(w.chunks_exact(b.len())) {
        for (acc, wij) in next.iter_mut().zip(w_row) {
            *acc += x * wij;
        }
    }
    for (acc, bj) in next.iter_mut().zip(b) {
        *acc += bj;
        if relu {
            *acc = acc.max(0.0);
        }
    }
    next
}

/// Softmax in the shader's order: the exact maximum, exp(z - max), per-thread sums over
/// j = t, t + 64, ... in increasing order, then a halving tree over the 64 partial sums.
fn softmax(z: &mut [f32]) {
    let top = z.iter().copied().fold(z[0], f32::max);
    let mut partial = [0f32; THREADS];
    for (j, v) in z.iter_mut().enumerate() {
        *v = (*v - top).exp();
        partial[j % THREADS] += *v;
    }
    let mut s = THREADS / 2;
    while s > 0 {
        for t in 0..s {
            partial[t] += partial[t + s];
        }
        s /= 2;
    }
    for v in z.iter_mut() {
        *v /= partial[0];
    }
}

/// Runs the network over `rows` (row-major, n_0 each) with weights `w` (the blob as f32).
/// The caller has checked all sizes.
fn forward(layers: &[u32], output: Activation, w: &[f32], rows: &[f32]) -> Vec<f32> {
    let depth = layers.len() - 1;
    let mut out = Vec::with_capacity(rows.len() / first(layers) as usize * last(layers) as usize);
    for row in rows.chunks_exact(first(layers) as usize) {
        let mut cur = row.to_vec();
        let mut off = 0;
        for (l, pair) in layers.windows(2).enumerate() {
            let (n, m) = (pair[0] as usize, pair[1] as usize);
            let (wl, bl) = (&w[off..off + n * m], &w[off + n * m..off + n * m + m]);
            cur = dense(&cur, wl, bl, l + 1 < depth);
            off += n * m + m;
        }
        if output == Activation::Softmax {
            softmax(&mut cur);
        }
        out.extend_from_slice(&cur);
    }
    out
}

impl UnitSpec for Mlp {
    type Unit = MlpUnit;
    const ID: &'static str = "mlp";

    fn output_len(u: &MlpUnit) -> usize {
        f32_bytes(u64::from(u.rows) * u64::from(last(&u.layers)))
    }

    fn run_cpu(u: &MlpUnit, input: &[u8]) -> Result<Vec<u8>, KernelError> {
        u.check_input(input)?;
        let w: Vec<f32> = floats(&input[..u.weight_bytes()]).collect();
        let rows: Vec<f32> = floats(&input[u.weight_bytes()..]).collect();
        let out = forward(&u.layers, u.output, &w, &rows);
        Ok(out.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    fn gpu_dispatch(u: &MlpUnit, input: &[u8]) -> Result<GpuDispatch, KernelError> {
        u.check_input(input)?;
        let mut sizes = [0u32; 12];
        sizes[..u.layers.len()].copy_from_slice(&u.layers);
        let header = [
            u.rows,
            u.layers.len() as u32,
            u32::from(u.output == Activation::Softmax),
            0,
        ];
        let uniforms = header
            .iter()
            .chain(&sizes)
            .flat_map(|v| v.to_le_bytes())
            .collect();
        Ok(GpuDispatch {
            label: "mlp",
            shader: crate::shader!("mlp"),
            uniforms,
            inputs: vec![0..u.weight_bytes(), u.weight_bytes()..input.len()],
            output_bytes: Self::output_len(u) as u64,
            workgroups: [u.rows, 1, 1],
        })
    }

    fn unit_flops(u: &MlpUnit) -> u64 {
        u64::from(u.rows) * row_flops(&u.layers)
    }
}

impl KernelSpec for Mlp {
    type Params = MlpParams;
    const VERSION: u32 = 1;

    fn info() -> KernelInfo {
        KernelInfo {
            id: Self::ID,
            version: Self::VERSION,
            description: "Inference of a dense network in f32: up to 8 fully connected layers \
                          of up to 1024 neurons, ReLU on hidden layers, softmax or linear \
                          output, split into blocks of batch rows.",
            params_schema: json!({
                "type": "object",
                "required": ["layers", "batch", "output"],
                "additionalProperties": false,
                "properties": {
                    "layers": {
                        "description": "layer sizes: input, hidden layers, output",
                        "type": "array",
                        "minItems": MIN_LAYERS,
                        "maxItems": MAX_LAYERS,
                        "items": {"type": "integer", "minimum": 1, "maximum": MAX_WIDTH},
                        "default": [784, 128, 10],
                    },
                    "batch": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH, "default": 64},
                    "output": {"enum": ["softmax", "linear"], "default": "softmax"},
                },
            }),
            inputs: vec![
                InputInfo {
                    name: "weights",
                    encoding: "f32 little-endian; for each layer l = 1..L in order: W_l \
                               (layers[l-1] x layers[l], row-major) then the bias b_l \
                               (layers[l]); finite, and small enough that no activation can \
                               exceed 1e38 for the given inputs",
                },
                InputInfo {
                    name: "inputs",
                    encoding: "batch x layers[0] f32 little-endian, row-major; finite",
                },
            ],
            output: "batch x layers[L] f32 little-endian, row-major (softmax: each row sums \
                     to 1)",
            output_content_type: "application/octet-stream",
            comparison: "element-wise, |x - y| <= K * 2^-23 * max(1, |x|, |y|) with K = 32 + \
                         the sum over layers of (inputs + 1), plus outputs + 32 for a softmax: \
                         the rounding of the dot products of every layer an output depends on \
                         (and of the softmax's exp, sum and division), whatever the summation \
                         order or fused multiply-adds of the device, with headroom for \
                         cancellation; measured differences stay below a tenth of it",
            spot_check: None,
        }
    }

    fn validate(p: &MlpParams) -> Result<(), KernelError> {
        validate_layers("layers", &p.layers)?;
        if !(1..=MAX_BATCH).contains(&p.batch) {
            return Err(KernelError::InvalidParam {
                field: "batch".to_owned(),
                reason: format!("must be between 1 and {MAX_BATCH}, got {}", p.batch),
            });
        }
        Ok(())
    }

    /// Checks sizes and values of `weights` and `inputs` and packs them as
    /// `weights ++ inputs`.
    ///
    /// Besides finiteness, it bounds every activation over the whole batch: with
    /// `B_0 = max |input|` and `B_l = max_j (sum_i |W_l[i][j]| B_{l-1} + |b_l[j]|)` (ReLU
    /// never increases a magnitude), no pre-activation of layer l exceeds `B_l` in exact
    /// arithmetic. Requiring `B_l <= MAX_ACTIVATION` keeps honest outputs finite on every
    /// device, so replicas can be compared; only pathological networks are refused.
    fn pack_input(p: &MlpParams, inputs: &NamedInputs) -> Result<Vec<u8>, KernelError> {
        Self::validate(p)?;
        if let Some(extra) = inputs.keys().find(|k| *k != "weights" && *k != "inputs") {
            return Err(KernelError::InvalidInput {
                field: extra.clone(),
                reason: "mlp takes only inputs `weights` and `inputs`".to_owned(),
            });
        }
        let get = |name: &str| {
            inputs.get(name).ok_or_else(|| KernelError::InvalidInput {
                field: name.to_owned(),
                reason: "missing".to_owned(),
            })
        };
        let (weights, rows) = (get("weights")?, get("inputs")?);
        let expected = f32_bytes(weight_floats(&p.layers));
        if weights.len() != expected {
            return Err(KernelError::InvalidInput {
                field: "weights".to_owned(),
                reason: format!(
                    "layers {:?} need {} f32 = {expected} bytes, got {} bytes",
                    p.layers,
                    weight_floats(&p.layers),
                    weights.len()
                ),
            });
        }
        let width_in = first(&p.layers);
        let expected = f32_bytes(u64::from(p.batch) * u64::from(width_in));
        if rows.len() != expected {
            return Err(KernelError::InvalidInput {
                field: "inputs".to_owned(),
                reason: format!(
                    "expected {}x{width_in} f32 = {expected} bytes, got {} bytes",
                    p.batch,
                    rows.len()
                ),
            });
        }
        if let Some((index, value)) = floats(weights).enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(KernelError::InvalidInput {
                field: "weights".to_owned(),
                reason: format!(
                    "element {index} ({}) is {value}; weights must be finite",
                    weight_position(&p.layers, index as u64)
                ),
            });
        }
        if let Some((index, value)) = floats(rows).enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(KernelError::InvalidInput {
                field: "inputs".to_owned(),
                reason: format!(
                    "element {index} (row {}, column {}) is {value}; inputs must be finite",
                    index / width_in as usize,
                    index % width_in as usize
                ),
            });
        }
        let input_max = floats(rows).fold(0f64, |m, v| m.max(f64::from(v.abs())));
        let w: Vec<f64> = floats(weights).map(|v| f64::from(v.abs())).collect();
        let mut bound = input_max;
        let mut off = 0;
        for (l, pair) in p.layers.windows(2).enumerate() {
            let (n, m) = (pair[0] as usize, pair[1] as usize);
            let mut column = vec![0f64; m];
            for w_row in w[off..off + n * m].chunks_exact(m) {
                for (c, wij) in column.iter_mut().zip(w_row) {
                    *c += wij;
                }
            }
            let bias = &w[off + n * m..off + n * m + m];
            bound = column
                .iter()
                .zip(bias)
                .map(|(c, b)| c * bound + b)
                .fold(0f64, f64::max);
            if bound.is_nan() || bound > MAX_ACTIVATION {
                return Err(KernelError::InvalidInput {
                    field: "weights".to_owned(),
                    reason: format!(
                        "layer {} can overflow f32: with inputs up to {input_max:.3e} in \
                         magnitude its outputs may reach {bound:.3e}, more than \
                         {MAX_ACTIVATION:e}; scale the weights or inputs down",
                        l + 1
                    ),
                });
            }
            off += n * m + m;
        }
        let mut packed = Vec::with_capacity(weights.len() + rows.len());
        packed.extend_from_slice(weights);
        packed.extend_from_slice(rows);
        Ok(packed)
    }

    fn split(p: &MlpParams, target_flops: u64) -> Vec<MlpUnit> {
        let per_row = row_flops(&p.layers).max(1);
        let cap = max_unit_rows(&p.layers).min(p.batch).max(1);
        let floor = min_unit_rows(&p.layers).min(cap);
        let rows_per_unit = (target_flops / per_row).clamp(u64::from(floor), u64::from(cap)) as u32;
        (0..p.batch)
            .step_by(rows_per_unit as usize)
            .map(|row_start| MlpUnit {
                row_start,
                rows: rows_per_unit.min(p.batch - row_start),
                layers: p.layers.clone(),
                output: p.output,
            })
            .collect()
    }

    fn unit_input(p: &MlpParams, job_input: &[u8], u: &MlpUnit) -> Result<Vec<u8>, KernelError> {
        if u.layers != p.layers || u.output != p.output {
            return Err(KernelError::InvalidParam {
                field: "unit".to_owned(),
                reason: "network differs from the job's".to_owned(),
            });
        }
        let width_in = u64::from(first(&p.layers));
        let weight_len = weight_floats(&p.layers) * 4;
        let expected = weight_len + u64::from(p.batch) * width_in * 4;
        let start = weight_len + u64::from(u.row_start) * width_in * 4;
        let end = start + u64::from(u.rows) * width_in * 4;
        if job_input.len() as u64 != expected || end > expected {
            return Err(KernelError::Shape {
                got: job_input.len(),
                expected: usize::try_from(expected).unwrap_or(usize::MAX),
            });
        }
        // All three are at most job_input.len(), so they fit in usize.
        let (weight_len, start, end) = (weight_len as usize, start as usize, end as usize);
        let mut input = Vec::with_capacity(weight_len + end - start);
        input.extend_from_slice(&job_input[..weight_len]);
        input.extend_from_slice(&job_input[start..end]);
        Ok(input)
    }

    fn merge(p: &MlpParams, outputs: &[Vec<u8>]) -> Result<Vec<u8>, KernelError> {
        let merged = outputs.concat();
        let expected = f32_bytes(u64::from(p.batch) * u64::from(last(&p.layers)));
        if merged.len() != expected {
            return Err(KernelError::Shape {
                got: merged.len(),
                expected,
            });
        }
        Ok(merged)
    }

    /// A small classifier or regressor: 16-64 inputs, one hidden layer of 32-128, 2 or
    /// 10 outputs, weights in [-0.5, 0.5) and inputs in [-1, 1).
    fn probe(seed: u64) -> Option<(MlpParams, NamedInputs)> {
        let mut rng = crate::ProbeRng::new(seed);
        let layers = vec![
            rng.pick(&[16, 32, 64]),
            rng.pick(&[32, 64, 128]),
            rng.pick(&[2, 10]),
        ];
        let batch = rng.pick(&[1024, 4096]);
        let output = rng.pick(&[Activation::Softmax, Activation::Linear]);
        let mut inputs = NamedInputs::new();
        inputs.insert(
            "weights".into(),
            rng.f32_bytes(weight_floats(&layers) as usize, 0.5),
        );
        inputs.insert(
            "inputs".into(),
            rng.f32_bytes((u64::from(batch) * u64::from(layers[0])) as usize, 1.0),
        );
        Some((
            MlpParams {
                layers,
                batch,
                output,
            },
            inputs,
        ))
    }

    fn outputs_agree(u: &MlpUnit, x: &[u8], y: &[u8]) -> bool {
        outputs_agree(&u.layers, u.output, x, y)
    }
}

/// The `K` of [`outputs_agree`]: how many roundings of size up to 2^-24 of the output's
/// scale separate an honest computation of one output element from the exact value.
///
/// A layer's pre-activation is a dot product of n_{l-1} terms plus a bias, n_{l-1} + 1
/// roundings: its error is at most (n_{l-1} + 1) 2^-24 times the sum of the magnitudes of
/// its terms, whatever the order and with or without fused multiply-adds. A relative error
/// in one layer's activations enters the next layer's terms at the same relative size, so
/// the errors of all layers add up: `sum_l (n_{l-1} + 1)`. Then 32 more as headroom for
/// cancellation, where the sum of |terms| exceeds the output's scale: it matters only for
/// small networks, whose other terms are small (large ones gain more from the rounding
/// errors' partial cancellation, about sqrt(n) of n). The softmax adds the rounding of
/// `z - max`, `exp` (a few ULP in WGSL for the arguments that matter), the n_L-term sum
/// and the division: n_L + 32 more.
pub fn tolerance_terms(layers: &[u32], output: Activation) -> u32 {
    let dots: u32 = layers
        .iter()
        .take(layers.len().saturating_sub(1))
        .map(|n| n + 1)
        .sum::<u32>()
        + 32;
    match output {
        Activation::Softmax => dots + last(layers) + 32,
        Activation::Linear => dots,
    }
}

/// Whether two honest outputs of the same unit agree: element-wise
/// `|x - y| <= K * 2^-23 * max(1, |x|, |y|)` with `K` from [`tolerance_terms`].
///
/// Each replica is within `K * 2^-24` of the exact result (relative to the output's scale),
/// so two replicas are within twice that: `K * 2^-23`. The scale is the output itself,
/// floored at 1 so that outputs near zero after cancellation (and small probabilities)
/// are compared absolutely. The comparison sees no inputs, so a network whose dot products
/// cancel far more than random weights do could in principle exceed it; measured on
/// random networks, GPU-CPU and FMA-no-FMA differences stay below a tenth of it. For the
/// largest network (K = 8 * 1025 + 32 + 1024 + 32) the bound is 1.1e-3 relative, so
/// changing an element of magnitude 0.11 or more by 1% is caught; for a [784, 512, 256,
/// 10] classifier it is 1.9e-4.
pub fn outputs_agree(layers: &[u32], output: Activation, x: &[u8], y: &[u8]) -> bool {
    let tol = tolerance_terms(layers, output) as f32 * f32::EPSILON;
    x.len() == y.len()
        && floats(x).zip(floats(y)).all(|(a, b)| {
            let scale = a.abs().max(b.abs()).max(1.0);
            // Written so that NaN fails.
            (a - b).abs() <= tol * scale
        })
}

#[cfg(test)]
mod tests;
