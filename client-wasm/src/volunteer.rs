//! The volunteer's work loop, identical in the browser and natively.

use crate::{Engine, Transport, TransportError, TransportKind};
use futures::future::{select, Either};
use futures::FutureExt;
use starling_protocol::{
    encode_frames, Reassembler, SiteClaim, ToRelay, ToVolunteer, WalletKey, PROTOCOL_VERSION,
};
use std::future::Future;
use std::pin::pin;

/// Largest message accepted from the relay (one unit's input).
const MAX_INBOUND_BYTES: usize = 512 * 1024 * 1024;

/// Something the page or the log may want to show.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The relay accepted our hello.
    Connected {
        /// The transport the connection uses.
        transport: TransportKind,
    },
    /// This device asked for a unit (`Ready`); the relay answers when it has one, so a
    /// long silence after this means the network has no work for it.
    Asked,
    /// A unit arrived and starts computing now.
    Assigned {
        /// Kernel id.
        kernel: String,
        /// The unit's parameters, as the kernel reads them.
        params_json: String,
        /// Seconds since its job was submitted.
        job_age_s: u32,
    },
    /// A unit finished on this device.
    Computed {
        /// Kernel id.
        kernel: String,
        /// Milliseconds it took.
        elapsed_ms: f64,
        /// Its FLOPs.
        flops: u64,
    },
    /// The relay's verdict on a result.
    Acked {
        /// Recorded or not.
        accepted: bool,
        /// Why not.
        detail: String,
    },
    /// A unit failed locally and was handed back.
    UnitFailed(String),
    /// The relay credited this wallet; the receipt's signature checked out.
    Credited {
        /// Micro-credits (1 credit = 1,000,000).
        amount_micro: u64,
        /// Its place in the relay's public ledger.
        seq: u64,
        /// "pay" or "site_share".
        reason: String,
    },
}

/// Who this volunteer is to the relay.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Free-form client name and version, for the relay's logs ("browser/0.1.0").
    pub client: String,
    /// The wallet that proves each connection and is credited for its results.
    pub wallet: WalletKey,
    /// The embedding site (wallet and origin), when running inside the widget. The relay
    /// pays it a share only if its owner registered that wallet for that origin.
    pub site: Option<SiteClaim>,
    /// Run only the relay's built-in kernels, never one a submitter registered.
    pub builtin_only: bool,
}

/// Why the loop ended.
#[derive(Debug, thiserror::Error)]
pub enum VolunteerError {
    /// The channel failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The relay sent something we cannot read.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The relay refused us.
    #[error("the relay refused this volunteer: {0}")]
    Refused(String),
}

async fn send<T: Transport>(t: &T, msg: &ToRelay) -> Result<(), TransportError> {
    for frame in encode_frames(msg) {
        t.send(frame).await?;
    }
    Ok(())
}

async fn next_message<T: Transport>(
    t: &mut T,
    reassembler: &mut Reassembler,
) -> Result<ToVolunteer, VolunteerError> {
    loop {
        let frame = t.recv().await.ok_or(TransportError::Closed)?;
        if let Some(message) = reassembler
            .push_message(&frame)
            .map_err(|e| VolunteerError::Protocol(e.to_string()))?
        {
            return Ok(message);
        }
    }
}

/// Serves the relay over `transport` until `stop` completes (then returns `Ok`) or the
/// connection fails. `now_ms` is the platform's monotonic clock. Works flat out: asks for
/// the next unit as soon as one is sent back.
pub async fn run<T: Transport>(
    transport: &mut T,
    engine: &Engine,
    profile: &Profile,
    now_ms: impl Fn() -> f64,
    on_event: impl FnMut(Event),
    stop: impl Future<Output = ()>,
) -> Result<(), VolunteerError> {
    run_paced(
        transport,
        engine,
        profile,
        now_ms,
        on_event,
        |_| futures::future::ready(()),
        stop,
    )
    .await
}

