//! The messages, one enum per direction.

use crate::ids::LeaseId;
use crate::site::SiteClaim;
use crate::wallet::{Signature, WalletAddress};
use serde::{Deserialize, Serialize};

/// What a volunteer knows about its compute device, sent once in [`ToRelay::Hello`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Adapter name as the GPU API reports it, or "CPU" for the CPU fallback.
    pub adapter: String,
    /// Backend: "webgpu", "vulkan", "metal", "cpu" ...
    pub backend: String,
    /// True when this is a software or fallback adapter (SwiftShader, lavapipe, CPU).
    pub fallback: bool,
}

/// Volunteer -> relay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToRelay {
    /// First message on a new channel.
    Hello {
        /// The sender's [`crate::PROTOCOL_VERSION`].
        version: u16,
        /// Free-form client name and version, for logs and stats ("browser/0.1.0").
        client: String,
        /// The device that will run kernels.
        device: DeviceInfo,
        /// The wallet credited for this volunteer's results.
        wallet: WalletAddress,
        /// The wallet's signature over this connection's two DTLS certificate
        /// fingerprints ([`crate::WalletKey::sign_channel`]), or on a WebSocket over the
        /// relay's challenge and host ([`crate::ChallengeBinding`]). It proves the key
        /// once; the connection then carries everything else as the wallet's.
        proof: Signature,
        /// The embedding site (its wallet and origin) when the volunteer came through the
        /// widget, for the site's share of credit. The relay pays it only to a site whose
        /// owner registered that wallet for that origin; anything else is ignored.
        site: Option<SiteClaim>,
    },
    /// The volunteer can take `slots` more units now. Sent after the welcome, and when
    /// a volunteer that rested (its duty cycle, a hidden tab) wants work again; a working
    /// volunteer asks with its [`ToRelay::Result`] instead.
    Ready {
        /// How many more units it wants.
        slots: u32,
    },
    /// The output of a leased unit.
    Result {
        /// The lease this answers.
        lease: LeaseId,
        /// The unit's output bytes, encoded as the kernel documents.
        output: Vec<u8>,
        /// Wall time the device spent, for speed estimates.
        elapsed_ms: u32,
        /// How many more units it wants now, as a [`ToRelay::Ready`] after it would ask
        /// (0: none yet). The relay records the result and leases the next unit in one
        /// go, and answers both in one [`ToVolunteer::Ack`]: two messages a unit, not
        /// four.
        more: u32,
    },
    /// The volunteer could not run a leased unit.
    Failed {
        /// The lease this answers.
        lease: LeaseId,
        /// Why, for the relay's logs.
        reason: String,
    },
    /// What the volunteer is willing to run, sent after the hello when it differs from
    /// the default (everything its device can run).
    Preferences {
        /// Only the relay's built-in kernels, never a kernel a submitter registered.
        builtin_only: bool,
    },
}

impl ToRelay {
    /// The variant's name, for logs and refusals that must not quote the peer's data.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "Hello",
            Self::Ready { .. } => "Ready",
            Self::Result { .. } => "Result",
            Self::Failed { .. } => "Failed",
            Self::Preferences { .. } => "Preferences",
        }
    }
}

/// One unit of work handed to one volunteer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// The lease; the result must name it.
    pub lease: LeaseId,
    /// Kernel id from the catalog ("matmul").
    pub kernel: String,
    /// The unit's parameters as JSON text (postcard cannot carry free-form JSON values).
    pub params_json: String,
    /// The unit's input bytes, encoded as the kernel documents.
    pub input: Vec<u8>,
    /// Milliseconds the volunteer has before the lease is reissued elsewhere.
    pub deadline_ms: u32,
    /// Seconds since the unit's job was submitted: enough for a volunteer page to say
    /// what it works on ("for a job submitted 2 min ago") without naming the job or its
    /// owner.
    pub job_age_s: u32,
}

/// Relay -> volunteer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToVolunteer {
    /// Answer to a compatible [`ToRelay::Hello`].
    Welcome {
        /// The relay's protocol version.
        version: u16,
    },
    /// Work to do.
    Assign(Assignment),
    /// The relay's verdict on a [`ToRelay::Result`], with the next unit when the result
    /// asked for more (`more`) and one was leasable at once.
    Ack {
        /// The lease the result named.
        lease: LeaseId,
        /// True when the result was recorded.
        accepted: bool,
        /// Why it was not, when it was not.
        detail: String,
        /// The next unit, as an [`ToVolunteer::Assign`] would carry it. `None` when the
        /// result asked for none, or none was leasable now: those asked for then come
        /// as `Assign`s when work arrives, as after a [`ToRelay::Ready`].
        next: Option<Assignment>,
    },
    /// Credit paid to this volunteer's wallet (or its site's) for verified work: one
    /// ledger entry (a payout of one job's verified units), signed by the relay's key.
    Receipt(Receipt),
    /// The relay refuses this peer (wrong version, malformed traffic); it closes next.
    Refused {
        /// What is wrong, for the volunteer's display.
        reason: String,
    },
    /// First message on a WebSocket connection: the hello's proof signs this challenge
    /// with the relay's host ([`crate::ChallengeBinding`]). Never sent on WebRTC, where
    /// the proof signs the DTLS certificates.
    Challenge {
        /// Fresh random bytes for this connection only.
        challenge: [u8; crate::CHALLENGE_BYTES],
    },
}

/// A signed ledger entry crediting the volunteer, pushed as soon as it is committed. The
/// relay pays verified units out in batches (every few seconds, and when a job ends), so
/// one receipt covers every unit of one job settled since the last payout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// The entry's position in the relay's public ledger (`GET /api/v1/ledger`).
    pub seq: u64,
    /// Micro-credits credited (1 credit = 1,000,000).
    pub amount_micro: u64,
    /// Why: "pay" (shares of units' prices) or "site_share".
    pub reason: String,
    /// The job whose units it pays for.
    pub reference: String,
    /// The entry's hash, as chained in the ledger.
    pub hash: [u8; 32],
    /// The relay key's signature over `hash` ([`crate::WalletAddress::verify_ledger_entry`]).
    pub signature: Signature,
    /// The relay key that signed it.
    pub relay: WalletAddress,
}
