//! The CPU reference. Every function mirrors the one of the same name in `shader.wgsl`,
//! operation for operation, so that the two round alike wherever the devices allow.

use super::RenderUnit;
use std::ops::{Add, Mul, Neg, Sub};

/// A 3-vector of f32, with just the operations the tracer needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct V3 {
    pub(super) x: f32,
    pub(super) y: f32,
    pub(super) z: f32,
}

pub(super) const fn v3(x: f32, y: f32, z: f32) -> V3 {
    V3 { x, y, z }
}

impl V3 {
    pub(super) fn dot(self, o: V3) -> f32 {
        self.x * o.x + self.y * o.y + self.z * o.z
    }
    fn mul(self, o: V3) -> V3 {
        v3(self.x * o.x, self.y * o.y, self.z * o.z)
    }
    fn div(self, s: f32) -> V3 {
        v3(self.x / s, self.y / s, self.z / s)
    }
    fn axis(self, a: usize) -> f32 {
        match a {
            0 => self.x,
            1 => self.y,
            _ => self.z,
        }
    }
}

impl Add for V3 {
    type Output = V3;
    fn add(self, o: V3) -> V3 {
        v3(self.x + o.x, self.y + o.y, self.z + o.z)
    }
}

impl Sub for V3 {
    type Output = V3;
    fn sub(self, o: V3) -> V3 {
        v3(self.x - o.x, self.y - o.y, self.z - o.z)
    }
}

impl Mul<f32> for V3 {
    type Output = V3;
    fn mul(self, s: f32) -> V3 {
        v3(self.x * s, self.y * s, self.z * s)
    }
}

impl Neg for V3 {
    type Output = V3;
    fn neg(self) -> V3 {
        v3(-self.x, -self.y, -self.z)
    }
}

/// Diffuse (Lambertian) with the colour as albedo.
const DIFFUSE: u32 = 0;
/// Emits the colour as radiance, downwards only (the ceiling light).
const EMIT: u32 = 1;
/// Perfect mirror tinted by the colour.
const MIRROR: u32 = 2;
/// Glass of index 1.5, Schlick's Fresnel, tinted by the colour.
const GLASS: u32 = 3;

/// A material: kind and colour.
#[derive(Clone, Copy, Debug)]
struct Material {
    kind: u32,
    color: V3,
}

/// Radiance of the ceiling light.
const LIGHT_E: V3 = v3(17.0, 14.0, 10.0);

/// The scene's materials, indexed by [`Rect::mat`] and [`Sphere::mat`].
const MATERIALS: [Material; 7] = [
    Material {
        kind: DIFFUSE,
        color: v3(0.73, 0.73, 0.73),
    },
    Material {
        kind: DIFFUSE,
        color: v3(0.65, 0.05, 0.05),
    },
    Material {
        kind: DIFFUSE,
        color: v3(0.12, 0.45, 0.15),
    },
    Material {
        kind: EMIT,
        color: LIGHT_E,
    },
    Material {
        kind: MIRROR,
        color: v3(0.9, 0.9, 0.9),
    },
    Material {
        kind: GLASS,
        color: v3(1.0, 1.0, 1.0),
    },
    Material {
        kind: DIFFUSE,
        color: v3(0.1, 0.2, 0.6),
    },
];

/// A rectangle perpendicular to axis `axis` (0 x, 1 y, 2 z) at `pos`, spanning `lo .. hi`
/// along axes `(axis + 1) % 3` and `(axis + 2) % 3`. Both sides are surfaces.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rect {
    axis: usize,
    pos: f32,
    lo: [f32; 2],
    hi: [f32; 2],
    mat: u32,
}

const fn rect(axis: usize, pos: f32, lo: [f32; 2], hi: [f32; 2], mat: u32) -> Rect {
    Rect {
        axis,
        pos,
        lo,
        hi,
        mat,
    }
}

/// The light's rectangle, on the y axis just under the ceiling; x and z span
/// `LIGHT_LO .. LIGHT_HI`, `LIGHT_SIZE` wide.
const LIGHT_Y: f32 = 0.998;
const LIGHT_LO: f32 = 0.375;
const LIGHT_SIZE: f32 = 0.25;
const LIGHT_HI: f32 = 0.625;
/// The light's area over pi, for the light-sampling estimator.
const LIGHT_AREA_OVER_PI: f32 = 0.019_894_368;

