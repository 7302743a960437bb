//! One volunteer's data channel: hello, then a loop of assignments and results.

use super::{LeaseError, Scheduler, Speed, Verdict};
use crate::ledger::{Account, Entry};
use crate::storage::PeerId;
use starling_peer::{PeerLink, PeerSender};
use starling_protocol::{
    encode_frames, ChannelBinding, LeaseId, Reassembler, Receipt, ToRelay, ToVolunteer,
    WalletAddress, PROTOCOL_VERSION,
};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Largest message a volunteer may send (a unit's output); protects the relay's memory.
const MAX_INBOUND_BYTES: usize = 256 * 1024 * 1024;
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Fallback poll for work in case a wake-up was missed.
const IDLE_POLL: Duration = Duration::from_secs(1);

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

async fn send(tx: &PeerSender, msg: &ToVolunteer) -> Result<(), SessionError> {
    for frame in encode_frames(msg) {
        tx.send(frame).await.map_err(|_| SessionError::Closed)?;
    }
    Ok(())
}

async fn next_message(
    link: &mut PeerLink,
    reassembler: &mut Reassembler,
) -> Result<ToRelay, SessionError> {
    loop {
        let frame = link.recv().await.ok_or(SessionError::Closed)?;
        if let Some(message) = reassembler
            .push_message(&frame)
            .map_err(|e| SessionError::Protocol(e.to_string()))?
        {
            return Ok(message);
        }
    }
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

/// Serves one volunteer until its channel closes or `stop` resolves (the relay is
/// stopping), then requeues whatever it held and closes the connection.
pub async fn serve(
    scheduler: Scheduler,
    mut link: PeerLink,
    stop: impl std::future::Future<Output = ()>,
) {
    let peer = PeerId::new();
    let tx = link.sender();
    scheduler.volunteers.fetch_add(1, Ordering::Relaxed);
    // Dropping `run` mid-write is safe: a write already queued still commits, and
    // `peer_gone` below, queued after it, releases whatever the peer holds then. The
    // closed connection is what makes the volunteer reconnect (to the restarted relay)
    // at once instead of after its ICE timeout.
    let outcome = tokio::select! {
        outcome = run(&scheduler, peer, &mut link, &tx) => outcome,
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
    if let Err(e) = scheduler.peer_gone(peer).await {
        tracing::error!(%peer, "could not requeue the peer's units: {e}");
    }
    link.close().await;
}

async fn run(
    scheduler: &Scheduler,
    peer: PeerId,
    link: &mut PeerLink,
    tx: &PeerSender,
) -> Result<(), SessionError> {
    let mut reassembler = Reassembler::new(MAX_INBOUND_BYTES);
    // The offer was checked for a fingerprint before it was answered (routes::rtc), so
    // this fails only on a relay whose own answer names none.
    let descriptions = link.descriptions();
    let binding = ChannelBinding::from_descriptions(&descriptions.offer, &descriptions.answer)
        .map_err(|e| SessionError::Protocol(e.to_string()))?;
    let hello = tokio::time::timeout(HELLO_TIMEOUT, next_message(link, &mut reassembler))
        .await
        .map_err(|_| SessionError::Protocol("no hello within 10 s".into()))??;
    let (wallet, site) = match hello {
        ToRelay::Hello {
            version,
            client,
            device,
            wallet,
            site,
            proof,
        } if version == PROTOCOL_VERSION => {
            // The one signature of the session: from here DTLS authenticates the channel,
            // and the channel is the wallet's.
            if wallet.verify_channel(&binding, &proof).is_err() {
                return Err(SessionError::Protocol(format!(
                    "the hello's proof is not {wallet}'s signature over this connection's \
                     certificate fingerprints"
                )));
            }
            tracing::info!(%peer, %wallet, ?site, client, adapter = device.adapter, backend = device.backend, "volunteer joined");
            if scheduler.storage.touch_wallet(&wallet).await?.quarantined {
                return Err(SessionError::Protocol(
                    LeaseError::Quarantined(wallet).to_string(),
                ));
            }
            (wallet, site.filter(|s| *s != wallet))
        }
        ToRelay::Hello { version, .. } => {
            return Err(SessionError::Protocol(format!(
                "protocol version {version} is not supported; this relay speaks {PROTOCOL_VERSION}"
            )))
        }
        other => {
            return Err(SessionError::Protocol(format!(
                "expected hello, got {other:?}"
            )))
        }
    };
    send(
        tx,
        &ToVolunteer::Welcome {
            version: PROTOCOL_VERSION,
        },
    )
    .await?;

    let mut wanted: u32 = 0;
    let mut speed = Speed::NEWCOMER;
    // Leases in flight on this connection: when each was sent and what it costs.
    let mut in_flight: HashMap<LeaseId, (Instant, u64)> = HashMap::new();
    let mut payments = scheduler.storage.ledger_feed();
    let relay_key = scheduler.storage.billing().map(|b| b.key.address());
    loop {
        let work = scheduler.work.notified();
        tokio::pin!(work);
        // Register for wake-ups before looking, so work submitted in between is not missed.
        work.as_mut().enable();
        while wanted > 0 {
            match scheduler.next_assignment(peer, wallet, site, speed).await? {
                Some((assignment, flops)) => {
                    let lease = assignment.lease;
                    send(tx, &ToVolunteer::Assign(assignment)).await?;
                    in_flight.insert(lease, (Instant::now(), flops));
                    wanted -= 1;
                }
                None => break,
            }
        }
        let message = tokio::select! {
            m = next_message(link, &mut reassembler) => m?,
            _ = &mut work, if wanted > 0 => continue,
            _ = tokio::time::sleep(IDLE_POLL), if wanted > 0 => continue,
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
            ToRelay::Ready { slots } => wanted = slots.min(64),
            ToRelay::Result {
                lease,
                output,
                elapsed_ms,
            } => {
                if let Some((sent, flops)) = in_flight.remove(&lease) {
                    speed = speed.observe(flops, sent.elapsed());
                }
                // One span per lease's result: everything logged while judging and paying
                // it carries the lease, the peer and the wallet.
                let span = tracing::info_span!("lease", %lease, %peer, %wallet);
                let verdict = tracing::Instrument::instrument(
                    scheduler.accept_result(peer, wallet, lease, &output),
                    span,
                )
                .await?;
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
                    },
                )
                .await?;
            }
            ToRelay::Failed { lease, reason } => {
                in_flight.remove(&lease);
                scheduler.abandon(peer, lease, &reason).await?
            }
            ToRelay::Hello { .. } => return Err(SessionError::Protocol("hello sent twice".into())),
        }
    }
}
