// Baseline for the benchmark only: the first matmul shader (16x16 tiles, one output per
// thread), kept to measure what the tuned kernel in src/matmul/shader.wgsl gains.
// C = A x B for one block of rows: A is rows x k, B is k x n, C is rows x n, all f32
// row-major. 16x16 tiles of A and B are staged in workgroup memory so each element read
// from storage is reused 16 times.

struct Dims {
    rows: u32,
    k: u32,
    n: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const TILE: u32 = 16u;

var<workgroup> tile_a: array<f32, 256>;
var<workgroup> tile_b: array<f32, 256>;

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row = gid.y;
    let col = gid.x;
    let tiles = (dims.k + TILE - 1u) / TILE;
    var acc = 0.0;
    for (var t = 0u; t < tiles; t = t + 1u) {
        let a_col = t * TILE + lid.x;
        var va = 0.0;
        if (row < dims.rows && a_col < dims.k) {
            va = a[row * dims.k + a_col];
        }
        tile_a[lid.y * TILE + lid.x] = va;
        let b_row = t * TILE + lid.y;
        var vb = 0.0;
        if (b_row < dims.k && col < dims.n) {
            vb = b[b_row * dims.n + col];
        }
        tile_b[lid.y * TILE + lid.x] = vb;
        workgroupBarrier();
        for (var i = 0u; i < TILE; i = i + 1u) {
            acc = acc + tile_a[lid.y * TILE + i] * tile_b[i * TILE + lid.x];
        }
        workgroupBarrier();
    }
    if (row < dims.rows && col < dims.n) {
        c[row * dims.n + col] = acc;
    }
}