/// The room (unit cube, open at z = 0 where the camera looks in), the light and the box.
pub(super) const RECTS: [Rect; 11] = [
    rect(1, 0.0, [0.0, 0.0], [1.0, 1.0], 0), // floor (z, x)
    rect(1, 1.0, [0.0, 0.0], [1.0, 1.0], 0), // ceiling
    rect(2, 1.0, [0.0, 0.0], [1.0, 1.0], 0), // back wall (x, y)
    rect(0, 0.0, [0.0, 0.0], [1.0, 1.0], 1), // left wall, red (y, z)
    rect(0, 1.0, [0.0, 0.0], [1.0, 1.0], 2), // right wall, green
    rect(1, LIGHT_Y, [LIGHT_LO, LIGHT_LO], [LIGHT_HI, LIGHT_HI], 3), // light
    rect(1, 0.62, [0.48, 0.13], [0.78, 0.43], 0), // box top
    rect(0, 0.13, [0.0, 0.48], [0.62, 0.78], 0), // box left
    rect(0, 0.43, [0.0, 0.48], [0.62, 0.78], 0), // box right
    rect(2, 0.48, [0.13, 0.0], [0.43, 0.62], 0), // box front
    rect(2, 0.78, [0.13, 0.0], [0.43, 0.62], 0), // box back
];

/// A sphere.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sphere {
    center: V3,
    radius: f32,
    mat: u32,
}

/// Mirror sphere on the box, glass sphere in front, blue sphere at the right.
pub(super) const SPHERES: [Sphere; 3] = [
    Sphere {
        center: v3(0.28, 0.77, 0.63),
        radius: 0.15,
        mat: 4,
    },
    Sphere {
        center: v3(0.45, 0.2, 0.25),
        radius: 0.2,
        mat: 5,
    },
    Sphere {
        center: v3(0.82, 0.13, 0.62),
        radius: 0.13,
        mat: 6,
    },
];

/// Pinhole camera in front of the open side, looking along +z.
const CAMERA: V3 = v3(0.5, 0.5, -1.37);
/// Tangent of half the vertical field of view (40 degrees).
const TAN_HALF_FOV: f32 = 0.364;
/// Rays start this far along t, and bounce origins are pushed this far off the surface,
/// so a ray does not hit the surface it leaves.
const EPS: f32 = 1e-4;
/// "No hit yet" distance.
const FAR: f32 = 1e30;

