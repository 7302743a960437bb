// A 3-tap blur (1/4, 1/2, 1/4) over n floats, the ends clamped.

struct Unit {
    offset: vec2<u32>,
    size: vec2<u32>,
    range: vec2<u32>,
    n: u32,
}

@group(0) @binding(0) var<storage, read> signal: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> unit: Unit;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x >= unit.size.x {
        return;
    }
    let i = unit.offset.x + id.x;
    // `signal` is sliced per unit with a halo of 1 (the manifest's `per_unit`): the
    // unit receives elements from max(offset, 1) - 1, so element e is at e - first.
    let first = max(unit.offset.x, 1u) - 1u;
    let left = signal[select(i - 1u, 0u, i == 0u) - first];
    let right = signal[min(i + 1u, unit.n - 1u) - first];
    out[id.x] = 0.25 * left + 0.5 * signal[i - first] + 0.25 * right;
}
