//! `render`: a Monte Carlo path tracer of a built-in Cornell-box scene, split into tiles.
//!
//! The scene (see `RECTS`, `SPHERES` and `MATERIALS` below) is a unit cube room open at the
//! front: white floor, ceiling and back wall, a red left and a green right wall, a square
//! ceiling light, a tall white box with a mirror sphere on top, a glass sphere and a blue
//! sphere on the floor. Only analytic intersections: axis-aligned rectangles and spheres.
//! Paths use next-event estimation at diffuse surfaces (one light sample and shadow ray
//! per bounce), perfect mirror reflection, and Schlick-Fresnel glass.
//!
//! Encoding: the job has no inputs. A unit is one tile of the image and carries everything
//! a volunteer needs (tile origin and size, image size, samples, seed, bounces). Its
//! output is linear RGB, f32 little-endian, 3 floats per pixel (r, g, b), pixels row-major
//! within the tile, each channel in [0, 1]. The job result is an 8-bit sRGB RGB PNG of
//! the whole image.
//!
//! Determinism: every random number is a counter-based hash of (seed, pixel x, pixel y,
//! sample, bounce, dimension) in u32 arithmetic ([`pcg`]), identical in `shader.wgsl` and
//! here, and both sides perform the same f32 operations in the same order. Devices still
//! round differently (fused multiply-adds, sqrt and division accuracy), which rarely sends
//! a ray that grazes an edge down a different path; [`outputs_agree`] allows for that.

use crate::catalog::{KernelInfo, NamedInputs};
use crate::gpu::GpuDispatch;
use crate::{KernelError, KernelSpec};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::ops::{Add, Mul, Neg, Sub};

/// Largest accepted image width and height.
pub const MAX_SIDE: u32 = 4096;
/// Largest accepted samples per pixel.
pub const MAX_SPP: u32 = 4096;
/// Largest accepted path length. `MAX_SPP * MAX_BOUNCES` = 61 440 path segments per pixel
/// stays under the 65 535 loop iterations llvmpipe (Mesa's lavapipe) lets one invocation
/// run before it silently stops its loops; the shader runs one iteration per segment.
pub const MAX_BOUNCES: u32 = 15;
/// Path length when the job does not say.
pub const DEFAULT_BOUNCES: u32 = 5;
/// Side of the workgroup (8x8 invocations, one per pixel; see `shader.wgsl`), and the
/// granularity of tile sides from 8 up.
const WORKGROUP: u32 = 8;
/// Largest tile side: a 512x512 tile's output is 3 MiB, far below every storage-binding
/// limit, and the dispatch is 64x64 workgroups.
pub const MAX_TILE: u32 = 512;

/// Channels differing by at most this much count as equal: far above the f32 rounding
/// noise of a path that takes the same route on both devices (relative 1e-6, see
/// [`outputs_agree`]), and a quarter of one 8-bit output level.
pub const TOLERANCE: f32 = 1e-3;
/// Pixels of any tile whose channels may differ by more than [`TOLERANCE`], because some
/// of their samples took another path on the other device (see [`outputs_agree`]) ...
pub const OUTLIER_BASE: usize = 8;
/// ... plus this many per 10 000 pixels of the tile (1%).
pub const OUTLIERS_PER_10K: usize = 100;
/// How many diverged samples an outlier pixel may hold: it may differ by at most
/// `OUTLIER_SAMPLES / samples_per_pixel + TOLERANCE` per channel.
pub const OUTLIER_SAMPLES: f32 = 4.0;

/// FLOPs of one ray-rectangle test: t = (pos - o) / d (2), two range compares, two hit
/// coordinates (4), four bound compares, and the zero-direction guard.
const RECT_TEST_FLOPS: u64 = 13;
/// FLOPs of one ray-sphere test: oc (3), two dot products (10), r^2 and the discriminant
/// (3), sqrt, both roots and their compares (4).
const SPHERE_TEST_FLOPS: u64 = 21;
/// FLOPs of one ray traced against every object of the scene.
const TRACE_FLOPS: u64 =
    RECTS.len() as u64 * RECT_TEST_FLOPS + SPHERES.len() as u64 * SPHERE_TEST_FLOPS;
/// FLOPs of one bounce: the closest hit, a shadow ray, and about 110 for the hit point,
/// normal, light sample (point, distance, cosines, contribution), cosine-weighted
/// direction (polynomial sine and cosine, normalisation) and throughput update. Hash
/// arithmetic is integer work and not counted.
const BOUNCE_FLOPS: u64 = 2 * TRACE_FLOPS + 110;
/// FLOPs per sample outside the bounces: camera ray, clamp and accumulation.
const SAMPLE_FLOPS: u64 = 30;

/// FLOPs of one sample with up to `bounces` bounces. Counted for a path that uses all its
/// bounces and casts every shadow ray; paths that escape through the open front, end on
/// the light, or face away from the light are cheaper, so this is an upper estimate.
pub fn flops_per_sample(bounces: u32) -> u64 {
    SAMPLE_FLOPS + u64::from(bounces) * BOUNCE_FLOPS
}

fn default_bounces() -> u32 {
    DEFAULT_BOUNCES
}

/// Parameters of a render job.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RenderParams {
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// Paths traced per pixel.
    pub samples_per_pixel: u32,
    /// Picks the noise pattern; the same seed gives the same image.
    pub seed: u32,
    /// Surface interactions per path; 1 is direct light only.
    #[serde(default = "default_bounces")]
    pub max_bounces: u32,
}

