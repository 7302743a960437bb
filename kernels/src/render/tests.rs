use super::reference::*;
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

    let p: RenderParams =
        serde_json::from_value(json!({"width": 4, "height": 3, "samples_per_pixel": 2, "seed": 9}))
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
