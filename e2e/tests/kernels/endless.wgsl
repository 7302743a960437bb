// A kernel whose loop never ends on a GPU that runs loops to their end (llvmpipe stops
// an invocation's loops after 65 535 iterations, so on lavapipe each invocation does
// that many heavy iterations: far past any deadline its declared FLOPs earn).

struct Unit {
    offset: vec2<u32>,
    size: vec2<u32>,
    range: vec2<u32>,
    n: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> unit: Unit;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x >= unit.size.x {
        return;
    }
    var x = f32(unit.offset.x + id.x);
    loop {
        // sin stays within [-1, 1]: the exit below is never taken.
        if x > 1e30 {
            break;
        }
        x = sin(x * 1.0001 + cos(x)) + sin(cos(x) * 0.999);
        x = sin(x * 1.0001 + cos(x)) + sin(cos(x) * 0.999);
        x = sin(x * 1.0001 + cos(x)) + sin(cos(x) * 0.999);
        x = sin(x * 1.0001 + cos(x)) + sin(cos(x) * 0.999);
    }
    out[id.x] = x;
}
