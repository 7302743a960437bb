//! The relay's HTTP side under abuse and at shutdown: half-sent requests (slowloris) are
//! cut off while `/healthz` keeps answering; SIGTERM closes volunteers' connections so
//! they come back to the restarted relay at once; job event streams share one reader
//! per job and are capped.

use starling_e2e::browser::Browser;
use starling_e2e::{MatmulJob, Relay, TempDir, Volunteer};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Half-sent requests held open at once.
const SLOW_CLIENTS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_closed_while_healthz_answers() -> anyhow::Result<()> {
    let data = TempDir::new("slowloris")?;
    // The default header timeout (10 s): the test runs the relay as shipped.
    let relay = Relay::start(data.path(), 1)?;
    let addr = relay.url().trim_start_matches("http://").to_owned();
    let mut slow = Vec::with_capacity(SLOW_CLIENTS);
    for _ in 0..SLOW_CLIENTS {
        let mut stream = TcpStream::connect(&addr).await?;
        // A request line and one header, never the blank line that ends them.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n")
            .await?;
        slow.push(stream);
    }
    let opened = Instant::now();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()?;
    // `/healthz` keeps answering within a second on fresh connections while they hang.
    while opened.elapsed() < Duration::from_secs(8) {
        let asked = Instant::now();
        let answer = http.get(format!("{}/healthz", relay.url())).send().await;
        let status = answer.map(|a| a.status().as_u16());
        assert_eq!(
            status.as_ref().ok(),
            Some(&200),
            "healthz after {:?} with {SLOW_CLIENTS} half-sent requests: {status:?}",
            opened.elapsed()
        );
        assert!(asked.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Every half-sent request's connection is closed by the relay soon after the header
    // timeout (whatever it answers first, it then ends the connection).
    let deadline = opened + Duration::from_secs(15);
    for (n, stream) in slow.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let closed = tokio::time::timeout(left, async {
            let mut buffer = [0u8; 1024];
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "connection {n} still open {:?} after its half-sent request",
            opened.elapsed()
        );
    }
    Ok(())
}

/// The relay's CPU time so far (user + system), from /proc.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat, 11 and 12 after the name; the clock
    // ticks 100 times a second on Linux.
    Ok(Duration::from_millis((ticks(11) + ticks(12)) * 10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_volunteers_who_return_to_the_restarted_relay() -> anyhow::Result<()> {
    let data = TempDir::new("sigterm")?;
    let mut relay = Relay::start(data.path(), 1)?;
    let api = relay.api();
    let _volunteer = Volunteer::start(&relay.url())?;
    // And a browser tab volunteering on the page's CPU fallback.
    let browser = Browser::start("sigterm").await?;
    browser
        .goto(&format!("{}/?device=cpu", relay.url()))
        .await?;
    browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    browser.click("start").await?;
    browser
        .wait_text("status", Duration::from_secs(30), |t| {
            starling_e2e::connected(t)
        })
        .await?;
    // Many small units, so SIGTERM lands mid-job.
    let job = MatmulJob::random(2048, 96, 96, 23);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let done_before = loop {
        let done = api.job(&id).await?.progress.units_done;
        if done >= 3 {
            break done;
        }
        assert!(Instant::now() < deadline, "no progress before SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let (took, status) = relay.terminate(Duration::from_secs(15))?;
    assert!(
        status.success(),
        "the relay exits cleanly on SIGTERM, not killed by it: {status}"
    );
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM to exit took {took:?}"
    );

    relay.restart()?;
    let restarted = Instant::now();
    let record = api.job(&id).await?;
    let done_after = record.progress.units_done;
    assert!(
        done_after >= done_before,
        "results acknowledged before SIGTERM are kept: {done_before} then {done_after}"
    );
    // Nothing stays leased to the connections the old process closed.
    assert_eq!(record.progress.units_leased, 0, "{record:?}");
    // Both volunteers saw their connection close and are back within seconds.
    loop {
        if api.stats().await?.volunteers >= 2 {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "the volunteers did not reconnect within 10 s of the restart: {} of 2 back",
            api.stats().await?.volunteers
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "SIGTERM to exit: {took:?}; native and browser volunteers back {:?} after the restart",
        restarted.elapsed()
    );
    browser
        .wait_text("status", Duration::from_secs(10), |t| {
            starling_e2e::connected(t)
        })
        .await?;
    api.wait_done(&id, Duration::from_secs(120)).await?;
    let (code, result) = api.result(&id).await?;
    assert_eq!(code, 200);
    job.check(&result)?;
    // And a job submitted after the restart completes too.
    let next = MatmulJob::random(128, 64, 64, 24);
    let next_id = api.submit_with_quorum(&next.body, 1).await?;
    api.wait_done(&next_id, Duration::from_secs(60)).await?;
    let (code, result) = api.result(&next_id).await?;
    assert_eq!(code, 200);
    next.check(&result)?;
    Ok(())
}

/// Watchers on one job.
const WATCHERS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_event_streams_share_one_reader_and_the_cap_answers_429() -> anyhow::Result<()> {
    let data = TempDir::new("watchers")?;
    let relay = Relay::start_with(
        data.path(),
        1,
        &[
            "--max-event-streams-per-account",
            &WATCHERS.to_string(),
            "--max-event-streams",
            "1000",
        ],
    )?;
    let api = relay.api();
    let job = MatmulJob::random(256, 64, 64, 25);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    let url = format!("{}/api/v1/jobs/{id}/events", api.base());
    // The relay's own idle work over the same window, before any watcher: the debug build
    // on a shared machine costs a varying part of the budget by itself, and the watchers
    // are judged by what they add to it.
    let pid = relay.pid().expect("the relay runs");
    let before = cpu_time(pid)?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = cpu_time(pid)? - before;
    let mut streams = Vec::with_capacity(WATCHERS);
    for _ in 0..WATCHERS {
        streams.push(api.http().get(&url).send().await?.error_for_status()?);
    }
    // Each stream starts with the job's progress.
    for stream in &mut streams {
        let first = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .map_err(|_| anyhow::anyhow!("no first event"))??
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&first);
        assert!(text.contains("event: progress"), "{text}");
    }
    // With the job idle, the watchers cost (almost) nothing: before, each read the job
    // every 200 ms (1,000 queries a second for 200 watchers).
    let before = cpu_time(pid)?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let spent = cpu_time(pid)? - before;
    let added = spent.saturating_sub(idle);
    eprintln!("relay CPU over 5 s: {idle:?} idle, {spent:?} with {WATCHERS} idle event streams");
    assert!(
        added < Duration::from_millis(250),
        "{WATCHERS} idle watchers added {added:?} of CPU in 5 s ({idle:?} without them)"
    );
    // One more is over the account's limit: 429 problem+json with Retry-After.
    let refused = api.http().get(&url).send().await?;
    assert_eq!(refused.status().as_u16(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        refused
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    // A stream closed gives its place back.
    drop(streams.pop());
    let again = Instant::now();
    loop {
        let answer = api.http().get(&url).send().await?;
        if answer.status().is_success() {
            streams.push(answer);
            break;
        }
        assert!(
            again.elapsed() < Duration::from_secs(5),
            "the place was not given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Progress still reaches every watcher, and each stream ends with `done`.
    let _volunteer = Volunteer::start(&relay.url())?;
    for stream in &mut streams {
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(90), async {
            while let Some(chunk) = stream.chunk().await? {
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
            anyhow::Ok(())
        })
        .await
        .map_err(|_| anyhow::anyhow!("a stream did not end"))??;
        let last = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .next_back();
        assert_eq!(last, Some("done"), "{text}");
    }
    Ok(())
}
