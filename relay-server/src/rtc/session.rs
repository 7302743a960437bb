//! One volunteer's connection (a WebRTC data channel or the WebSocket fallback, see
//! [`crate::rtc::link`]): hello, then a loop of assignments and results.

use crate::ledger::{Account, Entry};
use crate::rtc::link::{Link, LinkSender};
use crate::rtc::PendingSlot;
use crate::scheduler::caps::Network;
use crate::scheduler::{Asker, LeaseError, Scheduler, Speed, Verdict};
use crate::storage::PeerId;
use starling_protocol::{
    encode_frames, Assignment, Binding, ChunkError, FrameError, LeaseId, Reassembler, Receipt,
    SiteClaim, SiteOrigin, ToRelay, ToVolunteer, WalletAddress, PROTOCOL_VERSION,
};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Largest message before the hello is proved. A hello is a few hundred bytes: the header,
/// a wallet (32), its proof (64), an optional site wallet, and short client and device
/// names; 8 KiB leaves room for long adapter names while an unauthenticated peer can make
/// the relay buffer no more than that.
const PRE_HELLO_MAX_BYTES: usize = 8 * 1024;
/// Largest control message (`Ready`, `Failed`) after the hello, and the cap while the
/// volunteer holds no lease.
const CONTROL_MAX_BYTES: usize = 8 * 1024;
/// A `Result`'s bytes besides its output: header (4), variant (1), lease id (17), the
/// output's length (at most 10), `elapsed_ms` and `more` (at most 5 each), rounded up.
const RESULT_OVERHEAD_BYTES: usize = 64;
/// How long a peer whose channel is open has to prove a wallet: the volunteer sends its
/// hello as soon as the channel opens, so this only bounds peers that never will.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one message may wait for the peer to take it. Sends wait while the
/// channel's 64 KiB send buffer is full; a peer that stops reading would otherwise hold
/// its session (and its leases) forever.
const SEND_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest peer-supplied text (client and device names, failure reasons) put in logs.
const MAX_LOGGED_CHARS: usize = 80;
/// Fallback poll for work in case a wake-up was missed.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Most units a volunteer may have asked for and not yet been sent (`Ready`'s slots, a
/// `Result`'s `more`); more is clipped, so a peer cannot make the relay owe it without
/// bound.
const MAX_WANTED: u32 = 64;

/// What the relay remembers of each lease in flight on a connection: when it was sent,
/// its unit's FLOPs, and the exact size of its output.
type InFlight = HashMap<LeaseId, (Instant, u64, usize)>;

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("peer closed the channel")]
    Closed,
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error("the relay is stopping")]
    Stopping,
}

impl From<LeaseError> for SessionError {
    fn from(e: LeaseError) -> Self {
        match e {
            LeaseError::Quarantined(_) => Self::Protocol(e.to_string()),
            LeaseError::Storage(e) => Self::Storage(e),
        }
    }
}

async fn send(tx: &LinkSender, msg: &ToVolunteer) -> Result<(), SessionError> {
    for frame in encode_frames(msg) {
        match tokio::time::timeout(SEND_STALL_TIMEOUT, tx.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(SessionError::Closed),
            Err(_) => {
                tracing::info!("peer took nothing for {SEND_STALL_TIMEOUT:?}; closing");
                return Err(SessionError::Closed);
            }
        }
    }
    Ok(())
}

/// The next whole message. `why_limit` says, for a refusal, what the reassembler's
/// current limit is based on; errors never quote the peer's bytes.
async fn next_message(
    link: &mut Link,
    reassembler: &mut Reassembler,
    why_limit: &str,
) -> Result<ToRelay, SessionError> {
    loop {
        let frame = link
            .recv()
            .await
            .map_err(SessionError::Protocol)?
            .ok_or(SessionError::Closed)?;
        match reassembler.push_message(&frame) {
            Ok(Some(message)) => return Ok(message),
            Ok(None) => {}
            Err(FrameError::Chunk(ChunkError::TooLarge { limit })) => {
                return Err(SessionError::Protocol(format!(
                    "message over the {limit}-byte limit {why_limit}"
                )))
            }
            Err(e) => return Err(SessionError::Protocol(e.to_string())),
        }
    }
}

/// At most `max` characters of a peer-supplied text, for logs.
fn clip(text: &str, max: usize) -> &str {
    text.char_indices()
        .nth(max)
        .map_or(text, |(at, _)| &text[..at])
}