/// PCG hash (Jarzynski and Olano, "Hash Functions for GPU Rendering", 2020): one LCG step
/// and a permutation, u32 only, so WGSL computes exactly the same bits.
pub fn pcg(v: u32) -> u32 {
    let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// The key of one sample: nested hashes of (sample, pixel y, pixel x, seed). Pixels use
/// image coordinates, so a pixel's samples do not depend on the tiling.
fn sample_key(seed: u32, x: u32, y: u32, sample: u32) -> u32 {
    pcg(seed.wrapping_add(pcg(x.wrapping_add(pcg(y.wrapping_add(pcg(sample)))))))
}

/// Random bits for one (bounce, dimension) of a sample; dimensions: 0-1 pixel jitter,
/// 2-3 light sample, 4-5 bounce direction, 6 glass reflect-or-refract.
fn rnd(key: u32, bounce: u32, dim: u32) -> u32 {
    pcg(key.wrapping_add((bounce * 8 + dim).wrapping_mul(0x9E37_79B9)))
}

/// The top 24 bits as a float in [0, 1), exactly.
fn unit_float(bits: u32) -> f32 {
    (bits >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// A point on the unit circle at a uniform angle, without sin or cos: the top two bits
/// pick the quadrant, the low 24 an angle in [0, pi/2), and Taylor polynomials to the
/// 11th (sine) and 12th (cosine) power give both to f32 accuracy (error below 6e-8).
pub(super) fn circle(bits: u32) -> (f32, f32) {
    let a = (bits & 0x00FF_FFFF) as f32 * (1.0 / 16_777_216.0) * 1.570_796_4;
    let a2 = a * a;
    let s = a
        * (1.0
            + a2 * (-0.166_666_67
                + a2 * (0.008_333_334
                    + a2 * (-0.000_198_412_7 + a2 * (2.755_731_9e-6 + a2 * -2.505_210_8e-8)))));
    let c = 1.0
        + a2 * (-0.5
            + a2 * (0.041_666_668
                + a2 * (-0.001_388_888_9
                    + a2 * (2.480_158_8e-5 + a2 * (-2.755_732e-7 + a2 * 2.087_675_6e-9)))));
    match bits >> 30 {
        0 => (c, s),
        1 => (-s, c),
        2 => (-c, -s),
        _ => (s, -c),
    }
}

/// A cosine-weighted direction around the unit normal `n`: `n` plus a uniform point on
/// the unit sphere, normalised, is distributed as cos(theta) / pi about `n`, and needs no
/// basis around `n`.
pub(super) fn cosine_dir(n: V3, bits_z: u32, bits_phi: u32) -> V3 {
    let z = 1.0 - 2.0 * unit_float(bits_z);
    let r = (1.0 - z * z).max(0.0).sqrt();
    let (c, s) = circle(bits_phi);
    let v = n + v3(r * c, r * s, z);
    let len2 = v.dot(v);
    if len2 < 1e-8 {
        return n;
    }
    v.div(len2.sqrt())
}

/// Distance along the ray to the rectangle, or `FAR` when it misses or lies outside
/// (`EPS`, `t_max`).
fn rect_t(r: &Rect, o: V3, d: V3, t_max: f32) -> f32 {
    let da = d.axis(r.axis);
    // Also keeps subnormal directions, which GPUs may flush to zero, out of the division.
    if da.abs() < 1e-20 {
        return FAR;
    }
    let t = (r.pos - o.axis(r.axis)) / da;
    if !(t > EPS && t < t_max) {
        return FAR;
    }
    let (b, c) = ((r.axis + 1) % 3, (r.axis + 2) % 3);
    let pb = o.axis(b) + t * d.axis(b);
    let pc = o.axis(c) + t * d.axis(c);
    if pb >= r.lo[0] && pb <= r.hi[0] && pc >= r.lo[1] && pc <= r.hi[1] {
        t
    } else {
        FAR
    }
}

/// Distance along the (unit) ray to the sphere, or `FAR`.
fn sphere_t(s: &Sphere, o: V3, d: V3, t_max: f32) -> f32 {
    let oc = o - s.center;
    let b = oc.dot(d);
    let cc = oc.dot(oc) - s.radius * s.radius;
    let disc = b * b - cc;
    if disc < 0.0 {
        return FAR;
    }
    let sq = disc.sqrt();
    let mut t = -b - sq;
    if t <= EPS {
        t = -b + sq;
    }
    if t > EPS && t < t_max {
        t
    } else {
        FAR
    }
}

/// The closest object the ray hits before `t_max`: (t, object), rectangles first
/// (0..11), then spheres (11..14); object `usize::MAX` when it hits nothing.
fn closest(o: V3, d: V3, t_max: f32) -> (f32, usize) {
    let mut best = t_max;
    let mut obj = usize::MAX;
    for (i, r) in RECTS.iter().enumerate() {
        let t = rect_t(r, o, d, best);
        if t < best {
            best = t;
            obj = i;
        }
    }
    for (i, s) in SPHERES.iter().enumerate() {
        let t = sphere_t(s, o, d, best);
        if t < best {
            best = t;
            obj = RECTS.len() + i;
        }
    }
    (best, obj)
}

/// Whether anything lies on the ray before `t_max`.
fn occluded(o: V3, d: V3, t_max: f32) -> bool {
    RECTS.iter().any(|r| rect_t(r, o, d, t_max) < t_max)
        || SPHERES.iter().any(|s| sphere_t(s, o, d, t_max) < t_max)
}

/// The state of one path between segments.
struct Path {
    /// The sample's random key.
    key: u32,
    /// Ray origin and (unit) direction.
    o: V3,
    d: V3,
    /// Product of the colours so far.
    thr: V3,
    /// Radiance gathered so far.
    rad: V3,
    /// Whether emission hit by this ray counts: only camera rays and rays after a mirror
    /// or glass bounce, since diffuse bounces already sampled the light.
    specular: bool,
    /// Segments traced so far.
    bounce: u32,
}

/// A path starting at the camera through pixel (x, y), jittered within the pixel.
fn camera_path(u: &RenderUnit, x: u32, y: u32, sample: u32) -> Path {
    let key = sample_key(u.seed, x, y, sample);
    let fx = x as f32 + unit_float(rnd(key, 0, 0));
    let fy = y as f32 + unit_float(rnd(key, 0, 1));
    let (w, h) = (u.width as f32, u.height as f32);
    let sx = (2.0 * fx - w) / h * TAN_HALF_FOV;
    let sy = (h - 2.0 * fy) / h * TAN_HALF_FOV;
    let dir = v3(sx, sy, 1.0);
    Path {
        key,
        o: CAMERA,
        d: dir.div(dir.dot(dir).sqrt()),
        thr: v3(1.0, 1.0, 1.0),
        rad: v3(0.0, 0.0, 0.0),
        specular: true,
        bounce: 0,
    }
}

/// Traces one segment of the path and shades its hit; true when the path has ended
/// (escaped, reached the light, or used `max_bounces` segments).
fn step(u: &RenderUnit, path: &mut Path) -> bool {
    let (key, bounce, d) = (path.key, path.bounce, path.d);
    let (t, obj) = closest(path.o, d, FAR);
    if obj == usize::MAX {
        return true;
    }
    let p = path.o + d * t;
    // The normal facing the incoming ray, and whether the ray enters the object.
    let (n, front, mat) = if obj < RECTS.len() {
        let r = &RECTS[obj];
        let s = if d.axis(r.axis) < 0.0 { 1.0 } else { -1.0 };
        let n = match r.axis {
            0 => v3(s, 0.0, 0.0),
            1 => v3(0.0, s, 0.0),
            _ => v3(0.0, 0.0, s),
        };
        (n, true, r.mat)
    } else {
        let sp = &SPHERES[obj - RECTS.len()];
        let out = (p - sp.center).div(sp.radius);
        // Only glass is entered; a grazing hit on an opaque sphere whose rounded normal
        // faces along the ray must not send the path inside it, where it would be trapped.
        if d.dot(out) < 0.0 || MATERIALS[sp.mat as usize].kind != GLASS {
            (out, true, sp.mat)
        } else {
            (-out, false, sp.mat)
        }
    };
    let m = MATERIALS[mat as usize];
    if m.kind == EMIT {
        if path.specular && d.y > 0.0 {
            path.rad = path.rad + path.thr.mul(m.color);
        }
        return true;
    }
    if m.kind == DIFFUSE {
        let po = p + n * EPS;
        // Next-event estimation: one uniform point on the light.
        let q = v3(
            LIGHT_LO + unit_float(rnd(key, bounce, 2)) * LIGHT_SIZE,
            LIGHT_Y,
            LIGHT_LO + unit_float(rnd(key, bounce, 3)) * LIGHT_SIZE,
        );
        let l = q - po;
        let dist2 = l.dot(l);
        let dist = dist2.sqrt();
        let wi = l.div(dist);
        let cs = n.dot(wi);
        let cl = wi.y;
        let ta = path.thr.mul(m.color);
        if cs > 0.0 && cl > 0.0 && !occluded(po, wi, dist - 1e-3) {
            let g = cs * cl * LIGHT_AREA_OVER_PI / dist2;
            path.rad = path.rad + ta.mul(LIGHT_E) * g;
        }
        path.thr = ta;
        path.d = cosine_dir(n, rnd(key, bounce, 4), rnd(key, bounce, 5));
        path.o = po;
        path.specular = false;
    } else if m.kind == MIRROR {
        path.d = d - n * (2.0 * d.dot(n));
        path.o = p + n * EPS;
        path.thr = path.thr.mul(m.color);
        path.specular = true;
    } else {
        let eta = if front { 0.666_666_7 } else { 1.5 };
        let cos_i = (-d.dot(n)).min(1.0);
        let sin2_t = eta * eta * (1.0 - cos_i * cos_i);
        let x = 1.0 - cos_i;
        let x2 = x * x;
        let fresnel = 0.04 + 0.96 * (x2 * x2 * x);
        if sin2_t > 1.0 || unit_float(rnd(key, bounce, 6)) < fresnel {
            path.d = d - n * (2.0 * d.dot(n));
            path.o = p + n * EPS;
        } else {
            let cos_t = (1.0 - sin2_t).sqrt();
            path.d = d * eta + n * (eta * cos_i - cos_t);
            path.o = p - n * EPS;
        }
        path.thr = path.thr.mul(m.color);
        path.specular = true;
    }
    path.bounce += 1;
    path.bounce >= u.max_bounces
}

/// The mean of the pixel's samples, each clamped to [0, 1] per channel.
pub(super) fn render_pixel(u: &RenderUnit, x: u32, y: u32) -> [f32; 3] {
    let mut acc = v3(0.0, 0.0, 0.0);
    for sample in 0..u.samples_per_pixel {
        let mut path = camera_path(u, x, y, sample);
        while !step(u, &mut path) {}
        let r = path.rad;
        acc = acc
            + v3(
                r.x.clamp(0.0, 1.0),
                r.y.clamp(0.0, 1.0),
                r.z.clamp(0.0, 1.0),
            );
    }
    let n = u.samples_per_pixel as f32;
    [acc.x / n, acc.y / n, acc.z / n]
}
