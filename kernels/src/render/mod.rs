//! `render`: a Monte Carlo path tracer of a built-in Cornell-box scene, split into tiles.
//!
//! The scene (see `RECTS`, `SPHERES` and `MATERIALS` in `reference.rs`) is a unit cube
//! room open at the front: white floor, ceiling and back wall, a red left and a green
//! right wall, a square ceiling light, a tall white box with a mirror sphere on top, a
//! glass sphere and a blue sphere on the floor. Only analytic intersections: axis-aligned rectangles and spheres.
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
use crate::{KernelError, KernelSpec, UnitSpec};
use serde::{Deserialize, Serialize};
use serde_json::json;

mod reference;
#[cfg(test)]
mod tests;

pub use reference::pcg;
use reference::{render_pixel, RECTS, SPHERES};

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

/// `schema` with a `default`.
fn with_default(schema: &serde_json::Value, default: u32) -> serde_json::Value {
    let mut schema = schema.clone();
    schema["default"] = default.into();
    schema
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

impl UnitSpec for Render {
    type Unit = RenderUnit;
    const ID: &'static str = "render";

    fn output_len(u: &RenderUnit) -> usize {
        u.pixels().saturating_mul(12)
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
            shader: crate::shader!("render"),
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
}

impl KernelSpec for Render {
    type Params = RenderParams;
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
                    // Defaults the console's form starts from: a small image that shows the
                    // scene, in seconds on a few volunteers.
                    "width": with_default(&side, 320),
                    "height": with_default(&side, 240),
                    "samples_per_pixel": {
                        "type": "integer", "minimum": 1, "maximum": MAX_SPP, "default": 16,
                    },
                    "seed": {"type": "integer", "minimum": 0, "maximum": u32::MAX, "default": 1},
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
