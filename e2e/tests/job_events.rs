//! A submitter follows a job over Server-Sent Events while a native volunteer computes
//! it: progress events, then `done`, then the stream ends; the result matches the CPU.

use starling_e2e::{MatmulJob, Relay, TempDir, Volunteer};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_reaches_done_with_a_native_volunteer() -> anyhow::Result<()> {
    let data = TempDir::new("events")?;
    let relay = Relay::start(data.path(), 1)?;
    let api = relay.api();
    let job = MatmulJob::random(512, 128, 128, 11);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    let mut response = api
        .http()
        .get(format!("{}/api/v1/jobs/{id}/events", api.base()))
        .send()
        .await?
        .error_for_status()?;
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let _volunteer = Volunteer::start(&relay.url())?;
    let mut text = String::new();
    let read_all = async {
        while let Some(chunk) = response.chunk().await? {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(90), read_all)
        .await
        .map_err(|_| anyhow::anyhow!("the stream did not end"))??;
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names.first(), Some(&"progress"), "{text}");
    assert_eq!(names.last(), Some(&"done"), "{text}");
    assert!(
        names.len() >= 3,
        "progress while running, then done: {text}"
    );
    assert!(
        text.contains("\"state\":\"running\""),
        "a running update: {text}"
    );
    let (status, result) = api.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;
    Ok(())
}
