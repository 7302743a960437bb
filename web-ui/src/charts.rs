//! Small line charts drawn by hand as inline SVG (no chart library in the wasm): a
//! fixed box, so a chart filling in moves nothing else on the page.

#[cfg(target_arch = "wasm32")]
use leptos::prelude::*;

/// The chart's drawing box; the SVG scales it to the width it is given.
const W: f64 = 300.0;
const H: f64 = 60.0;

/// The polyline's points for `values` (oldest first) spread over `slots` positions,
/// scaled so the largest reaches near the top. Empty for no values; a lone value is a
/// short flat stroke (one point alone would draw nothing).
pub fn points(values: &[f64], slots: usize) -> String {
    if let [only] = values {
        return points(&[*only, *only], slots);
    }
    let max = values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let step = W / slots.saturating_sub(1).max(1) as f64;
    // Right-aligned: the newest value always sits at the right edge.
    let offset = slots.saturating_sub(values.len());
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
            format!(
                "{:.1},{:.1}",
                (offset + i) as f64 * step,
                H - 4.0 - v / max * (H - 8.0)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A line of `values` over `slots` positions, labelled for screen readers by `label`
/// (what it shows and over what time) with `caption` under it.
#[cfg(target_arch = "wasm32")]
#[component]
pub fn LineChart(
    values: Signal<Vec<f64>>,
    slots: usize,
    label: &'static str,
    caption: Signal<String>,
    test_id: &'static str,
) -> impl IntoView {
    view! {
        <figure class="chart">
            <svg viewBox="0 0 300 60" preserveAspectRatio="none" role="img"
                aria-label=label data-testid=test_id>
                <line x1="0" y1="59" x2="300" y2="59" class="axis" />
                <polyline points=move || points(&values.get(), slots) class="line" />
            </svg>
            <figcaption>{move || caption.get()}</figcaption>
        </figure>
    }
}

#[cfg(test)]
mod tests {
    use super::points;

    #[test]
    fn newest_value_sits_at_the_right_edge_and_the_peak_near_the_top() {
        let p = points(&[1.0, 2.0], 60);
        assert_eq!(p, "294.9,30.0 300.0,4.0");
    }

    #[test]
    fn bad_values_draw_as_zero_and_nothing_draws_nothing() {
        assert_eq!(points(&[], 10), "");
        assert_eq!(points(&[f64::NAN, -1.0], 2), "0.0,56.0 300.0,56.0");
        assert_eq!(points(&[5.0], 2), "0.0,4.0 300.0,4.0");
        assert_eq!(points(&[5.0], 61), "295.0,4.0 300.0,4.0");
    }
}