/// [`run`], but before asking for work (after the welcome, and after each unit) it awaits
/// `pace(elapsed_ms of the last unit, 0 before the first)`: the page sleeps there for its
/// duty cycle, and holds there while paused (hidden tab, low battery). `stop` still ends
/// the loop while it waits.
pub async fn run_paced<T: Transport, P: Future<Output = ()>>(
    transport: &mut T,
    engine: &Engine,
    profile: &Profile,
    now_ms: impl Fn() -> f64,
    mut on_event: impl FnMut(Event),
    mut pace: impl FnMut(f64) -> P,
    stop: impl Future<Output = ()>,
) -> Result<(), VolunteerError> {
    let mut stop = pin!(stop.fuse());
    let mut reassembler = Reassembler::new(MAX_INBOUND_BYTES);
    send(
        transport,
        &ToRelay::Hello {
            version: PROTOCOL_VERSION,
            client: profile.client.clone(),
            device: engine.device_info(),
            wallet: profile.wallet.address(),
            site: profile.site.clone(),
            proof: profile.wallet.sign_binding(transport.binding()),
        },
    )
    .await?;
    if profile.builtin_only {
        // Before the first Ready: the channel is ordered, so no lease precedes it.
        send(transport, &ToRelay::Preferences { builtin_only: true }).await?;
    }
    loop {
        let message = {
            let next = pin!(next_message(transport, &mut reassembler));
            match select(next, stop.as_mut()).await {
                Either::Left((message, _)) => message?,
                Either::Right(((), _)) => return Ok(()),
            }
        };
        let assignment = match message {
            ToVolunteer::Welcome { .. } => {
                on_event(Event::Connected {
                    transport: transport.kind(),
                });
                if let Either::Right(((), _)) = select(pin!(pace(0.0)), stop.as_mut()).await {
                    return Ok(());
                }
                send(transport, &ToRelay::Ready { slots: 1 }).await?;
                on_event(Event::Asked);
                continue;
            }
            ToVolunteer::Assign(assignment) => assignment,
            ToVolunteer::Ack {
                accepted,
                detail,
                next,
                ..
            } => {
                on_event(Event::Acked { accepted, detail });
                // The unit our result asked for, when the relay had one at once.
                match next {
                    Some(assignment) => assignment,
                    None => continue,
                }
            }
            ToVolunteer::Receipt(receipt) => {
                // A receipt that does not verify is not credit: say nothing about it.
                if receipt
                    .relay
                    .verify_ledger_entry(&receipt.hash, &receipt.signature)
                    .is_ok()
                {
                    on_event(Event::Credited {
                        amount_micro: receipt.amount_micro,
                        seq: receipt.seq,
                        reason: receipt.reason,
                    });
                }
                continue;
            }
            ToVolunteer::Refused { reason } => return Err(VolunteerError::Refused(reason)),
            // The WebSocket transport reads the challenge before the loop starts; a
            // second one is the relay's mistake, and changes nothing already signed.
            ToVolunteer::Challenge { .. } => continue,
        };
        on_event(Event::Assigned {
            kernel: assignment.kernel.clone(),
            params_json: assignment.params_json.clone(),
            job_age_s: assignment.job_age_s,
        });
        let started = now_ms();
        let (answer, elapsed_ms) = match engine.run(&assignment).await {
            Ok(output) => {
                let elapsed_ms = now_ms() - started;
                on_event(Event::Computed {
                    kernel: assignment.kernel.clone(),
                    elapsed_ms,
                    flops: engine.flops(&assignment),
                });
                (Ok(output), elapsed_ms)
            }
            Err(e) => {
                on_event(Event::UnitFailed(e.to_string()));
                (Err(e.to_string()), 0.0)
            }
        };
        // Working flat out (no rest due, nothing holding), the result itself asks for
        // the next unit; otherwise it goes now, and `Ready` after the rest.
        let mut rest = pin!(pace(elapsed_ms));
        let rested = rest.as_mut().now_or_never().is_some();
        let more = u32::from(rested);
        match answer {
            Ok(output) => {
                send(
                    transport,
                    &ToRelay::Result {
                        lease: assignment.lease,
                        output,
                        elapsed_ms: elapsed_ms as u32,
                        more,
                    },
                )
                .await?;
            }
            Err(reason) => {
                send(
                    transport,
                    &ToRelay::Failed {
                        lease: assignment.lease,
                        reason,
                    },
                )
                .await?;
                if rested {
                    send(transport, &ToRelay::Ready { slots: 1 }).await?;
                }
            }
        }
        if !rested {
            if let Either::Right(((), _)) = select(rest, stop.as_mut()).await {
                return Ok(());
            }
            send(transport, &ToRelay::Ready { slots: 1 }).await?;
        }
        on_event(Event::Asked);
    }
}

/// Milliseconds to rest after a unit that took `elapsed_ms` so that the device computes
/// `intensity` (0.1 to 1) of the time: `elapsed * (1 - i) / i`.
pub fn duty_cycle_rest_ms(elapsed_ms: f64, intensity: f64) -> f64 {
    let i = if intensity.is_nan() {
        1.0
    } else {
        intensity.clamp(0.1, 1.0)
    };
    (elapsed_ms * (1.0 - i) / i).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::duty_cycle_rest_ms;

    #[test]
    fn duty_cycle_rests_for_the_share_not_computing() {
        assert_eq!(duty_cycle_rest_ms(100.0, 1.0), 0.0);
        assert!((duty_cycle_rest_ms(100.0, 0.5) - 100.0).abs() < 1e-9);
        assert!((duty_cycle_rest_ms(100.0, 0.25) - 300.0).abs() < 1e-9);
        // Clamped to 10%: never more than 9x the unit's time, never negative.
        assert!((duty_cycle_rest_ms(100.0, 0.0) - 900.0).abs() < 1e-9);
        assert_eq!(duty_cycle_rest_ms(100.0, 3.0), 0.0);
        assert_eq!(duty_cycle_rest_ms(100.0, f64::NAN), 0.0);
    }
}
