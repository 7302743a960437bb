//! Two headless native volunteers (wgpu on lavapipe, WebRTC via the webrtc crate) share a
//! matmul job; the assembled result equals the CPU reference.

use starling_e2e::{MatmulJob, Relay, TempDir, Volunteer};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_native_volunteers_complete_a_matmul_job() -> anyhow::Result<()> {
    let data = TempDir::new("native")?;
    let relay = Relay::start(data.path(), 1)?;
    let api = relay.api();
    let _volunteers = [
        Volunteer::start(&relay.url())?,
        Volunteer::start(&relay.url())?,
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while api.stats().await?.volunteers < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "volunteers did not connect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let job = MatmulJob::random(256, 128, 128, 5);
    let id = api.submit(&job.body).await?;
    let (status, _) = api.result(&id).await?;
    assert_eq!(status, 409, "no result before the job is done");
    let done = api.wait_done(&id, Duration::from_secs(60)).await?;
    assert!(done.progress.units_total >= 4, "{done:?}");
    let (status, result) = api.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;
    Ok(())
}
