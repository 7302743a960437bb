//! The relay on PostgreSQL (`--database postgres://…`) as a user runs it: native
//! volunteers compute a job the API submitted, a SIGKILL of the relay in the middle
//! loses no accepted result, a second relay on the same database is refused (several
//! relays are not supported yet), `relay-server audit --database` verifies the ledger
//! beside the running relay, and an unreachable database stops the relay at start with a
//! clear error.

#[path = "../../relay-server/tests/common/postgres.rs"]
mod postgres;

use postgres::Postgres;
use starling_e2e::{binary, MatmulJob, Relay, TempDir, Volunteer};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_on_postgres_computes_survives_a_kill_and_audits() -> anyhow::Result<()> {
    let url = Postgres::shared()?.database()?;
    let data = TempDir::new("pg-relay")?;
    let mut relay = Relay::start_with(data.path(), 1, &["--database", &url])?;
    let api = relay.api();
    let job = MatmulJob::random(1024, 96, 96, 7);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    let total = api.job(&id).await?.progress.units_total;
    assert!(total >= 10, "job has {total} units");
    let _volunteers = [
        Volunteer::start(&relay.url())?,
        Volunteer::start(&relay.url())?,
    ];
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
    // A second relay on the same database is refused while this one runs: the two
    // would fork the ledger and void each other's leases.
    let second = std::process::Command::new(binary("relay-server")?)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path().join("second"))
        .args(["--database", &url])
        .output()?;
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "a second relay started on the database"
    );
    assert!(
        said.contains("another relay is writing to this database"),
        "{said}"
    );
    relay.kill();
    relay.restart()?;
    let done_at_restart = api.job(&id).await?.progress.units_done;
    assert!(
        done_at_restart >= 2,
        "accepted results survived the kill: {done_at_restart}"
    );
    api.wait_done(&id, Duration::from_secs(120)).await?;
    let (status, result) = api.result(&id).await?;
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
