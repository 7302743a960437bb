//! Where a render job's units sit in its image: the `render` kernel cuts the image into
//! square tiles, row-major, of a side it picks (1 to 7, then multiples of 8 up to 512).
//! From the unit count the console finds a side that gives that many tiles and draws the
//! job's progress as a tile map filling in while volunteers compute.

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

#[cfg(test)]
mod tests {
    use super::layout;

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