/// The volunteer's copy of a ledger entry that credits it.
fn receipt(entry: &Entry, relay: WalletAddress) -> Receipt {
    Receipt {
        seq: entry.seq,
        amount_micro: entry.amount.0,
        reason: entry.reason.to_string(),
        reference: entry.reference.clone(),
        hash: entry.hash,
        signature: entry.signature.clone(),
        relay,
    }
}

/// Serves one volunteer until its connection closes or `stop` resolves (the relay is
/// stopping), then requeues whatever it held and closes the connection. `unproved` is
/// the peer's place among pending peers (see [`crate::rtc::PendingPeers`]), given up
/// once its hello proves a wallet. `address` is where its offer came from, for the caps
/// on leases per network.
pub async fn serve(
    scheduler: Scheduler,
    mut link: Link,
    unproved: PendingSlot,
    address: Option<std::net::IpAddr>,
    stop: impl std::future::Future<Output = ()>,
) {
    let peer = PeerId::new();
    // The caps count leases by where the offer came from; replicas are placed by where
    // the data flows from (`network` in `run`, once the channel is up).
    let caps_network = Network::of(
        address,
        peer,
        scheduler.caps().limits().loopback_is_one_network,
    );
    let tx = link.sender();
    scheduler.volunteers.fetch_add(1, Ordering::Relaxed);
    // Dropping `run` mid-write is safe: a write already queued still commits, and
    // `peer_gone` below, queued after it, releases whatever the peer holds then. The
    // closed connection is what makes the volunteer reconnect (to the restarted relay)
    // at once instead of after its ICE timeout.
    let outcome = tokio::select! {
        outcome = run(&scheduler, peer, caps_network, &mut link, &tx, unproved) => outcome,
        () = stop => Err(SessionError::Stopping),
    };
    scheduler.volunteers.fetch_sub(1, Ordering::Relaxed);
    match &outcome {
        Err(SessionError::Protocol(reason)) => {
            tracing::warn!(%peer, "refusing peer: {reason}");
            let _ = send(
                &tx,
                &ToVolunteer::Refused {
                    reason: reason.clone(),
                },
            )
            .await;
        }
        Err(SessionError::Storage(e)) => {
            tracing::error!(%peer, "session ended by database error: {e}")
        }
        Err(SessionError::Stopping) => tracing::info!(%peer, "closing the peer: relay stopping"),
        Err(SessionError::Closed) | Ok(()) => tracing::info!(%peer, "volunteer left"),
    }
    // A relay that stops ends the session itself: that is no hand-back of the volunteer's.
    let by_relay = matches!(outcome, Err(SessionError::Stopping));
    if let Err(e) = scheduler.peer_gone(peer, by_relay).await {
        tracing::error!(%peer, "could not requeue the peer's units: {e}");
    }
    link.close().await;
}

/// The site wallet a hello's claim earns a share for: only a wallet its owner registered
/// (proved) for the claimed origin, and never the volunteer's own. Anything else is
/// ignored and the volunteer works on, so a volunteer naming a second wallet of its own
/// gets nothing for it. A native client can still claim a registered site it did not
/// come through; that only pays a real, proved site, out of the platform's fee.
async fn registered_site(
    scheduler: &Scheduler,
    peer: PeerId,
    wallet: &WalletAddress,
    claim: SiteClaim,
) -> Result<Option<WalletAddress>, SessionError> {
    let Ok(origin) = claim.origin.parse::<SiteOrigin>() else {
        tracing::debug!(%peer, origin = clip(&claim.origin, MAX_LOGGED_CHARS), "site ignored: not an origin");
        return Ok(None);
    };
    if claim.wallet == *wallet
        || !scheduler
            .storage
            .site_registered(&claim.wallet, &origin)
            .await?
    {
        tracing::debug!(%peer, origin = clip(origin.as_str(), MAX_LOGGED_CHARS), "site ignored: not registered for this wallet");
        return Ok(None);
    }
    Ok(Some(claim.wallet))
}

/// Notes a unit just leased to this connection as in flight, and returns its assignment
/// to send.
fn hold(
    scheduler: &Scheduler,
    in_flight: &mut InFlight,
    (assignment, flops): (Assignment, u64),
) -> Assignment {
    // The unit was just built from these parameters, so this holds; a unit without a
    // size would get its result refused as oversized.
    let output_len = scheduler
        .catalog()
        .get(&assignment.kernel)
        .and_then(|k| k.output_len(&assignment.params_json))
        .unwrap_or(0);
    in_flight.insert(assignment.lease, (Instant::now(), flops, output_len));
    assignment
}

