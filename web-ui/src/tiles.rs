//! Where a render job's units sit in its image: the `render` kernel cuts the image into
//! square tiles, row-major, of a side it picks (1 to 7, then multiples of 8 up to 512).
//! From the unit count the console finds a side that gives that many tiles and draws the
//! job's progress as a tile map filling in while volunteers compute, each settled tile's
//! own pixels replacing its square as they arrive.

use starling_api::UnitState;

/// Tile sides the kernel may choose, smallest first.
fn sides() -> impl Iterator<Item = u32> {
    (1..8).chain((8..=512).step_by(8))
}

/// The tiles `(x, y, w, h)` of a `width` x `height` image cut into `units` row-major
/// square tiles, or None when no side gives that count.
pub fn layout(width: u32, height: u32, units: usize) -> Option<Vec<(u32, u32, u32, u32)>> {
    if width == 0 || height == 0 {
        return None;
    }
    let side =
        sides().find(|&s| (width.div_ceil(s) as usize) * (height.div_ceil(s) as usize) == units)?;
    let mut tiles = Vec::with_capacity(units);
    for y in (0..height).step_by(side as usize) {
        for x in (0..width).step_by(side as usize) {
            tiles.push((x, y, side.min(width - x), side.min(height - y)));
        }
    }
    Some(tiles)
}

/// The units settled in `states` whose pixels are not `drawn` yet, as runs of
/// consecutive indices `start..end`: units settle roughly in order, so a poll asks for a
/// few ranges, never for a tile it already drew.
pub fn ranges_to_fetch(states: &[UnitState], drawn: &[bool]) -> Vec<(usize, usize)> {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for (i, state) in states.iter().enumerate() {
        if *state != UnitState::Done || drawn.get(i).copied().unwrap_or(false) {
            continue;
        }
        match ranges.last_mut() {
            Some((_, end)) if *end == i => *end = i + 1,
            _ => ranges.push((i, i + 1)),
        }
    }
    ranges
}

/// A render tile's output (linear RGB as f32 LE, row-major) as the RGBA bytes of a
/// `w` x `h` canvas image, through the same sRGB curve as the relay's PNG, so the drawn
/// picture ends equal to the result; None when the output is not that tile's size.
pub fn tile_rgba(output: &[u8], w: u32, h: u32) -> Option<Vec<u8>> {
    let pixels = (w as usize).checked_mul(h as usize)?;
    if output.len() != pixels.checked_mul(12)? {
        return None;
    }
    let mut rgba = Vec::with_capacity(pixels * 4);
    for pixel in output.chunks_exact(12) {
        for channel in pixel.chunks_exact(4) {
            let v = f32::from_le_bytes([channel[0], channel[1], channel[2], channel[3]]);
            rgba.push(starling_kernels::render::srgb8(v));
        }
        rgba.push(255);
    }
    Some(rgba)
}

#[cfg(test)]
mod tests {
    use super::{layout, ranges_to_fetch, tile_rgba};
    use starling_api::UnitState::{Done, Leased, Queued};

    #[test]
    fn fetches_only_settled_tiles_not_drawn_in_runs() {
        let states = [Done, Done, Leased, Done, Done, Done, Queued, Done];
        let drawn = [true, false, false, false, true, false, false, false];
        assert_eq!(
            ranges_to_fetch(&states, &drawn),
            vec![(1, 2), (3, 4), (5, 6), (7, 8)]
        );
        assert_eq!(ranges_to_fetch(&states, &[true; 8]), vec![]);
        assert_eq!(ranges_to_fetch(&states[..2], &[]), vec![(0, 2)]);
    }

    #[test]
    fn a_tile_becomes_srgb_pixels_or_nothing_when_its_size_is_wrong() {
        let floats: Vec<u8> = [0.0f32, 1.0, 0.5, 2.0, -1.0, f32::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            tile_rgba(&floats, 2, 1),
            Some(vec![0, 255, 188, 255, 255, 0, 0, 255])
        );
        assert_eq!(tile_rgba(&floats, 1, 1), None);
        assert_eq!(tile_rgba(&floats, u32::MAX, u32::MAX), None);
    }

    #[test]
    fn finds_the_tiling_for_a_unit_count() {
        // 64x48 in 6-pixel tiles: 11 columns (the last 4 wide) by 8 rows.
        let tiles = layout(64, 48, 88).expect("a side gives 88 tiles");
        assert_eq!(tiles.len(), 88);
        assert_eq!(tiles[0], (0, 0, 6, 6));
        assert_eq!(tiles[10], (60, 0, 4, 6));
        assert_eq!(tiles[11], (0, 6, 6, 6));
        assert_eq!(layout(64, 48, 1), Some(vec![(0, 0, 64, 48)]));
        assert_eq!(layout(64, 48, 0), None);
        assert_eq!(layout(0, 48, 1), None);
    }
}
