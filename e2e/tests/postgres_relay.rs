//! The relay on PostgreSQL (`--database postgres://…`) as a user runs it: two relays on
//! one database are one network (a job submitted to one is computed by volunteers of the
//! other, whose event stream follows it and whose API cancels another of its jobs), a
//! SIGKILL of the volunteers' relay in the middle loses no accepted result,
//! `relay-server audit --database` verifies the ledger beside the running relays, and an
//! unreachable database stops the relay at start with a clear error.

#[path = "../../relay-server/tests/common/postgres.rs"]
mod postgres;

use anyhow::Context as _;
use postgres::Postgres;
use starling_api::events::JobEvent;
use starling_api::JobState;
use starling_e2e::{binary, Api, MatmulJob, Relay, TempDir, Volunteer};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_postgres_are_one_network_and_survive_a_kill() -> anyhow::Result<()> {
    let url = Postgres::shared()?.database()?;
    let data = TempDir::new("pg-relay")?;
    // One data directory: the relays share the ledger's key, as one deployment does.
    let submitted_to = Relay::start_with(data.path(), 1, &["--database", &url])?;
    let mut computing = Relay::start_with(data.path(), 1, &["--database", &url])?;
    let key = submitted_to
        .dev_key()
        .ok_or_else(|| anyhow::anyhow!("no development key"))?
        .to_owned();
    let api = Api::with_key(&submitted_to.url(), &key);
    let other = Api::with_key(&computing.url(), &key);
    let job = MatmulJob::random(4096, 96, 96, 7);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    let total = api.job(&id).await?.progress.units_total;
    assert!(total >= 10, "job has {total} units");
    // The other relay streams the job's progress though its own scheduler never took it.
    let mut events = other.client().events(&id).await?;
    let _volunteers = [
        Volunteer::start(&computing.url())?,
        Volunteer::start(&computing.url())?,
    ];
    let streamed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match events.next().await? {
                Some(JobEvent::Progress(p)) if p.units_done >= 1 => {
                    return anyhow::Ok(p.units_done)
                }
                Some(JobEvent::Progress(_)) => {}
                other => anyhow::bail!("the stream ended early: {other:?}"),
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("no progress reached the other relay's event stream"))??;
    assert!(streamed >= 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = api.job(&id).await?.progress.units_done;
        if done >= 2 {
            assert!(
                done < total,
                "the job finished before the kill; make it bigger"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no progress on PostgreSQL");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A job submitted to one relay is cancelled through the other.
    let doomed = api.submit(&MatmulJob::random(64, 16, 16, 8).body).await?;
    let cancelled = other.client().cancel(&doomed).await?;
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(api.job(&doomed).await?.state, JobState::Cancelled);

    computing.kill();
    computing.restart()?;
    let done_at_restart = api.job(&id).await?.progress.units_done;
    assert!(
        done_at_restart >= 2,
        "accepted results survived the kill: {done_at_restart}"
    );
    api.wait_done(&id, Duration::from_secs(120)).await?;
    let (status, result) = other.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;

    // The ledger the job paid into verifies from the database alone.
    let audit = std::process::Command::new(binary("relay-server")?)
        .arg("audit")
        .arg("--data-dir")
        .arg(data.path())
        .args(["--database", &url])
        .output()?;
    let said = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.status.success(),
        "audit failed: {said} {}",
        String::from_utf8_lossy(&audit.stderr)
    );
    assert!(said.contains("ledger ok"), "{said}");
    Ok(())
}

#[tokio::test]
async fn an_unreachable_database_stops_the_relay_at_start_with_the_reason() -> anyhow::Result<()> {
    let data = TempDir::new("pg-unreachable")?;
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("postgres://starling:secret-password@127.0.0.1:{port}/starling");
    let out = std::process::Command::new(binary("relay-server")?)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(["--database", &url])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the relay started without its database"
    );
    assert!(
        stderr.contains("cannot open the PostgreSQL database postgres://starling@127.0.0.1"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("secret-password"),
        "the password is not printed: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    Ok(())
}

/// `relay-server audit`'s summary lines (entries, issued, escrowed, paid, …).
fn audit(data: &std::path::Path, database: Option<&str>) -> anyhow::Result<String> {
    let mut command = std::process::Command::new(binary("relay-server")?);
    command.arg("audit").arg("--data-dir").arg(data);
    if let Some(url) = database {
        command.args(["--database", url]);
    }
    let out = command.output()?;
    anyhow::ensure!(
        out.status.success(),
        "audit failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_network_moves_to_postgres_with_its_ledger_and_jobs() -> anyhow::Result<()> {
    let data = TempDir::new("pg-migrate")?;
    // A network with history on SQLite: a job computed and paid for.
    let mut relay = Relay::start(data.path(), 1)?;
    let api = relay.api();
    let job = MatmulJob::random(256, 96, 96, 11);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    {
        let _volunteer = Volunteer::start(&relay.url())?;
        api.wait_done(&id, Duration::from_secs(60)).await?;
    }
    relay.kill();
    let before = audit(data.path(), None)?;

    let url = Postgres::shared()?.database()?;
    let relay_server = binary("relay-server")?;
    let migrate = |to: &str| {
        std::process::Command::new(&relay_server)
            .arg("migrate")
            .arg("--from-sqlite")
            .arg(data.path())
            .args(["--to", to])
            .output()
    };
    let out = migrate(&url)?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("ledger"), "{said}");
    // The chain verifies on PostgreSQL with the same totals it had on SQLite.
    assert_eq!(audit(data.path(), Some(&url))?, before);
    // Migrating again would mix two networks: refused, the first copy untouched.
    let again = migrate(&url)?;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("migrate only into a new database"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(audit(data.path(), Some(&url))?, before);

    // The relay on PostgreSQL serves the old job's result and computes new work.
    let relay = Relay::start_with(data.path(), 1, &["--database", &url])?;
    let api = relay.api();
    let (status, result) = api.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;
    let next = MatmulJob::random(128, 64, 64, 12);
    let next_id = api.submit_with_quorum(&next.body, 1).await?;
    let _volunteer = Volunteer::start(&relay.url())?;
    api.wait_done(&next_id, Duration::from_secs(60)).await?;
    let (status, result) = api.result(&next_id).await?;
    assert_eq!(status, 200);
    next.check(&result)?;
    Ok(())
}

/// The database going away under a running relay: `/readyz` says 503 (problem+json) so a
/// balancer stops sending it traffic, a submission is refused with a problem rather than
/// a hang or a panic, and both recover once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_database_going_away_and_coming_back() -> anyhow::Result<()> {
    let server = Postgres::shared()?;
    let url = server.database()?;
    let name = url.rsplit('/').next().unwrap_or_default().to_owned();
    let admin = server.url("postgres");
    let data = TempDir::new("pg-readyz")?;
    let mut relay = Relay::start_with(data.path(), 1, &["--database", &url])?;
    let api = relay.api();
    let ready = || async {
        let response = api
            .http()
            .get(format!("{}/readyz", api.base()))
            .send()
            .await?;
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        anyhow::Ok((response.status().as_u16(), kind))
    };
    assert_eq!(ready().await?.0, 200);

    postgres::query(
        &admin,
        &format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ),
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, kind) = loop {
        let answer = ready().await?;
        if answer.0 != 200 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 503, "readyz while the database is gone");
    assert_eq!(kind, "application/problem+json");
    let refused = api
        .client()
        .submit(&MatmulJob::random(8, 8, 8, 1).body, None)
        .await;
    match refused {
        Err(starling_api::Error::Api { problem }) => assert_eq!(
            problem.status, 503,
            "a submission without a database: {problem:?}"
        ),
        other => panic!("a submission without a database: {other:?}"),
    }

    postgres::query(
        &admin,
        &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready().await?.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "readyz did not recover after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let id = api.submit(&MatmulJob::random(8, 8, 8, 2).body).await?;
    assert_eq!(api.job(&id).await?.state, JobState::Queued);
    relay.kill();
    Ok(())
}

/// A database host that takes the connection and never answers (a hung server, a
/// firewall that swallows packets, here a socket nobody accepts on) stops the relay at
/// start within seconds, naming what happened, instead of hanging on it.
#[tokio::test]
async fn a_database_that_never_answers_stops_the_relay_within_seconds() -> anyhow::Result<()> {
    let data = TempDir::new("pg-silent")?;
    // The kernel completes the handshake into the backlog; nothing ever replies.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = silent.local_addr()?.port();
    let url = format!("postgres://starling@127.0.0.1:{port}/starling");
    let mut relay = std::process::Command::new(binary("relay-server")?)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(["--database", &url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = relay.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(40) {
            let _ = relay.kill();
            anyhow::bail!("the relay still waits for a database that never answers");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(relay.stderr.as_mut().context("stderr")?, &mut stderr)?;
    eprintln!("gave up after {:?}", started.elapsed());
    anyhow::ensure!(!status.success(), "the relay started without its database");
    anyhow::ensure!(
        stderr.contains("cannot open the PostgreSQL database") && stderr.contains("no answer"),
        "{stderr}"
    );
    drop(silent);
    Ok(())
}
