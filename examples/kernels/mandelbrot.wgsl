// Escape counts of the Mandelbrot set over [-2, 1] x [-1.5, 1.5], one u32 per pixel,
// row-major. Units are bands of whole rows.

struct Unit {
    offset: vec2<u32>,
    size: vec2<u32>,
    range: vec2<u32>,
    width: u32,
    height: u32,
    max_iter: u32,
}

@group(0) @binding(0) var<storage, read_write> counts: array<u32>;
@group(0) @binding(1) var<uniform> unit: Unit;

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x >= unit.size.x || id.y >= unit.size.y {
        return;
    }
    let px = unit.offset.x + id.x;
    let py = unit.offset.y + id.y;
    let c = vec2<f32>(
        -2.0 + 3.0 * f32(px) / f32(unit.width),
        -1.5 + 3.0 * f32(py) / f32(unit.height),
    );
    var z = vec2<f32>(0.0, 0.0);
    var i = 0u;
    loop {
        if i >= unit.max_iter || dot(z, z) > 4.0 {
            break;
        }
        z = vec2<f32>(z.x * z.x - z.y * z.y, 2.0 * z.x * z.y) + c;
        i = i + 1u;
    }
    counts[id.y * unit.size.x + id.x] = i;
}