/// One unit: the tile `x0 .. x0 + w` by `y0 .. y0 + h` of the image, with everything
/// needed to render it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RenderUnit {
    /// First column of the tile.
    pub x0: u32,
    /// First row of the tile.
    pub y0: u32,
    /// Tile width.
    pub w: u32,
    /// Tile height.
    pub h: u32,
    /// Image width (sets the camera's field of view and the pixel coordinates).
    pub width: u32,
    /// Image height.
    pub height: u32,
    /// Paths traced per pixel.
    pub samples_per_pixel: u32,
    /// The job's seed.
    pub seed: u32,
    /// Surface interactions per path.
    pub max_bounces: u32,
}

/// The render kernel.
pub struct Render;

fn range_error(field: &str, value: u32, max: u32) -> KernelError {
    KernelError::InvalidParam {
        field: field.to_owned(),
        reason: format!("must be between 1 and {max}, got {value}"),
    }
}

fn check_range(field: &str, value: u32, max: u32) -> Result<(), KernelError> {
    if value == 0 || value > max {
        return Err(range_error(field, value, max));
    }
    Ok(())
}

impl RenderUnit {
    fn pixels(&self) -> usize {
        // Checked units have at most MAX_TILE^2 pixels; an unchecked one saturates, so its
        // output length matches no real buffer.
        usize::try_from(u64::from(self.w) * u64::from(self.h)).unwrap_or(usize::MAX)
    }

