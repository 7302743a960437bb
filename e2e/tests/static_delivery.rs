//! The real built app as a real relay sends it: the wasm and JS its index.html names go
//! out brotli- or gzip-compressed to clients that accept them, at a fraction of their
//! size, and are cached for good; index.html is revalidated. (That Chromium runs the
//! compressed app is `web_app.rs`'s and `widget_cross_origin.rs`'s.)

use starling_e2e::{workspace_root, Relay, TempDir};

/// The root-relative names in `index.html` of the app's hashed files with this extension.
fn named_in(index: &str, extension: &str) -> Vec<String> {
    index
        .split(['"', '\''])
        .filter(|part| part.starts_with("/starling-web-ui-") && part.ends_with(extension))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_app_goes_out_compressed_and_cached_for_good() -> anyhow::Result<()> {
    let data = TempDir::new("static-delivery")?;
    let relay = Relay::start(data.path(), 1)?;
    let http = reqwest::Client::new();
    let index = http.get(relay.url()).send().await?;
    assert_eq!(index.status(), 200);
    assert_eq!(
        index.headers().get("cache-control").map(|v| v.as_bytes()),
        Some(&b"no-cache"[..])
    );
    let index = index.text().await?;
    let mut files = named_in(&index, ".wasm");
    files.extend(named_in(&index, ".js"));
    files.sort();
    files.dedup();
    assert_eq!(files.len(), 2, "the app's wasm and JS in {index}");

    for file in &files {
        let url = format!("{}{file}", relay.url());
        let plain = http.get(&url).send().await?;
        assert_eq!(plain.status(), 200, "{file}");
        assert_eq!(plain.headers().get("content-encoding"), None, "{file}");
        let plain_bytes = plain.bytes().await?.len();
        for (encoding, extension, at_most) in [("br", "br", 0.4), ("gzip", "gz", 0.5)] {
            let answer = http
                .get(&url)
                .header("accept-encoding", encoding)
                .send()
                .await?;
            assert_eq!(answer.status(), 200, "{file} {encoding}");
            let header = |name: &str| {
                answer
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            assert_eq!(header("content-encoding"), encoding, "{file}");
            assert_eq!(
                header("cache-control"),
                "public, max-age=31536000, immutable",
                "{file}"
            );
            let sent = answer.bytes().await?;
            let on_disk = std::fs::read(workspace_root().join(format!("dist{file}.{extension}")))?;
            assert!(sent == on_disk, "{file}: not the precompressed file");
            eprintln!("{file}: {plain_bytes} bytes, {} as {encoding}", sent.len());
            assert!(
                (sent.len() as f64) < at_most * plain_bytes as f64,
                "{file}: {} of {plain_bytes} bytes as {encoding}",
                sent.len()
            );
        }
    }
    Ok(())
}
