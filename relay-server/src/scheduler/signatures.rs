//! Result signatures, checked in batches on a thread of their own.
//!
//! Checking each result's ed25519 signature alone was the largest cost of a result on
//! the relay's async threads (about 60 µs of 2 cores' time per unit). Checked as one
//! equation, a batch costs less per signature: about 37 µs at the 7–8 claims a batch
//! holds with 64 busy volunteers, less with more. Sessions hand their claims to
//! one thread, which takes whatever has queued while it worked on the previous batch, so
//! batches grow with load and a lone result is checked alone, at once.

use starling_protocol::{verify_claims, ResultClaim};
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Most claims checked as one batch: past this the saving per signature is small and a
/// forgery's fallback (each claim alone) gets long.
const MAX_BATCH: usize = 64;

/// A claim waiting for its verdict.
struct Pending {
    claim: ResultClaim,
    verdict: oneshot::Sender<bool>,
}

/// The handle sessions check result signatures through; the checking thread ends when
/// the last handle is dropped.
#[derive(Clone)]
pub struct SignatureChecks {
    /// `None` if the thread could not be started: claims are then checked one by one on
    /// the caller's thread, slower but the same verdicts.
    queue: Option<mpsc::Sender<Pending>>,
}

impl SignatureChecks {
    /// Starts the checking thread.
    pub fn start() -> Self {
        let (queue, claims) = mpsc::channel::<Pending>();
        let started = std::thread::Builder::new()
            .name("starling-sigs".into())
            .spawn(move || check_until_closed(&claims));
        match started {
            Ok(_) => Self { queue: Some(queue) },
            Err(e) => {
                tracing::warn!("result signatures will be checked one by one: {e}");
                Self { queue: None }
            }
        }
    }

    /// Whether `claim`'s signature holds.
    pub async fn check(&self, claim: ResultClaim) -> bool {
        let Some(queue) = &self.queue else {
            return claim.verify();
        };
        let (verdict, answer) = oneshot::channel();
        // Kept in case the thread is gone (it ends only with the last handle, so this is
        // a guard, not a path): the claim is then checked here.
        let fallback = claim.clone();
        if queue.send(Pending { claim, verdict }).is_err() {
            return fallback.verify();
        }
        match answer.await {
            Ok(ok) => ok,
            Err(_) => fallback.verify(),
        }
    }
}

fn check_until_closed(queue: &mpsc::Receiver<Pending>) {
    let mut claims: Vec<ResultClaim> = Vec::with_capacity(MAX_BATCH);
    let mut verdicts: Vec<oneshot::Sender<bool>> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = queue.recv() {
        let mut next = Some(first);
        while let Some(pending) = next.take() {
            claims.push(pending.claim);
            verdicts.push(pending.verdict);
            if claims.len() < MAX_BATCH {
                next = queue.try_recv().ok();
            }
        }
        let judged = verify_claims(&claims);
        claims.clear();
        for (verdict, ok) in verdicts.drain(..).zip(judged) {
            // The session may have gone (its peer disconnected): nobody is waiting.
            let _ = verdict.send(ok);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_protocol::{LeaseId, WalletKey};

    fn lease(n: u128) -> LeaseId {
        LeaseId::from_uuid(uuid::Uuid::from_u128(n))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_claims_each_get_their_own_verdict() {
        let checks = SignatureChecks::start();
        assert!(checks.queue.is_some(), "the checking thread started");
        let key = WalletKey::from_seed([3; 32]);
        let verifier = key.address().verifier().expect("valid key");
        // Every fifth claim is a forgery (its output changed after signing): whatever
        // batches they land in, exactly those are refused.
        let tasks: Vec<_> = (0..200u128)
            .map(|n| {
                let checks = checks.clone();
                let signature = key.sign_result(lease(n), &n.to_le_bytes());
                let output = if n % 5 == 0 {
                    (n + 1).to_le_bytes()
                } else {
                    n.to_le_bytes()
                };
                let claim = verifier.result_claim(lease(n), &output, &signature);
                tokio::spawn(async move { (n, checks.check(claim).await) })
            })
            .collect();
        for task in tasks {
            let (n, ok) = task.await.expect("task");
            assert_eq!(ok, n % 5 != 0, "claim {n}");
        }
    }
}
