// Inference of a dense network (multi-layer perceptron) for a block of batch rows.
//
// One workgroup of 64 threads per batch row. The row's activations live in workgroup
// memory, ping-ponging between the two halves of `act` (2 x 1024 f32 = 8 KiB, inside
// WebGPU's default 16 KiB), so every layer reads the previous one without touching
// storage. In each layer the threads stride over the output neurons: thread t computes
// neurons t, t + 64, ..., each a dot product over the previous activations in increasing
// input order, then + bias, then ReLU on hidden layers. Neighbouring threads read
// neighbouring weights (W is in x out, row-major), and all threads read the same
// activation word at once (a broadcast).
//
// The softmax output subtracts the row maximum before `exp` and sums with a fixed tree:
// each thread sums its own neurons in increasing order, then the 64 partial sums are
// halved 32, 16, ..., 1. The CPU reference (`mod.rs`) follows exactly this order, so
// GPU and CPU differ only by fused multiply-adds and the accuracy of `exp` and `/`.

struct Params {
    // Batch rows in this unit, one workgroup each.
    rows: u32,
    // Entries of `sizes` in use: input, hidden layers, output (2..=9).
    depth: u32,
    // 1: softmax output, 0: linear output.
    softmax: u32,
    _pad: u32,
    // Layer sizes, four to a vec4: uniform arrays need a 16-byte element stride.
    sizes: array<vec4<u32>, 3>,
}

@group(0) @binding(0) var<uniform> params: Params;
// For each layer: W (in x out, row-major) then the bias (out), in layer order.
@group(0) @binding(1) var<storage, read> weights: array<f32>;
// rows x sizes[0], row-major.
@group(0) @binding(2) var<storage, read> inputs: array<f32>;
// rows x sizes[depth - 1], row-major.
@group(0) @binding(3) var<storage, read_write> outputs: array<f32>;

const THREADS: u32 = 64u;
const WIDTH: u32 = 1024u;

var<workgroup> act: array<f32, 2048>;
var<workgroup> partial: array<f32, 64>;

fn layer_size(l: u32) -> u32 {
    return params.sizes[l / 4u][l % 4u];
}

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let row = wid.x;
    if (row >= params.rows) {
        return;
    }
    let width_in = layer_size(0u);
    for (var i = t; i < width_in; i = i + THREADS) {
        act[i] = inputs[row * width_in + i];
    }
    workgroupBarrier();

    let last = params.depth - 1u;
    // Offsets of the current activations in `act` and of this layer's W in `weights`.
    var cur = 0u;
    var w_off = 0u;
    for (var l = 0u; l < last; l = l + 1u) {
        let n = layer_size(l);
        let m = layer_size(l + 1u);
        let next = WIDTH - cur;
        let b_off = w_off + n * m;
        let relu = l + 1u < last;
        for (var j = t; j < m; j = j + THREADS) {
            // Four terms per iteration, still added one by one in increasing i like the
            // CPU reference: llvmpipe silently stops an invocation's loops after 65 535
            // iterations in total, and 8 layers of 1024 at 16 neurons a thread would be
            // 131 072 iterations of a one-term loop.
            var acc = 0.0;
            var i = 0u;
            for (; i + 4u <= n; i = i + 4u) {
                acc = acc + act[cur + i] * weights[w_off + i * m + j];
                acc = acc + act[cur + i + 1u] * weights[w_off + (i + 1u) * m + j];
                acc = acc + act[cur + i + 2u] * weights[w_off + (i + 2u) * m + j];
                acc = acc + act[cur + i + 3u] * weights[w_off + (i + 3u) * m + j];
            }
            for (; i < n; i = i + 1u) {
                acc = acc + act[cur + i] * weights[w_off + i * m + j];
            }
            acc = acc + weights[b_off + j];
            if (relu) {
                acc = max(acc, 0.0);
            }
            act[next + j] = acc;
        }
        workgroupBarrier();
        cur = next;
        w_off = b_off + m;
    }

    let width_out = layer_size(last);
    let out_base = row * width_out;
    if (params.softmax == 0u) {
        for (var j = t; j < width_out; j = j + THREADS) {
            outputs[out_base + j] = act[cur + j];
        }
        return;
    }

    // Row maximum: exact in any order.
    var top = act[cur];
    for (var j = t; j < width_out; j = j + THREADS) {
        top = max(top, act[cur + j]);
    }
    partial[t] = top;
    workgroupBarrier();
    for (var s = THREADS / 2u; s > 0u; s = s / 2u) {
        if (t < s) {
            partial[t] = max(partial[t], partial[t + s]);
        }
        workgroupBarrier();
    }
    top = partial[0];
    workgroupBarrier();

    // exp(z - max) <= 1, so the sum cannot overflow; each thread keeps its own terms.
    var sum = 0.0;
    for (var j = t; j < width_out; j = j + THREADS) {
        let e = exp(act[cur + j] - top);
        act[cur + j] = e;
        sum = sum + e;
    }
    partial[t] = sum;
    workgroupBarrier();
    for (var s = THREADS / 2u; s > 0u; s = s / 2u) {
        if (t < s) {
            partial[t] = partial[t] + partial[t + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    for (var j = t; j < width_out; j = j + THREADS) {
        outputs[out_base + j] = act[cur + j] / total;
    }
}