    /// Checks a unit from the wire: volunteers render only what split could produce.
    fn check(&self, input: &[u8]) -> Result<(), KernelError> {
        if !input.is_empty() {
            return Err(KernelError::Shape {
                got: input.len(),
                expected: 0,
            });
        }
        check_range("unit.width", self.width, MAX_SIDE)?;
        check_range("unit.height", self.height, MAX_SIDE)?;
        check_range("unit.samples_per_pixel", self.samples_per_pixel, MAX_SPP)?;
        check_range("unit.max_bounces", self.max_bounces, MAX_BOUNCES)?;
        check_range("unit.w", self.w, MAX_TILE)?;
        check_range("unit.h", self.h, MAX_TILE)?;
        for (field, start, len, size) in [
            ("unit.x0", self.x0, self.w, self.width),
            ("unit.y0", self.y0, self.h, self.height),
        ] {
            if u64::from(start) + u64::from(len) > u64::from(size) {
                return Err(KernelError::InvalidParam {
                    field: field.to_owned(),
                    reason: format!(
                        "tile {start} .. {} reaches past the image's {size} pixels",
                        u64::from(start) + u64::from(len)
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The tiles of an image cut into squares of `side` (edge tiles smaller), row-major.
fn tiles(p: &RenderParams, side: u32) -> Vec<RenderUnit> {
    let mut units = Vec::new();
    for y0 in (0..p.height).step_by(side as usize) {
        for x0 in (0..p.width).step_by(side as usize) {
            units.push(RenderUnit {
                x0,
                y0,
                w: side.min(p.width - x0),
                h: side.min(p.height - y0),
                width: p.width,
                height: p.height,
                samples_per_pixel: p.samples_per_pixel,
                seed: p.seed,
                max_bounces: p.max_bounces,
            });
        }
    }
    units
}

/// Every tile side [`Render::split`] can choose.
fn tile_sides() -> impl Iterator<Item = u32> {
    (1..WORKGROUP).chain((WORKGROUP..=MAX_TILE).step_by(WORKGROUP as usize))
}

fn floats(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

impl KernelSpec for Render {
    type Params = RenderParams;
    type Unit = RenderUnit;
    const ID: &'static str = "render";
    const VERSION: u32 = 1;

    fn info() -> KernelInfo {
        let side = json!({"type": "integer", "minimum": 1, "maximum": MAX_SIDE});
        KernelInfo {
            id: Self::ID,
            version: Self::VERSION,
            description: "Path-traced image of a built-in Cornell-box scene (diffuse walls, a \
                          ceiling light, a box, mirror, glass and diffuse spheres), split into \
                          square tiles. Each sample's radiance is clamped to [0, 1] per \
                          channel before averaging.",
            params_schema: json!({
                "type": "object",
                "required": ["width", "height", "samples_per_pixel", "seed"],
                "additionalProperties": false,
                "properties": {
                    "width": side,
                    "height": side,
                    "samples_per_pixel": {"type": "integer", "minimum": 1, "maximum": MAX_SPP},
                    "seed": {"type": "integer", "minimum": 0, "maximum": u32::MAX},
                    "max_bounces": {
                        "type": "integer", "minimum": 1, "maximum": MAX_BOUNCES,
                        "default": DEFAULT_BOUNCES,
                    },
                },
            }),
            inputs: Vec::new(),
            output: "PNG, 8-bit sRGB RGB, width x height; units output linear RGB f32 \
                     little-endian, 3 floats per pixel, tile row-major",
            output_content_type: "image/png",
            comparison: "per pixel: every channel finite, in [0, 1] and within 1e-3 of the \
                         other result (f32 rounding of a path is ~1e-6); at most 8 pixels plus \
                         1% of the tile may differ by up to 4/samples_per_pixel + 1e-3, \
                         because a ray grazing an edge can take another path under another \
                         device's rounding, and one sample moves a pixel by at most \
                         1/samples_per_pixel (measured on lavapipe: 0.002% to 0.03% of pixels, \
                         at most 5 in a 16x16 tile, never more than 2 samples' worth)",
            spot_check: None,
        }
    }

    fn validate(p: &RenderParams) -> Result<(), KernelError> {
        check_range("width", p.width, MAX_SIDE)?;
        check_range("height", p.height, MAX_SIDE)?;
        check_range("samples_per_pixel", p.samples_per_pixel, MAX_SPP)?;
        check_range("max_bounces", p.max_bounces, MAX_BOUNCES)
    }

    fn pack_input(_p: &RenderParams, inputs: &NamedInputs) -> Result<Vec<u8>, KernelError> {
        crate::catalog::no_inputs(
            inputs,
            "the render kernel takes no inputs; its scene is built in",
        )
    }

    /// Square tiles, row-major, of the largest side whose pixels cost at most
    /// `target_flops`: a multiple of 8 (whole workgroups) from 8 up to [`MAX_TILE`], or 1 to
    /// 7 when 8x8 pixels already cost more than the target, so that a unit at high sample
    /// counts still fits its lease.
    fn split(p: &RenderParams, target_flops: u64) -> Vec<RenderUnit> {
        let per_pixel = u64::from(p.samples_per_pixel) * flops_per_sample(p.max_bounces);
        let side = (target_flops / per_pixel.max(1)).isqrt();
        let side = u32::try_from(side).unwrap_or(MAX_TILE).clamp(1, MAX_TILE);
        let side = if side >= WORKGROUP {
            side / WORKGROUP * WORKGROUP
        } else {
            side
        };
        tiles(p, side)
    }

    fn unit_input(
        p: &RenderParams,
        job_input: &[u8],
        u: &RenderUnit,
    ) -> Result<Vec<u8>, KernelError> {
        if !job_input.is_empty() {
            return Err(KernelError::Shape {
                got: job_input.len(),
                expected: 0,
            });
        }
        let job = (
            p.width,
            p.height,
            p.samples_per_pixel,
            p.seed,
            p.max_bounces,
        );
        let unit = (
            u.width,
            u.height,
            u.samples_per_pixel,
            u.seed,
            u.max_bounces,
        );
        if job != unit {
            return Err(KernelError::InvalidParam {
                field: "unit".to_owned(),
                reason: "image size, samples, seed or bounces differ from the job's".to_owned(),
            });
        }
        u.check(job_input)?;
        Ok(Vec::new())
    }

    fn output_len(u: &RenderUnit) -> usize {
        u.pixels().saturating_mul(12)
    }

    fn merge(p: &RenderParams, outputs: &[Vec<u8>]) -> Result<Vec<u8>, KernelError> {
        Self::validate(p)?;
        let pixels = p.width as usize * p.height as usize;
        let total: usize = outputs.iter().map(Vec::len).sum();
        if total != pixels * 12 {
            return Err(KernelError::Shape {
                got: total,
                expected: pixels * 12,
            });
        }
        // Merge is not told the target the job was split with, but the first tile's size
        // gives the tile side: its pixel count min(side, width) * min(side, height) grows
        // strictly with the side until the tile covers the image, so the first side with
        // that count is the one split chose (or one that tiles the image the same way).
        let first = outputs.first().map_or(0, Vec::len);
        let side = tile_sides().find(|&side| {
            let (w, h) = (side.min(p.width) as usize, side.min(p.height) as usize);
            w * h * 12 == first
        });
        let units = side.map(|side| tiles(p, side)).filter(|units| {
            units.len() == outputs.len()
                && units
                    .iter()
                    .zip(outputs)
                    .all(|(u, o)| Self::output_len(u) == o.len())
        });
        let Some(units) = units else {
            return Err(KernelError::InvalidInput {
                field: "outputs".to_owned(),
                reason: format!(
                    "{} unit outputs do not match any tiling of a {}x{} image",
                    outputs.len(),
                    p.width,
                    p.height
                ),
            });
        };
        let mut image = vec![0f32; pixels * 3];
        for (u, output) in units.iter().zip(outputs) {
            let row = 3 * u.w as usize;
            for (ty, src) in output.chunks_exact(4 * row).enumerate() {
                let start = 3 * ((u.y0 as usize + ty) * p.width as usize + u.x0 as usize);
                for (dst, v) in image[start..start + row].iter_mut().zip(floats(src)) {
                    *dst = v;
                }
            }
        }
        encode_png(p.width, p.height, &image)
    }

    fn run_cpu(u: &RenderUnit, input: &[u8]) -> Result<Vec<u8>, KernelError> {
        u.check(input)?;
        let mut out = Vec::with_capacity(Self::output_len(u));
        for y in u.y0..u.y0 + u.h {
            for x in u.x0..u.x0 + u.w {
                for c in render_pixel(u, x, y) {
                    out.extend_from_slice(&c.to_le_bytes());
                }
            }
        }
        Ok(out)
    }

    fn gpu_dispatch(u: &RenderUnit, input: &[u8]) -> Result<GpuDispatch, KernelError> {
        u.check(input)?;
        // Twelve u32: the nine fields in `shader.wgsl`'s order and three of padding, a
        // multiple of 16 bytes as WebGPU's uniform layout wants.
        let uniforms = [
            u.x0,
            u.y0,
            u.w,
            u.h,
            u.width,
            u.height,
            u.samples_per_pixel,
            u.seed,
            u.max_bounces,
            0,
            0,
            0,
        ]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
        Ok(GpuDispatch {
            label: "render",
            shader: include_str!("shader.wgsl"),
            uniforms,
            inputs: Vec::new(),
            output_bytes: Self::output_len(u) as u64,
            workgroups: [u.w.div_ceil(WORKGROUP), u.h.div_ceil(WORKGROUP), 1],
        })
    }

    fn unit_flops(u: &RenderUnit) -> u64 {
        // Saturating: units from the wire are not checked yet.
        (u64::from(u.w) * u64::from(u.h))
            .saturating_mul(u64::from(u.samples_per_pixel))
            .saturating_mul(flops_per_sample(u.max_bounces))
    }

    /// 128-512 pixels a side, 4-64 samples per pixel, a fresh noise seed.
    fn probe(seed: u64) -> Option<(RenderParams, NamedInputs)> {
        let mut rng = crate::ProbeRng::new(seed);
        Some((
            RenderParams {
                width: rng.pick(&[128, 256, 512]),
                height: rng.pick(&[128, 256, 512]),
                samples_per_pixel: rng.pick(&[4, 16, 64]),
                seed: rng.next_u64() as u32,
                max_bounces: DEFAULT_BOUNCES,
            },
            NamedInputs::new(),
        ))
    }

    fn outputs_agree(u: &RenderUnit, a: &[u8], b: &[u8]) -> bool {
        outputs_agree(u, a, b)
    }
}

/// Whether two outputs of the same unit agree.
///
/// Both must hold `w * h` pixels of finite channels in [0, 1] (the shader clamps every
/// sample to [0, 1], so an average outside it is not an honest result). A path that takes
/// the same route on both devices differs only by f32 rounding, about 1e-6 relative after
/// a few bounces, so channels must match within [`TOLERANCE`].
///
/// But a ray that grazes an edge (a rectangle's border, a sphere's silhouette, two walls
/// meeting in a corner, the glass's reflect-or-refract threshold) can go another way when
/// the devices round differently, and from then on the sample is unrelated. One such
/// sample moves its pixel by at most 1/spp, since samples are clamped to [0, 1]. So up to
/// `OUTLIER_BASE + w * h * OUTLIERS_PER_10K / 10 000` pixels may differ by up to
/// `OUTLIER_SAMPLES / spp + TOLERANCE` per channel.
///
/// Measured on lavapipe against this CPU reference (`tests/render_gpu.rs`,
/// `measure_divergence_and_speed`), 256x256 images, 1 to 1024 samples: 0.002% to 0.03% of
/// pixels differ by more than 1e-3, never by more than 2 samples' worth. They are not
/// spread evenly: most lie where the mirror sphere reflects the light's border, whose
/// curvature magnifies rounding, so one tile can hold several. With the relay's default
/// 64 MFLOP units (8x8 to 72x72 tiles) the most seen in one tile was 5 of 256 pixels at 64
/// samples (and 11 of 4096 in a 64x64 tile), which a flat 0.5% allowance rejected in 1 to
/// 2 of 256 honest tiles; the base of 8 pixels and 1% give those a margin of 2 to 4, and
/// 4 samples' worth twice the worst seen. A forged result must still match the rest of
/// the tile: an 8x8 block scaled in a 32x32 or 64x64 tile, or another seed or tile, is
/// over the allowance; what slips through is at most `OUTLIER_SAMPLES / spp` on a few
/// pixels, invisible at the sample counts where it could matter.
pub fn outputs_agree(u: &RenderUnit, a: &[u8], b: &[u8]) -> bool {
    let expected = Render::output_len(u);
    if a.len() != expected || b.len() != expected {
        return false;
    }
    let allowance = OUTLIER_BASE + u.pixels() * OUTLIERS_PER_10K / 10_000;
    let wide = OUTLIER_SAMPLES / u.samples_per_pixel.max(1) as f32 + TOLERANCE;
    let mut outliers = 0;
    for (pa, pb) in a.chunks_exact(12).zip(b.chunks_exact(12)) {
        let mut outlier = false;
        for (x, y) in floats(pa).zip(floats(pb)) {
            // Written so that NaN fails.
            if !((0.0..=1.0).contains(&x) && (0.0..=1.0).contains(&y)) {
                return false;
            }
            let diff = (x - y).abs();
            if diff > wide {
                return false;
            }
            outlier |= diff > TOLERANCE;
        }
        if outlier {
            outliers += 1;
            if outliers > allowance {
                return false;
            }
        }
    }
    true
}

/// The standard sRGB transfer curve (IEC 61966-2-1) from linear [0, 1] to an 8-bit level:
/// `12.92 v` up to 0.0031308, `1.055 v^(1/2.4) - 0.055` above, rounded to the nearest of
/// 256 levels. Anything that is not a number in [0, 1] is clamped (NaN to 0).
pub fn srgb8(v: f32) -> u8 {
    let v = if v > 0.0 { v.min(1.0) } else { 0.0 };
    let s = if v <= 0.003_130_8 {
        12.92 * v
    } else {
        1.055 * v.powf(1.0 / 2.4) - 0.055
    };
    // In [0, 255.5): the cast truncates to the nearest level.
    (s * 255.0 + 0.5) as u8
}

/// Encodes a linear RGB f32 image (3 floats per pixel, row-major) as an 8-bit sRGB RGB
/// PNG with an sRGB chunk.
#[cfg(not(feature = "png"))]
pub fn encode_png(_width: u32, _height: u32, _linear: &[f32]) -> Result<Vec<u8>, KernelError> {
    Err(KernelError::InvalidInput {
        field: "outputs".to_owned(),
        reason: "this build of the kernels cannot encode PNGs (feature `png`); the relay can"
            .to_owned(),
    })
}

/// Encodes a linear RGB f32 image (3 floats per pixel, row-major) as an 8-bit sRGB RGB
/// PNG with an sRGB chunk.
#[cfg(feature = "png")]
pub fn encode_png(width: u32, height: u32, linear: &[f32]) -> Result<Vec<u8>, KernelError> {
    let encode_error = |e: png::EncodingError| KernelError::InvalidInput {
        field: "outputs".to_owned(),
        reason: format!("PNG encoding failed: {e}"),
    };
    let rgb: Vec<u8> = linear.iter().map(|&v| srgb8(v)).collect();
    let mut png_bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut png_bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_source_srgb(png::SrgbRenderingIntent::Perceptual);
    let mut writer = encoder.write_header().map_err(encode_error)?;
    writer.write_image_data(&rgb).map_err(encode_error)?;
    writer.finish().map_err(encode_error)?;
    Ok(png_bytes)
}

// ---------------------------------------------------------------------------------------
// The CPU reference. Every function mirrors the one of the same name in `shader.wgsl`,
// operation for operation, so that the two round alike wherever the devices allow.
// ---------------------------------------------------------------------------------------

/// A 3-vector of f32, with just the operations the tracer needs.
#[derive(Clone, Copy, Debug, PartialEq)]
struct V3 {
    x: f32,
    y: f32,
    z: f32,
}

const fn v3(x: f32, y: f32, z: f32) -> V3 {
    V3 { x, y, z }
}

impl V3 {
    fn dot(self, o: V3) -> f32 {
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
struct Rect {
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
const RECTS: [Rect; 11] = [
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
struct Sphere {
    center: V3,
    radius: f32,
    mat: u32,
}

/// Mirror sphere on the box, glass sphere in front, blue sphere at the right.
const SPHERES: [Sphere; 3] = [
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
fn circle(bits: u32) -> (f32, f32) {
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
fn cosine_dir(n: V3, bits_z: u32, bits_phi: u32) -> V3 {
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
fn render_pixel(u: &RenderUnit, x: u32, y: u32) -> [f32; 3] {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(width: u32, height: u32, spp: u32, seed: u32, bounces: u32) -> RenderParams {
        RenderParams {
            width,
            height,
            samples_per_pixel: spp,
            seed,
            max_bounces: bounces,
        }
    }

    /// The whole image as one unit.
    fn whole(p: &RenderParams) -> RenderUnit {
        tiles(p, MAX_TILE)[0]
    }

    fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        let mut reader = decoder.read_info().expect("a PNG header");
        let mut buf = vec![0; reader.output_buffer_size().expect("small image")];
        let info = reader.next_frame(&mut buf).expect("one frame");
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn to_floats(bytes: &[u8]) -> Vec<f32> {
        floats(bytes).collect()
    }

    fn to_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn rejects_bad_params_and_inputs_with_precise_messages() {
        let cases = [
            (
                params(0, 8, 1, 0, 5),
                "invalid parameter `width`: must be between 1 and 4096, got 0",
            ),
            (
                params(8, 4097, 1, 0, 5),
                "invalid parameter `height`: must be between 1 and 4096, got 4097",
            ),
            (
                params(8, 8, 5000, 0, 5),
                "invalid parameter `samples_per_pixel`: must be between 1 and 4096, got 5000",
            ),
            (
                params(8, 8, 1, 0, 0),
                "invalid parameter `max_bounces`: must be between 1 and 15, got 0",
            ),
            (
                params(8, 8, 1, 0, 16),
                "invalid parameter `max_bounces`: must be between 1 and 15, got 16",
            ),
        ];
        for (p, message) in cases {
            let err = Render::validate(&p).expect_err(message);
            assert_eq!(err.to_string(), message);
        }
        assert!(Render::validate(&params(4096, 4096, 4096, u32::MAX, 15)).is_ok());

        let p: RenderParams = serde_json::from_value(
            json!({"width": 4, "height": 3, "samples_per_pixel": 2, "seed": 9}),
        )
        .expect("max_bounces is optional");
        assert_eq!(p.max_bounces, DEFAULT_BOUNCES);
        let err = serde_json::from_value::<RenderParams>(
            json!({"width": 4, "height": 3, "samples_per_pixel": 2, "seed": 9, "fov": 1}),
        )
        .expect_err("unknown field");
        assert!(err.to_string().contains("unknown field `fov`"), "{err}");

        let mut inputs = NamedInputs::new();
        assert_eq!(Render::pack_input(&p, &inputs), Ok(Vec::new()));
        inputs.insert("scene".into(), vec![1, 2, 3]);
        let err = Render::pack_input(&p, &inputs).expect_err("no inputs");
        assert_eq!(
            err.to_string(),
            "invalid input `scene`: the render kernel takes no inputs; its scene is built in"
        );
    }

    #[test]
    fn rejects_units_that_split_cannot_produce() {
        let p = params(40, 30, 1, 0, 2);
        let good = tiles(&p, 16)[0];
        assert!(Render::run_cpu(&good, &[]).is_ok());
        let err = Render::run_cpu(&good, &[0]).expect_err("input");
        assert_eq!(
            err,
            KernelError::Shape {
                got: 1,
                expected: 0
            }
        );
        let past = RenderUnit { x0: 30, ..good };
        let err = Render::gpu_dispatch(&past, &[]).expect_err("past the edge");
        assert_eq!(
            err.to_string(),
            "invalid parameter `unit.x0`: tile 30 .. 46 reaches past the image's 40 pixels"
        );
        let big = RenderUnit { w: 600, ..good };
        let err = Render::run_cpu(&big, &[]).expect_err("tile too big");
        assert_eq!(
            err.to_string(),
            "invalid parameter `unit.w`: must be between 1 and 512, got 600"
        );
        let spp = RenderUnit {
            samples_per_pixel: 0,
            ..good
        };
        assert!(Render::run_cpu(&spp, &[]).is_err());
        let other = RenderUnit { seed: 1, ..good };
        let err = Render::unit_input(&p, &[], &other).expect_err("other job");
        assert!(
            err.to_string().starts_with("invalid parameter `unit`"),
            "{err}"
        );
        assert_eq!(Render::unit_input(&p, &[], &good), Ok(Vec::new()));
    }

    /// A synthetic linear image whose every channel says where it is.
    fn synthetic(p: &RenderParams, u: &RenderUnit) -> Vec<f32> {
        let mut v = Vec::new();
        for y in u.y0..u.y0 + u.h {
            for x in u.x0..u.x0 + u.w {
                for c in 0..3 {
                    v.push(((x * 3 + y * 5 + c * 7 + p.seed) % 101) as f32 / 100.0);
                }
            }
        }
        v
    }

    proptest! {
        #[test]
        fn split_covers_the_image_once_and_merge_puts_tiles_back(
            width in 1u32..300, height in 1u32..300, spp in 1u32..64, bounces in 1u32..=MAX_BOUNCES,
            seed in 0u32..1000, target_log in 0u32..42, target_frac in 0u64..1000,
        ) {
            // Log-uniform targets, so that every tile side gets its share.
            let target = (1u64 << target_log) + (1u64 << target_log) * target_frac / 1000;
            let p = params(width, height, spp, seed, bounces);
            let units = Render::split(&p, target);
            let mut covered = vec![0u8; (width * height) as usize];
            for u in &units {
                prop_assert!(u.check(&[]).is_ok(), "{:?}", u);
                prop_assert_eq!((u.width, u.height, u.samples_per_pixel, u.seed, u.max_bounces),
                    (width, height, spp, seed, bounces));
                for y in u.y0..u.y0 + u.h {
                    for x in u.x0..u.x0 + u.w {
                        covered[(y * width + x) as usize] += 1;
                    }
                }
            }
            prop_assert!(covered.iter().all(|&c| c == 1));
            // Tiles are no larger than the target allows (but at least one pixel).
            let first = units[0];
            if first.w.max(first.h) > 1 {
                prop_assert!(Render::unit_flops(&first) <= target);
            }

            let outputs: Vec<Vec<u8>> = units.iter().map(|u| to_bytes(&synthetic(&p, u))).collect();
            let merged = Render::merge(&p, &outputs).expect("merge");
            let expected = encode_png(width, height, &synthetic(&p, &whole(&p))).expect("encode");
            prop_assert_eq!(decode(&merged), decode(&expected));
        }
    }

    #[test]
    fn splits_into_square_tiles_by_cost() {
        let p = params(256, 200, 4, 0, 5);
        let per_pixel = 4 * flops_per_sample(5);
        let units = Render::split(&p, 64 * 64 * per_pixel);
        assert_eq!(units.len(), 4 * 4);
        assert_eq!((units[0].w, units[0].h), (64, 64));
        assert_eq!(
            (units[15].x0, units[15].y0, units[15].w, units[15].h),
            (192, 192, 64, 8)
        );
        assert_eq!(Render::unit_flops(&units[0]), 64 * 64 * per_pixel);
        // Just under: the next multiple of 8 down.
        assert_eq!(Render::split(&p, 64 * 64 * per_pixel - 1)[0].w, 56);
        // Small targets: tiles under a workgroup, down to single pixels.
        assert_eq!(Render::split(&p, 7 * 7 * per_pixel)[0].w, 7);
        assert_eq!(Render::split(&p, 1).len(), 256 * 200);
        // Huge targets: the largest tile.
        assert_eq!(Render::split(&p, u64::MAX).len(), 1);
        let big = params(4096, 4096, 1, 0, 1);
        assert_eq!(Render::split(&big, u64::MAX).len(), 64);
    }

    #[test]
    fn merge_rejects_outputs_that_do_not_tile_the_image() {
        let p = params(20, 10, 1, 0, 1);
        let err = Render::merge(&p, &[vec![0; 20 * 10 * 12 - 4]]).expect_err("short");
        assert_eq!(
            err,
            KernelError::Shape {
                got: 20 * 10 * 12 - 4,
                expected: 20 * 10 * 12
            }
        );
        // Right total, wrong pieces: 200 pixels as 100 + 100 is no square tiling of 20x10.
        let err = Render::merge(&p, &[vec![0; 1200], vec![0; 1200]]).expect_err("halves");
        assert_eq!(
            err.to_string(),
            "invalid input `outputs`: 2 unit outputs do not match any tiling of a 20x10 image"
        );
    }

    #[test]
    fn split_then_merge_equals_rendering_the_whole_image() {
        let p = params(37, 23, 2, 7, 3);
        let units = Render::split(&p, 16 * 16 * 2 * flops_per_sample(3));
        assert_eq!(units.len(), 3 * 2);
        let outputs: Vec<Vec<u8>> = units
            .iter()
            .map(|u| Render::run_cpu(u, &[]).expect("valid unit"))
            .collect();
        let merged = Render::merge(&p, &outputs).expect("merge");
        let image = Render::run_cpu(&whole(&p), &[]).expect("whole image");
        let expected = encode_png(37, 23, &to_floats(&image)).expect("encode");
        let (w, h, pixels) = decode(&merged);
        assert_eq!((w, h), (37, 23));
        assert_eq!(pixels.len(), 37 * 23 * 3);
        assert_eq!((w, h, pixels), decode(&expected));
    }

    #[test]
    fn the_cpu_render_shows_the_scene() {
        let p = params(32, 32, 16, 1, DEFAULT_BOUNCES);
        let image = to_floats(&Render::run_cpu(&whole(&p), &[]).expect("valid"));
        assert!(image.iter().all(|v| (0.0..=1.0).contains(v)));
        let px = |x: usize, y: usize| {
            let i = 3 * (y * 32 + x);
            [image[i], image[i + 1], image[i + 2]]
        };
        // The light, seen directly near the top centre, is saturated white.
        assert_eq!(px(16, 4), [1.0, 1.0, 1.0]);
        // Left wall red, right wall green, both lit.
        let [r, g, b] = px(1, 16);
        assert!(
            r > 0.1 && r > 3.0 * g && r > 3.0 * b,
            "left wall {r} {g} {b}"
        );
        let [r, g, b] = px(30, 16);
        assert!(
            g > 0.1 && g > 2.0 * r && g > 2.0 * b,
            "right wall {r} {g} {b}"
        );
        // Neither black nor washed out (0.09 linear is about 0.33 in sRGB), and not flat.
        let mean = image.iter().sum::<f32>() / image.len() as f32;
        assert!(mean > 0.05 && mean < 0.3, "mean {mean}");
        let spread = image.iter().map(|v| (v - mean).abs()).sum::<f32>() / image.len() as f32;
        assert!(spread > 0.05, "mean absolute deviation {spread}");
        // The blue sphere is blue.
        let [r, g, b] = px(23, 24);
        assert!(b > r && b > g, "blue sphere {r} {g} {b}");
    }

    #[test]
    fn sine_and_cosine_polynomials_are_accurate() {
        for i in 0..4096u32 {
            let bits = i.wrapping_mul(0x9E37_79B9);
            let (c, s) = circle(bits);
            let angle = ((bits >> 30) as f64 + f64::from(bits & 0x00FF_FFFF) / 16_777_216.0)
                * std::f64::consts::FRAC_PI_2;
            assert!((f64::from(c) - angle.cos()).abs() < 1e-6, "cos at {angle}");
            assert!((f64::from(s) - angle.sin()).abs() < 1e-6, "sin at {angle}");
        }
    }

    #[test]
    fn cosine_directions_are_unit_and_in_the_hemisphere() {
        let n = v3(0.0, 1.0, 0.0);
        let mut mean_cos = 0.0;
        let count = 20_000;
        for i in 0..count {
            let d = cosine_dir(n, pcg(i), pcg(i ^ 0xABCD_0000));
            assert!((d.dot(d) - 1.0).abs() < 1e-5);
            assert!(d.y >= 0.0);
            mean_cos += f64::from(d.y);
        }
        // E[cos] under a cosine-weighted distribution is 2/3.
        mean_cos /= f64::from(count);
        assert!((mean_cos - 2.0 / 3.0).abs() < 0.01, "{mean_cos}");
    }

    fn tile_of(p: &RenderParams, x0: u32, y0: u32, side: u32) -> RenderUnit {
        RenderUnit {
            x0,
            y0,
            w: side,
            h: side,
            ..whole(p)
        }
    }

    /// An 8x8 block of a tile's pixels, starting at (8, 8), scaled (and capped at 1).
    fn scale_block(unit: &RenderUnit, honest: &[u8], factor: f32) -> Vec<u8> {
        let mut values = to_floats(honest);
        for y in 8..16 {
            for x in 8..16 {
                for c in 0..3 {
                    let v = &mut values[3 * (y * unit.w as usize + x) + c];
                    *v = (*v * factor).min(1.0);
                }
            }
        }
        to_bytes(&values)
    }

    #[test]
    fn verifier_accepts_identical_and_rejects_tampered_outputs() {
        let p = params(64, 64, 8, 3, 3);
        let unit = tile_of(&p, 16, 16, 32);
        let honest = Render::run_cpu(&unit, &[]).expect("valid");
        assert!(outputs_agree(&unit, &honest, &honest));
        assert!(Render::outputs_agree(&unit, &honest, &honest));
        assert!(!outputs_agree(&unit, &honest, &honest[12..]));

        // One exponent bit flipped.
        let mut flipped = honest.clone();
        flipped[4 * 100 + 3] ^= 0x40;
        assert!(!outputs_agree(&unit, &honest, &flipped));
        assert!(!outputs_agree(&unit, &flipped, &honest));

        // One channel replaced by 1 - v, where that moves it by more than 4 samples' worth
        // (4/8 + 1e-3).
        let mut values = to_floats(&honest);
        let i = values
            .iter()
            .position(|v| (1.0 - 2.0 * v).abs() > 0.6)
            .expect("a dark or bright channel");
        values[i] = 1.0 - values[i];
        assert!(!outputs_agree(&unit, &honest, &to_bytes(&values)));

        // An 8x8 block scaled by 1.5 or 1.05: within the per-pixel bound, but 64 pixels
        // are over the allowance of 8 + 10 for 32x32.
        for factor in [1.5f32, 1.05] {
            let scaled = scale_block(&unit, &honest, factor);
            assert!(!outputs_agree(&unit, &honest, &scaled), "x{factor}");
        }
        // And of 8 + 40 for 64x64.
        let big = tile_of(&params(64, 64, 4, 3, 2), 0, 0, 64);
        let honest_big = Render::run_cpu(&big, &[]).expect("valid");
        assert!(outputs_agree(&big, &honest_big, &honest_big));
        let scaled = scale_block(&big, &honest_big, 1.5);
        assert!(!outputs_agree(&big, &honest_big, &scaled));

        // Another seed, another tile.
        let other_seed = RenderUnit { seed: 4, ..unit };
        let other = Render::run_cpu(&other_seed, &[]).expect("valid");
        assert!(!outputs_agree(&unit, &honest, &other));
        let shifted = RenderUnit { x0: 24, ..unit };
        let other = Render::run_cpu(&shifted, &[]).expect("valid");
        assert!(!outputs_agree(&unit, &honest, &other));

        // NaN is never accepted, even against itself.
        let mut nan = honest.clone();
        nan[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(!outputs_agree(&unit, &nan, &nan));
    }

    #[test]
    fn verifier_allows_exactly_the_outlier_allowance() {
        let p = params(64, 64, 16, 3, 2);
        let unit = tile_of(&p, 0, 0, 64);
        let honest = to_floats(&Render::run_cpu(&unit, &[]).expect("valid"));
        let allowance = OUTLIER_BASE + 64 * 64 * OUTLIERS_PER_10K / 10_000;
        assert_eq!(allowance, 48);
        // Diverged pixels: some samples' worth (of 16) away, in range.
        let nudge = |count: usize, by: f32| {
            let mut v = honest.clone();
            for pixel in 0..count {
                let c = &mut v[3 * pixel * 7];
                *c = if *c > 0.5 { *c - by } else { *c + by };
            }
            to_bytes(&v)
        };
        let honest = to_bytes(&honest);
        assert!(outputs_agree(&unit, &honest, &nudge(allowance, 1.0 / 16.0)));
        assert!(!outputs_agree(
            &unit,
            &honest,
            &nudge(allowance + 1, 1.0 / 16.0)
        ));
        // Four samples' worth is the most one pixel may move; five is too far.
        assert!(outputs_agree(&unit, &honest, &nudge(1, 4.0 / 16.0)));
        assert!(!outputs_agree(&unit, &honest, &nudge(1, 5.0 / 16.0)));
        // Rounding-sized differences anywhere are fine.
        let mut all = to_floats(&honest);
        for v in &mut all {
            *v = if *v > 0.5 { *v - 5e-4 } else { *v + 5e-4 };
        }
        assert!(outputs_agree(&unit, &honest, &to_bytes(&all)));
        // A tile of one pixel still has the base allowance.
        let tiny = tile_of(&p, 5, 5, 1);
        let one = Render::run_cpu(&tiny, &[]).expect("valid");
        let mut moved = to_floats(&one);
        moved[0] = if moved[0] > 0.5 {
            moved[0] - 0.2
        } else {
            moved[0] + 0.2
        };
        assert!(outputs_agree(&tiny, &one, &to_bytes(&moved)));
    }

    #[test]
    fn srgb_curve_matches_known_values() {
        assert_eq!(srgb8(0.0), 0);
        assert_eq!(srgb8(1.0), 255);
        assert_eq!(srgb8(0.5), 188);
        assert_eq!(srgb8(0.002), 7);
        assert_eq!(srgb8(0.18), 118);
        assert_eq!(srgb8(f32::NAN), 0);
        assert_eq!(srgb8(7.0), 255);
        assert_eq!(srgb8(-1.0), 0);
    }

    #[test]
    fn info_describes_the_kernel() {
        let info = Render::info();
        assert_eq!(info.id, "render");
        assert_eq!(info.output_content_type, "image/png");
        assert!(info.inputs.is_empty());
        assert!(info.spot_check.is_none());
        assert_eq!(
            info.params_schema["properties"]["max_bounces"]["default"],
            5
        );
        assert_eq!(
            Render::spot_check(&tile_of(&params(8, 8, 1, 0, 1), 0, 0, 8), &[], &[], 0),
            None
        );
    }
}