async fn run(
    scheduler: &Scheduler,
    peer: PeerId,
    caps_network: Network,
    link: &mut Link,
    tx: &LinkSender,
    unproved: PendingSlot,
) -> Result<(), SessionError> {
    let mut reassembler = Reassembler::new(PRE_HELLO_MAX_BYTES);
    let binding = link.binding().await.map_err(SessionError::Protocol)?;
    let hello = tokio::time::timeout(
        HELLO_TIMEOUT,
        next_message(
            link,
            &mut reassembler,
            "before the hello (a hello is a few hundred bytes)",
        ),
    )
    .await
    .map_err(|_| SessionError::Protocol(format!("no hello within {HELLO_TIMEOUT:?}")))??;
    let (wallet, site, gpu) = match hello {
        ToRelay::Hello {
            version,
            client,
            device,
            wallet,
            site,
            proof,
        } if version == PROTOCOL_VERSION => {
            // The one signature of the session: from here DTLS (or the WebSocket's TCP
            // connection) carries the channel, and the channel is the wallet's.
            if wallet.verify_binding(&binding, &proof).is_err() {
                let over = match &binding {
                    Binding::Dtls(_) => "certificate fingerprints".to_owned(),
                    Binding::Challenge(challenge) => format!(
                        "challenge and relay host {}",
                        clip(&challenge.relay_host, MAX_LOGGED_CHARS)
                    ),
                };
                return Err(SessionError::Protocol(format!(
                    "the hello's proof is not {wallet}'s signature over this connection's {over}"
                )));
            }
            tracing::info!(
                %peer,
                %wallet,
                transport = link.kind(),
                site = ?site.as_ref().map(|s| s.wallet),
                client = clip(&client, MAX_LOGGED_CHARS),
                adapter = clip(&device.adapter, MAX_LOGGED_CHARS),
                backend = clip(&device.backend, MAX_LOGGED_CHARS),
                "volunteer joined"
            );
            if scheduler.storage.touch_wallet(&wallet).await?.quarantined {
                return Err(SessionError::Protocol(
                    LeaseError::Quarantined(wallet).to_string(),
                ));
            }
            let site = match site {
                Some(claim) => registered_site(scheduler, peer, &wallet, claim).await?,
                None => None,
            };
            // Kernels submitters registered run on a GPU or not at all: never on the CPU
            // fallback, which would run a stranger's code unsandboxed by a GPU driver.
            let gpu = !device.backend.eq_ignore_ascii_case("cpu");
            (wallet, site, gpu)
        }
        ToRelay::Hello { version, .. } => {
            return Err(SessionError::Protocol(format!(
                "protocol version {version} is not supported; this relay speaks {PROTOCOL_VERSION}"
            )))
        }
        other => {
            return Err(SessionError::Protocol(format!(
                "expected a hello, got a {} message",
                other.kind()
            )))
        }
    };
    // Proved: the peer no longer counts against the caps on unauthenticated peers.
    drop(unproved);
    // Where the data flows from, as ICE selected it: the unit's replicas go to other
    // networks. Unknown (no pair selected, which an open channel rules out) counts as
    // its own network, as loopback does.
    let network = link
        .remote_address()
        .await
        .and_then(|address| scheduler.networks().network_of(address));
    send(
        tx,
        &ToVolunteer::Welcome {
            version: PROTOCOL_VERSION,
        },
    )
    .await?;

    let mut wanted: u32 = 0;
    // Whether registered kernels' units may go to this volunteer: a GPU's, unless it
    // asked for built-ins only (`ToRelay::Preferences`).
    // Who asks for work: its speed and what kernels it takes change as the session goes.
    let mut asker = Asker {
        peer,
        wallet,
        site,
        speed: Speed::NEWCOMER,
        network,
        custom_ok: gpu,
    };
    let mut in_flight = InFlight::new();
    let mut payments = scheduler.storage.ledger_feed();
    let relay_key = scheduler.storage.billing().map(|b| b.key.address());
    loop {
        let work = scheduler.work.notified();
        tokio::pin!(work);
        // Register for wake-ups before looking, so work submitted in between is not missed.
        work.as_mut().enable();
        while wanted > 0 {
            // Over a cap on leases held or taken, this is `None` too: the volunteer
            // waits for a lease of its own to end, or for the next poll.
            match scheduler
                .next_capped_assignment(asker, caps_network)
                .await?
            {
                Some(leased) => {
                    let assignment = hold(scheduler, &mut in_flight, leased);
                    send(tx, &ToVolunteer::Assign(assignment)).await?;
                    wanted -= 1;
                }
                None => break,
            }
        }
        // What the volunteer may legitimately send now: a control message, or the result
        // of the largest unit it holds. An unfinished message holds no more than this.
        let largest_output = in_flight.values().map(|v| v.2).max();
        reassembler.set_limit(largest_output.map_or(CONTROL_MAX_BYTES, |len| {
            (len + RESULT_OVERHEAD_BYTES).max(CONTROL_MAX_BYTES)
        }));
        let why_limit = if largest_output.is_some() {
            "(the largest output of the units this volunteer holds)"
        } else {
            "(this volunteer holds no unit, so it may only send control messages)"
        };
        // Owed units and none leased: new work wakes the session; a wallet over its
        // lease rate asks again as soon as it regains one.
        let poll = match wanted {
            0 => IDLE_POLL,
            _ => scheduler
                .caps()
                .rate_wait(&wallet, Instant::now())
                .map_or(IDLE_POLL, |wait| wait.min(IDLE_POLL)),
        };
        let message = tokio::select! {
            m = next_message(link, &mut reassembler, why_limit) => m?,
            _ = &mut work, if wanted > 0 => continue,
            _ = tokio::time::sleep(poll), if wanted > 0 => continue,
            entry = payments.recv() => {
                if let (Ok(entry), Some(relay)) = (entry, relay_key) {
                    if entry.credit == Account::Wallet(wallet) {
                        send(tx, &ToVolunteer::Receipt(receipt(&entry, relay))).await?;
                    }
                }
                continue;
            }
        };
        match message {
            ToRelay::Ready { slots } => wanted = slots.min(MAX_WANTED),
            ToRelay::Result {
                lease,
                output,
                elapsed_ms,
                more,
            } => {
                if let Some((sent, flops, _)) = in_flight.remove(&lease) {
                    asker.speed = asker.speed.observe(flops, sent.elapsed());
                    scheduler.lease_ended(lease);
                }
                wanted = wanted.saturating_add(more).min(MAX_WANTED);
                // One span per lease's result: everything logged while judging and paying
                // it carries the lease, the peer and the wallet.
                let span = tracing::info_span!("lease", %lease, %peer, %wallet);
                let judged = tracing::Instrument::instrument(
                    scheduler.accept_result(peer, wallet, lease, &output),
                    span,
                );
                // The result asks for the next unit: judged and leased at once, so both
                // reach the writer together and commit in one group, and one message
                // answers both. A lease beside a result that quarantines its wallet is
                // what a volunteer asking ahead (`Ready { slots: 2 }`) always had: its
                // next request is refused.
                let (verdict, next) = if wanted > 0 {
                    let (verdict, next) = tokio::join!(
                        judged,
                        scheduler.next_capped_assignment(asker, caps_network)
                    );
                    // Held before either error ends the session, so its end releases it.
                    let next = next?.map(|leased| hold(scheduler, &mut in_flight, leased));
                    (verdict?, next)
                } else {
                    (judged.await?, None)
                };
                if next.is_some() {
                    wanted -= 1;
                }
                tracing::debug!(%peer, %lease, elapsed_ms, ?verdict, "result");
                let (accepted, detail) = match verdict {
                    Verdict::Accepted => (true, String::new()),
                    Verdict::Rejected(why) => (false, why),
                };
                send(
                    tx,
                    &ToVolunteer::Ack {
                        lease,
                        accepted,
                        detail,
                        next,
                    },
                )
                .await?;
            }
            ToRelay::Failed { lease, reason } => {
                if in_flight.remove(&lease).is_some() {
                    scheduler.lease_ended(lease);
                }
                scheduler
                    .abandon(peer, lease, clip(&reason, MAX_LOGGED_CHARS))
                    .await?
            }
            ToRelay::Preferences { builtin_only } => {
                // Only ever narrows what the hello's device allows: a CPU volunteer
                // cannot ask its way to a registered kernel.
                asker.custom_ok = gpu && !builtin_only;
            }
            ToRelay::Hello { .. } => return Err(SessionError::Protocol("hello sent twice".into())),
        }
    }
}
