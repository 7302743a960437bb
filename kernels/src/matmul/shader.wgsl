// C = A x B for one block of rows: A is rows x k, B is k x n, C is rows x n, all f32
// row-major.
//
// Each workgroup of 16x16 threads computes a 64x64 block of C; each thread owns a 4x4
// sub-block, strided by 16 so neighbouring threads read neighbouring workgroup-memory
// words (no bank conflicts) and write neighbouring columns (coalesced). K advances in
// steps of 16: a 64x16 slice of A and a 16x64 slice of B are staged in workgroup memory
// (8 KiB), so every element read from storage is reused 64 times, and each thread does 16
// multiply-adds per 8 workgroup-memory reads in the inner loop.
//
// Every element of C still sums over p in increasing order, like the CPU reference.

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

const BLOCK: u32 = 64u;
const BK: u32 = 16u;
const THREADS: u32 = 16u;

// tile_a[p][r]: transposed so the inner loop reads A along rows without conflicts.
var<workgroup> tile_a: array<f32, 1024>;
var<workgroup> tile_b: array<f32, 1024>;

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) lindex: u32,
) {
    let row0 = wid.y * BLOCK;
    let col0 = wid.x * BLOCK;
    // Four rows of four accumulators each, in vectors: no dynamically indexed private
    // arrays, which some compilers (lavapipe's included) spill to memory.
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let steps = (dims.k + BK - 1u) / BK;
    for (var t = 0u; t < steps; t = t + 1u) {
        let p0 = t * BK;
        // 256 threads stage 1024 elements of each tile, 4 each.
        for (var l = 0u; l < 4u; l = l + 1u) {
            let e = lindex + l * 256u;
            // A slice: 64 rows x 16 columns; e = r * 16 + p.
            let ar = e / BK;
            let ap = e % BK;
            var va = 0.0;
            if (row0 + ar < dims.rows && p0 + ap < dims.k) {
                va = a[(row0 + ar) * dims.k + p0 + ap];
            }
            tile_a[ap * BLOCK + ar] = va;
            // B slice: 16 rows x 64 columns; e = p * 64 + col.
            let bp = e / BLOCK;
            let bc = e % BLOCK;
            var vb = 0.0;
            if (p0 + bp < dims.k && col0 + bc < dims.n) {
                vb = b[(p0 + bp) * dims.n + col0 + bc];
            }
            tile_b[bp * BLOCK + bc] = vb;
        }
        workgroupBarrier();
        for (var p = 0u; p < BK; p = p + 1u) {
            let base = p * BLOCK;
            let ra = vec4<f32>(
                tile_a[base + lid.y],
                tile_a[base + lid.y + THREADS],
                tile_a[base + lid.y + 2u * THREADS],
                tile_a[base + lid.y + 3u * THREADS],
            );
            let rb = vec4<f32>(
                tile_b[base + lid.x],
                tile_b[base + lid.x + THREADS],
                tile_b[base + lid.x + 2u * THREADS],
                tile_b[base + lid.x + 3u * THREADS],
            );
            acc0 = acc0 + ra.x * rb;
            acc1 = acc1 + ra.y * rb;
            acc2 = acc2 + ra.z * rb;
            acc3 = acc3 + ra.w * rb;
        }
        workgroupBarrier();
    }
    store(row0 + lid.y, col0 + lid.x, acc0);
    store(row0 + lid.y + THREADS, col0 + lid.x, acc1);
    store(row0 + lid.y + 2u * THREADS, col0 + lid.x, acc2);
    store(row0 + lid.y + 3u * THREADS, col0 + lid.x, acc3);
}

// Writes one thread's four values of a row of C, at columns col, col+16, col+32, col+48.
fn store(row: u32, col: u32, v: vec4<f32>) {
    if (row >= dims.rows) {
        return;
    }
    for (var j = 0u; j < 4u; j = j + 1u) {
        let c_col = col + j * THREADS;
        if (c_col < dims.n) {
            c[row * dims.n + c_col] = v[j];
        }
    }
}
