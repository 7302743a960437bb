// SAXPY: out[i] = a * x[i] + y[i] over n floats. `a` is an input of one element.

// Filled by the relay for each unit: the unit covers invocations
// offset.x .. offset.x + size.x of the job's range (range.x = n).
struct Unit {
    offset: vec2<u32>,
    size: vec2<u32>,
    range: vec2<u32>,
    n: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> unit: Unit;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x >= unit.size.x {
        return;
    }
    // x and y are sliced per unit (the manifest's `per_unit`): the unit receives only
    // its own elements, from 0, as its output holds its own invocations only.
    out[id.x] = a[0] * x[id.x] + y[id.x];
}
