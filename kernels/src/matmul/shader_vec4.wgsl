// A candidate for matmul's shader (`Matmul::gpu_dispatch_vec4`; volunteers still run
// `shader.wgsl`). C = A x B for one block of rows, when k and n are multiples of 4:
// A rows x k, B k x n, C rows x n, f32 row-major, bound as vec4s.
//
// Each workgroup of 16x16 threads computes a 128x128 block of C; each thread owns an 8x8
// tile of it, as two 4-row bands (rows 4ty.. and 64+4ty..) by two 4-column bands
// (columns 4tx.. and 64+4tx..). K advances by 16: a 128x16 slice of A (stored
// transposed) and a 16x128 slice of B are staged in workgroup memory (16 KiB, WebGPU's
// default limit), loaded from storage as vec4s, two of each per thread. The inner step
// reads four vec4s from workgroup memory for 64 multiply-adds, where `shader.wgsl` reads
// eight scalars for 16: on lavapipe 3.1-4.2x its speed (kernels bench, issue 26).
// Every element of C still sums over p in increasing order, like the CPU reference.

struct Dims {
    rows: u32,
    k: u32,
    n: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;

const BLOCK: u32 = 128u;
const BK: u32 = 16u;
// vec4s across a block's width.
const QUADS: u32 = 32u;

// tile_a[p * 32 + r / 4][r % 4]: A's slice transposed, so a thread reads four rows at once.
var<workgroup> tile_a: array<vec4<f32>, 512>;
// tile_b[p * 32 + c / 4][c % 4].
var<workgroup> tile_b: array<vec4<f32>, 512>;

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) lindex: u32,
) {
    let row0 = wid.y * BLOCK;
    let col0 = wid.x * BLOCK;
    let k4 = dims.k / 4u;
    let n4 = dims.n / 4u;
    // Rows 4ty + i (a) and 64 + 4ty + i (b), columns band 0 and band 1.
    var a00 = vec4<f32>(0.0); var a01 = vec4<f32>(0.0);
    var a10 = vec4<f32>(0.0); var a11 = vec4<f32>(0.0);
    var a20 = vec4<f32>(0.0); var a21 = vec4<f32>(0.0);
    var a30 = vec4<f32>(0.0); var a31 = vec4<f32>(0.0);
    var b00 = vec4<f32>(0.0); var b01 = vec4<f32>(0.0);
    var b10 = vec4<f32>(0.0); var b11 = vec4<f32>(0.0);
    var b20 = vec4<f32>(0.0); var b21 = vec4<f32>(0.0);
    var b30 = vec4<f32>(0.0); var b31 = vec4<f32>(0.0);
    let steps = (dims.k + BK - 1u) / BK;
    for (var t = 0u; t < steps; t = t + 1u) {
        let p0 = t * BK;
        for (var l = 0u; l < 2u; l = l + 1u) {
            let e = lindex + l * 256u;
            // A: 128 rows x 4 vec4s of p; e = r * 4 + q.
            let ar = e / 4u;
            let aq = e % 4u;
            var va = vec4<f32>(0.0);
            if (row0 + ar < dims.rows && p0 + aq * 4u < dims.k) {
                va = a[(row0 + ar) * k4 + p0 / 4u + aq];
            }
            let p = aq * 4u;
            tile_a[p * QUADS + ar / 4u][ar % 4u] = va.x;
            tile_a[(p + 1u) * QUADS + ar / 4u][ar % 4u] = va.y;
            tile_a[(p + 2u) * QUADS + ar / 4u][ar % 4u] = va.z;
            tile_a[(p + 3u) * QUADS + ar / 4u][ar % 4u] = va.w;
            // B: 16 rows of p x 32 vec4s of columns; e = p * 32 + q.
            let bp = e / QUADS;
            let bq = e % QUADS;
            var vb = vec4<f32>(0.0);
            if (p0 + bp < dims.k && col0 + bq * 4u < dims.n) {
                vb = b[(p0 + bp) * n4 + col0 / 4u + bq];
            }
            tile_b[bp * QUADS + bq] = vb;
        }
        workgroupBarrier();
        for (var p = 0u; p < BK; p = p + 1u) {
            let ra = tile_a[p * QUADS + lid.y];
            let rb = tile_a[p * QUADS + lid.y + 16u];
            let c0 = tile_b[p * QUADS + lid.x];
            let c1 = tile_b[p * QUADS + lid.x + 16u];
            a00 = a00 + ra.x * c0; a01 = a01 + ra.x * c1;
            a10 = a10 + ra.y * c0; a11 = a11 + ra.y * c1;
            a20 = a20 + ra.z * c0; a21 = a21 + ra.z * c1;
            a30 = a30 + ra.w * c0; a31 = a31 + ra.w * c1;
            b00 = b00 + rb.x * c0; b01 = b01 + rb.x * c1;
            b10 = b10 + rb.y * c0; b11 = b11 + rb.y * c1;
            b20 = b20 + rb.z * c0; b21 = b21 + rb.z * c1;
            b30 = b30 + rb.w * c0; b31 = b31 + rb.w * c1;
        }
        workgroupBarrier();
    }
    let ra = row0 + lid.y * 4u;
    let rb = row0 + 64u + lid.y * 4u;
    let q0 = col0 / 4u + lid.x;
    let q1 = col0 / 4u + lid.x + 16u;
    store(ra, q0, q1, a00, a01);
    store(ra + 1u, q0, q1, a10, a11);
    store(ra + 2u, q0, q1, a20, a21);
    store(ra + 3u, q0, q1, a30, a31);
    store(rb, q0, q1, b00, b01);
    store(rb + 1u, q0, q1, b10, b11);
    store(rb + 2u, q0, q1, b20, b21);
    store(rb + 3u, q0, q1, b30, b31);
}

// Writes one row's two vec4s of C, at vec4 columns q0 and q1, where they fall inside C.
fn store(row: u32, q0: u32, q1: u32, v0: vec4<f32>, v1: vec4<f32>) {
    if (row >= dims.rows) {
        return;
    }
    let n4 = dims.n / 4u;
    if (q0 < n4) {
        c[row * n4 + q0] = v0;
    }
    if (q1 < n4) {
        c[row * n4 + q1] = v1;
    }
}
