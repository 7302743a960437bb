// Monte Carlo estimate of pi: count the samples of one unit that fall inside the quarter
// circle.
//
// Sample i of the job draws Philox4x32-10 with counter (i mod 2^32, i / 2^32, 0, 0) and
// key (seed mod 2^32, seed / 2^32); the first two words x, y are the point
// (x / 2^32, y / 2^32) in [0, 1)^2, a hit when x^2 + y^2 < 2^64, decided exactly in
// integers. WGSL has neither u64 nor a high-half multiply, so 32x32 -> 64-bit products are
// built from 16-bit halves. The CPU reference (`mod.rs`) computes the same integers, so
// hit counts agree exactly.
//
// Each invocation takes samples gid, gid + stride, ... of the unit, counts its hits, adds
// them to a workgroup counter, and one thread per workgroup adds that to the output. A
// unit has fewer than 2^32 samples, so the count fits the output's low word; the high word
// stays zero (buffers start zeroed), which makes the output the count as u64 LE.

struct Params {
    // First sample index of the unit, as two u32 halves.
    start_lo: u32,
    start_hi: u32,
    // Samples in the unit.
    count: u32,
    // The job seed's halves: the Philox key.
    key_lo: u32,
    key_hi: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// [hits (low word), 0 (high word)].
@group(0) @binding(1) var<storage, read_write> hits: array<atomic<u32>>;

const WORKGROUP: u32 = 256u;

var<workgroup> group_hits: atomic<u32>;

// BEGIN philox (the GPU test suite runs this section against the published test vectors)
const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;

// The full 64-bit product a * b as (low word, high word).
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let a_lo = a & 0xFFFFu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xFFFFu;
    let b_hi = b >> 16u;
    let ll = a_lo * b_lo;
    let lh = a_lo * b_hi;
    let hl = a_hi * b_lo;
    let hh = a_hi * b_hi;
    // Bits 16..48 of the product, before carries: at most 3 * (2^16 - 1), no overflow.
    let mid = (ll >> 16u) + (lh & 0xFFFFu) + (hl & 0xFFFFu);
    let lo = (mid << 16u) | (ll & 0xFFFFu);
    let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(lo, hi);
}

fn philox_round(c: vec4<u32>, k: vec2<u32>) -> vec4<u32> {
    let p0 = mul_wide(PHILOX_M0, c.x);
    let p1 = mul_wide(PHILOX_M1, c.z);
    return vec4<u32>(p1.y ^ c.y ^ k.x, p1.x, p0.y ^ c.w ^ k.y, p0.x);
}

// Philox4x32-10 (Salmon et al., SC 2011): ten rounds, the key bumped between rounds.
fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    c = philox_round(c, k);
    for (var r = 1u; r < 10u; r = r + 1u) {
        k = k + vec2<u32>(PHILOX_W0, PHILOX_W1);
        c = philox_round(c, k);
    }
    return c;
}
// END philox

// x^2 + y^2 < 2^64, exactly: the 65-bit sum of the two 64-bit squares has no bit 64.
fn inside(x: u32, y: u32) -> bool {
    let xx = mul_wide(x, x);
    let yy = mul_wide(y, y);
    let lo = xx.x + yy.x;
    let carry = select(0u, 1u, lo < xx.x);
    let hi = xx.y + yy.y;
    // hi < xx.y: the high words overflowed. The squares' high words are at most
    // 2^32 - 2, so hi + carry overflows only if hi was 2^32 - 1.
    return hi >= xx.y && !(hi == 0xFFFFFFFFu && carry == 1u);
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let stride = groups.x * WORKGROUP;
    let key = vec2<u32>(params.key_lo, params.key_hi);
    var mine = 0u;
    var i = gid.x;
    loop {
        if (i >= params.count) {
            break;
        }
        // Sample index start + i as two words; start + count <= 2^40, no overflow.
        let lo = params.start_lo + i;
        let hi = params.start_hi + select(0u, 1u, lo < i);
        let r = philox4x32_10(vec4<u32>(lo, hi, 0u, 0u), key);
        if (inside(r.x, r.y)) {
            mine = mine + 1u;
        }
        // i + stride may exceed 2^32 - 1 when count is close to it: stop before wrapping.
        if (params.count - i <= stride) {
            break;
        }
        i = i + stride;
    }
    atomicAdd(&group_hits, mine);
    workgroupBarrier();
    if (lid == 0u) {
        atomicAdd(&hits[0], atomicLoad(&group_hits));
    }
}
