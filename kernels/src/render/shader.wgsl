// Path tracer of the built-in Cornell-box scene, one invocation per pixel of a tile.
//
// This is the GPU twin of the CPU reference in `mod.rs`: every function here mirrors the
// one of the same name there, operation for operation, and the scene constants are the
// same numbers. Random numbers are PCG hashes of (seed, pixel, sample, bounce, dimension)
// in u32, so both sides draw identical bits; only f32 rounding can differ.
//
// Output: linear RGB f32, 3 floats per pixel, tile row-major, each channel the mean of
// samples clamped to [0, 1].

struct Params {
    x0: u32,
    y0: u32,
    w: u32,
    h: u32,
    width: u32,
    height: u32,
    spp: u32,
    seed: u32,
    bounces: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

const DIFFUSE: u32 = 0u;
const EMIT: u32 = 1u;
const MIRROR: u32 = 2u;
const GLASS: u32 = 3u;

struct Material {
    kind: u32,
    color: vec3<f32>,
}

struct Rect {
    axis: u32,
    pos: f32,
    lo: vec2<f32>,
    hi: vec2<f32>,
    mat: u32,
}

struct Sphere {
    center: vec3<f32>,
    radius: f32,
    mat: u32,
}

const LIGHT_E: vec3<f32> = vec3<f32>(17.0, 14.0, 10.0);
const LIGHT_Y: f32 = 0.998;
const LIGHT_LO: f32 = 0.375;
const LIGHT_SIZE: f32 = 0.25;
const LIGHT_HI: f32 = 0.625;
const LIGHT_AREA_OVER_PI: f32 = 0.019894368;

const CAMERA: vec3<f32> = vec3<f32>(0.5, 0.5, -1.37);
const TAN_HALF_FOV: f32 = 0.364;
const EPS: f32 = 1e-4;
const FAR: f32 = 1e30;
const NONE: u32 = 0xFFFFFFFFu;

const N_RECTS: u32 = 11u;
const N_SPHERES: u32 = 3u;

const MATERIALS: array<Material, 7> = array<Material, 7>(
    Material(DIFFUSE, vec3<f32>(0.73, 0.73, 0.73)),
    Material(DIFFUSE, vec3<f32>(0.65, 0.05, 0.05)),
    Material(DIFFUSE, vec3<f32>(0.12, 0.45, 0.15)),
    Material(EMIT, LIGHT_E),
    Material(MIRROR, vec3<f32>(0.9, 0.9, 0.9)),
    Material(GLASS, vec3<f32>(1.0, 1.0, 1.0)),
    Material(DIFFUSE, vec3<f32>(0.1, 0.2, 0.6)),
);

const RECTS: array<Rect, 11> = array<Rect, 11>(
    Rect(1u, 0.0, vec2<f32>(0.0, 0.0), vec2<f32>(1.0, 1.0), 0u),
    Rect(1u, 1.0, vec2<f32>(0.0, 0.0), vec2<f32>(1.0, 1.0), 0u),
    Rect(2u, 1.0, vec2<f32>(0.0, 0.0), vec2<f32>(1.0, 1.0), 0u),
    Rect(0u, 0.0, vec2<f32>(0.0, 0.0), vec2<f32>(1.0, 1.0), 1u),
    Rect(0u, 1.0, vec2<f32>(0.0, 0.0), vec2<f32>(1.0, 1.0), 2u),
    Rect(1u, LIGHT_Y, vec2<f32>(LIGHT_LO, LIGHT_LO), vec2<f32>(LIGHT_HI, LIGHT_HI), 3u),
    Rect(1u, 0.62, vec2<f32>(0.48, 0.13), vec2<f32>(0.78, 0.43), 0u),
    Rect(0u, 0.13, vec2<f32>(0.0, 0.48), vec2<f32>(0.62, 0.78), 0u),
    Rect(0u, 0.43, vec2<f32>(0.0, 0.48), vec2<f32>(0.62, 0.78), 0u),
    Rect(2u, 0.48, vec2<f32>(0.13, 0.0), vec2<f32>(0.43, 0.62), 0u),
    Rect(2u, 0.78, vec2<f32>(0.13, 0.0), vec2<f32>(0.43, 0.62), 0u),
);

const SPHERES: array<Sphere, 3> = array<Sphere, 3>(
    Sphere(vec3<f32>(0.28, 0.77, 0.63), 0.15, 4u),
    Sphere(vec3<f32>(0.45, 0.2, 0.25), 0.2, 5u),
    Sphere(vec3<f32>(0.82, 0.13, 0.62), 0.13, 6u),
);

fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

fn sample_key(seed: u32, x: u32, y: u32, sample: u32) -> u32 {
    return pcg(seed + pcg(x + pcg(y + pcg(sample))));
}

fn rnd(key: u32, bounce: u32, dim: u32) -> u32 {
    return pcg(key + (bounce * 8u + dim) * 0x9E3779B9u);
}

fn unit_float(bits: u32) -> f32 {
    return f32(bits >> 8u) * (1.0 / 16777216.0);
}

// Written out rather than `dot()`, in the CPU reference's order.
fn dot3(a: vec3<f32>, b: vec3<f32>) -> f32 {
    return a.x * b.x + a.y * b.y + a.z * b.z;
}

fn circle(bits: u32) -> vec2<f32> {
    let a = f32(bits & 0x00FFFFFFu) * (1.0 / 16777216.0) * 1.5707964;
    let a2 = a * a;
    let s = a
        * (1.0
            + a2 * (-0.16666667
                + a2 * (0.008333334
                    + a2 * (-0.0001984127 + a2 * (2.7557319e-6 + a2 * -2.5052108e-8)))));
    let c = 1.0
        + a2 * (-0.5
            + a2 * (0.041666668
                + a2 * (-0.0013888889
                    + a2 * (2.4801588e-5 + a2 * (-2.755732e-7 + a2 * 2.0876756e-9)))));
    switch (bits >> 30u) {
        case 0u: { return vec2<f32>(c, s); }
        case 1u: { return vec2<f32>(-s, c); }
        case 2u: { return vec2<f32>(-c, -s); }
        default: { return vec2<f32>(s, -c); }
    }
}

fn cosine_dir(n: vec3<f32>, bits_z: u32, bits_phi: u32) -> vec3<f32> {
    let z = 1.0 - 2.0 * unit_float(bits_z);
    let r = sqrt(max(1.0 - z * z, 0.0));
    let cs = circle(bits_phi);
    let v = n + vec3<f32>(r * cs.x, r * cs.y, z);
    let len2 = dot3(v, v);
    if (len2 < 1e-8) {
        return n;
    }
    return v / sqrt(len2);
}

fn rect_t(r: Rect, o: vec3<f32>, d: vec3<f32>, t_max: f32) -> f32 {
    let da = d[r.axis];
    if (abs(da) < 1e-20) {
        return FAR;
    }
    let t = (r.pos - o[r.axis]) / da;
    if (!(t > EPS && t < t_max)) {
        return FAR;
    }
    let b = (r.axis + 1u) % 3u;
    let c = (r.axis + 2u) % 3u;
    let pb = o[b] + t * d[b];
    let pc = o[c] + t * d[c];
    if (pb >= r.lo.x && pb <= r.hi.x && pc >= r.lo.y && pc <= r.hi.y) {
        return t;
    }
    return FAR;
}

fn sphere_t(s: Sphere, o: vec3<f32>, d: vec3<f32>, t_max: f32) -> f32 {
    let oc = o - s.center;
    let b = dot3(oc, d);
    let cc = dot3(oc, oc) - s.radius * s.radius;
    let disc = b * b - cc;
    if (disc < 0.0) {
        return FAR;
    }
    let sq = sqrt(disc);
    var t = -b - sq;
    if (t <= EPS) {
        t = -b + sq;
    }
    if (t > EPS && t < t_max) {
        return t;
    }
    return FAR;
}

struct Closest {
    t: f32,
    obj: u32,
}

fn try_rect(i: u32, o: vec3<f32>, d: vec3<f32>, best: ptr<function, Closest>) {
    let t = rect_t(RECTS[i], o, d, (*best).t);
    if (t < (*best).t) {
        *best = Closest(t, i);
    }
}

fn try_sphere(i: u32, o: vec3<f32>, d: vec3<f32>, best: ptr<function, Closest>) {
    let t = sphere_t(SPHERES[i], o, d, (*best).t);
    if (t < (*best).t) {
        *best = Closest(t, N_RECTS + i);
    }
}

// The object tests are written out rather than looped over: llvmpipe (lavapipe) stops
// every loop of an invocation once all of them together have run 65535 iterations, and
// constant indices let compilers fold each object's constants in.
fn closest(o: vec3<f32>, d: vec3<f32>, t_max: f32) -> Closest {
    var best = Closest(t_max, NONE);
    try_rect(0u, o, d, &best);
    try_rect(1u, o, d, &best);
    try_rect(2u, o, d, &best);
    try_rect(3u, o, d, &best);
    try_rect(4u, o, d, &best);
    try_rect(5u, o, d, &best);
    try_rect(6u, o, d, &best);
    try_rect(7u, o, d, &best);
    try_rect(8u, o, d, &best);
    try_rect(9u, o, d, &best);
    try_rect(10u, o, d, &best);
    try_sphere(0u, o, d, &best);
    try_sphere(1u, o, d, &best);
    try_sphere(2u, o, d, &best);
    return best;
}

fn occluded(o: vec3<f32>, d: vec3<f32>, t_max: f32) -> bool {
    return rect_t(RECTS[0], o, d, t_max) < t_max
        || rect_t(RECTS[1], o, d, t_max) < t_max
        || rect_t(RECTS[2], o, d, t_max) < t_max
        || rect_t(RECTS[3], o, d, t_max) < t_max
        || rect_t(RECTS[4], o, d, t_max) < t_max
        || rect_t(RECTS[5], o, d, t_max) < t_max
        || rect_t(RECTS[6], o, d, t_max) < t_max
        || rect_t(RECTS[7], o, d, t_max) < t_max
        || rect_t(RECTS[8], o, d, t_max) < t_max
        || rect_t(RECTS[9], o, d, t_max) < t_max
        || rect_t(RECTS[10], o, d, t_max) < t_max
        || sphere_t(SPHERES[0], o, d, t_max) < t_max
        || sphere_t(SPHERES[1], o, d, t_max) < t_max
        || sphere_t(SPHERES[2], o, d, t_max) < t_max;
}

struct Path {
    key: u32,
    o: vec3<f32>,
    d: vec3<f32>,
    thr: vec3<f32>,
    rad: vec3<f32>,
    specular: bool,
    bounce: u32,
}

fn camera_path(x: u32, y: u32, sample: u32) -> Path {
    let key = sample_key(params.seed, x, y, sample);
    let fx = f32(x) + unit_float(rnd(key, 0u, 0u));
    let fy = f32(y) + unit_float(rnd(key, 0u, 1u));
    let w = f32(params.width);
    let h = f32(params.height);
    let sx = (2.0 * fx - w) / h * TAN_HALF_FOV;
    let sy = (h - 2.0 * fy) / h * TAN_HALF_FOV;
    let dir = vec3<f32>(sx, sy, 1.0);
    return Path(
        key,
        CAMERA,
        dir / sqrt(dot3(dir, dir)),
        vec3<f32>(1.0, 1.0, 1.0),
        vec3<f32>(0.0, 0.0, 0.0),
        true,
        0u,
    );
}

fn step(path: ptr<function, Path>) -> bool {
    let key = (*path).key;
    let bounce = (*path).bounce;
    let d = (*path).d;
    let hit = closest((*path).o, d, FAR);
    if (hit.obj == NONE) {
        return true;
    }
    let p = (*path).o + d * hit.t;
    var n: vec3<f32>;
    var front = true;
    var mat: u32;
    if (hit.obj < N_RECTS) {
        let r = RECTS[hit.obj];
        var s = -1.0;
        if (d[r.axis] < 0.0) {
            s = 1.0;
        }
        n = vec3<f32>(0.0, 0.0, 0.0);
        n[r.axis] = s;
        mat = r.mat;
    } else {
        let sp = SPHERES[hit.obj - N_RECTS];
        let outward = (p - sp.center) / sp.radius;
        if (dot3(d, outward) < 0.0 || MATERIALS[sp.mat].kind != GLASS) {
            n = outward;
        } else {
            n = -outward;
            front = false;
        }
        mat = sp.mat;
    }
    let m = MATERIALS[mat];
    if (m.kind == EMIT) {
        if ((*path).specular && d.y > 0.0) {
            (*path).rad = (*path).rad + (*path).thr * m.color;
        }
        return true;
    }
    if (m.kind == DIFFUSE) {
        let po = p + n * EPS;
        let q = vec3<f32>(
            LIGHT_LO + unit_float(rnd(key, bounce, 2u)) * LIGHT_SIZE,
            LIGHT_Y,
            LIGHT_LO + unit_float(rnd(key, bounce, 3u)) * LIGHT_SIZE,
        );
        let l = q - po;
        let dist2 = dot3(l, l);
        let dist = sqrt(dist2);
        let wi = l / dist;
        let cs = dot3(n, wi);
        let cl = wi.y;
        let ta = (*path).thr * m.color;
        if (cs > 0.0 && cl > 0.0 && !occluded(po, wi, dist - 1e-3)) {
            let g = cs * cl * LIGHT_AREA_OVER_PI / dist2;
            (*path).rad = (*path).rad + ta * LIGHT_E * g;
        }
        (*path).thr = ta;
        (*path).d = cosine_dir(n, rnd(key, bounce, 4u), rnd(key, bounce, 5u));
        (*path).o = po;
        (*path).specular = false;
    } else if (m.kind == MIRROR) {
        (*path).d = d - n * (2.0 * dot3(d, n));
        (*path).o = p + n * EPS;
        (*path).thr = (*path).thr * m.color;
        (*path).specular = true;
    } else {
        var eta = 1.5;
        if (front) {
            eta = 0.6666667;
        }
        let cos_i = min(-dot3(d, n), 1.0);
        let sin2_t = eta * eta * (1.0 - cos_i * cos_i);
        let x = 1.0 - cos_i;
        let x2 = x * x;
        let fresnel = 0.04 + 0.96 * (x2 * x2 * x);
        if (sin2_t > 1.0 || unit_float(rnd(key, bounce, 6u)) < fresnel) {
            (*path).d = d - n * (2.0 * dot3(d, n));
            (*path).o = p + n * EPS;
        } else {
            let cos_t = sqrt(1.0 - sin2_t);
            (*path).d = d * eta + n * (eta * cos_i - cos_t);
            (*path).o = p - n * EPS;
        }
        (*path).thr = (*path).thr * m.color;
        (*path).specular = true;
    }
    (*path).bounce = bounce + 1u;
    return (*path).bounce >= params.bounces;
}

// One loop over every segment of every sample, rather than samples and bounces nested:
// llvmpipe's 65535-iteration budget then covers samples_per_pixel * max_bounces segments
// (at most 4096 * 15 = 61440), and on SIMD hardware a lane whose path ended early starts
// its next sample instead of idling until its neighbours' paths end.
@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= params.w || gid.y >= params.h) {
        return;
    }
    let x = params.x0 + gid.x;
    let y = params.y0 + gid.y;
    var acc = vec3<f32>(0.0, 0.0, 0.0);
    var sample = 0u;
    var path = camera_path(x, y, 0u);
    loop {
        if (step(&path)) {
            acc = acc + clamp(path.rad, vec3<f32>(0.0), vec3<f32>(1.0));
            sample = sample + 1u;
            if (sample >= params.spp) {
                break;
            }
            path = camera_path(x, y, sample);
        }
    }
    let n = f32(params.spp);
    let base = (gid.y * params.w + gid.x) * 3u;
    out[base] = acc.x / n;
    out[base + 1u] = acc.y / n;
    out[base + 2u] = acc.z / n;
}
