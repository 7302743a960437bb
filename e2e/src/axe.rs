//! Accessibility checks with axe-core (npm `axe-core`, installed by `scripts/setup.sh`
//! into the tools cache): the script is injected into the page over WebDriver and
//! `axe.run` reports the rules the page breaks, as WCAG 2.2 AA reads them.

use crate::browser::Browser;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::PathBuf;

/// Where `scripts/setup.sh` puts `axe.min.js`.
pub fn script_path() -> PathBuf {
    let tools = std::env::var_os("STARLING_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/starling/tools")
        });
    tools.join("npm/node_modules/axe-core/axe.min.js")
}

/// One broken rule: its id, impact, and the first few elements that break it.
#[derive(Debug, Clone)]
pub struct Violation {
    /// axe's rule id (`color-contrast`, `label`, …).
    pub rule: String,
    /// `minor`, `moderate`, `serious` or `critical`.
    pub impact: String,
    /// The offending elements' selectors, each with axe's summary of the failure.
    pub nodes: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}):", self.rule, self.impact)?;
        for node in &self.nodes {
            write!(f, "\n    {node}")?;
        }
        Ok(())
    }
}

/// Runs axe-core on the page the browser shows now (the top document, frames included
/// when same-origin) against WCAG 2.0/2.1/2.2 A and AA and axe's best practices.
pub async fn violations(browser: &Browser) -> Result<Vec<Violation>> {
    let path = script_path();
    let source = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (scripts/setup.sh installs axe-core)",
            path.display()
        )
    })?;
    // axe's bundle assigns `window.axe` when it runs as a function body.
    browser.execute(&source, json!([])).await?;
    let found = browser
        .execute(
            "return axe.run(document, {
                 runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'] },
                 resultTypes: ['violations'],
             }).then(r => r.violations.map(v => ({
                 rule: v.id,
                 impact: v.impact || '',
                 nodes: v.nodes.slice(0, 6).map(n => n.target.join(' ') + ' :: ' + (n.failureSummary || '').replace(/\\s+/g, ' ')),
             })));",
            json!([]),
        )
        .await?;
    let Value::Array(list) = found else {
        bail!("axe.run returned {found}");
    };
    Ok(list
        .into_iter()
        .map(|v| Violation {
            rule: v["rule"].as_str().unwrap_or_default().to_owned(),
            impact: v["impact"].as_str().unwrap_or_default().to_owned(),
            nodes: v["nodes"]
                .as_array()
                .map(|n| {
                    n.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect())
}

/// Form controls whose border does not reach 3:1 against what surrounds them (WCAG
/// 1.4.11, non-text contrast), which axe-core does not check: each as "id-or-type
/// ratio". Text fields, selects and checkboxes that are shown; range sliders draw their
/// track in a pseudo-element and are left to the eye.
pub async fn weak_control_borders(browser: &Browser) -> Result<Vec<String>> {
    let found = browser
        .execute(
            "const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
             const lum = (c) => { const [r, g, b] = rgb(c).slice(0, 3).map((v) => {
                 v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
                 return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
             const opaque = (c) => { const v = rgb(c); return v.length === 3 || v[3] > 0; };
             const behind = (el) => { for (let e = el.parentElement; e; e = e.parentElement) {
                 const b = getComputedStyle(e).backgroundColor; if (opaque(b)) return b; }
                 return 'rgb(255, 255, 255)'; };
             const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
                 return (x + 0.05) / (y + 0.05); };
             return [...document.querySelectorAll(
                 'input[type=text], input[type=number], input[type=password], input[type=checkbox], input:not([type]), select, textarea')]
               .filter((el) => el.getClientRects().length > 0)
               .map((el) => { const s = getComputedStyle(el);
                 const r = parseFloat(s.borderTopWidth) > 0 ? ratio(s.borderTopColor, behind(el)) : 0;
                 return [el.id || el.getAttribute('data-testid') || el.type, r]; })
               .filter(([, r]) => r < 3)
               .map(([name, r]) => `${name} ${r.toFixed(2)}:1`);",
            json!([]),
        )
        .await?;
    Ok(found
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect())
}
