//! Wire messages between the Starling relay and its volunteers.
//!
//! Everything that crosses a data channel is defined here so that the relay, the browser
//! volunteer (wasm32) and the native volunteer agree by construction:
//! - [`ids`]: the newtype ids shared by the REST API, the database and the wire;
//! - [`messages`]: one enum per direction;
//! - [`wallet`]: volunteers' key pairs, addresses and signatures;
//! - [`site`]: embedding sites' origins, and what a hello claims about its site;
//! - [`channel`]: what a volunteer's hello signs to bind its wallet to the connection;
//! - [`codec`]: a versioned binary encoding (postcard) and the chunking that keeps every
//!   data-channel message under the 64 KiB SCTP limit.

pub mod channel;
pub mod codec;
pub mod ids;
pub mod messages;
pub mod site;
pub mod wallet;

pub use channel::{
    with_fingerprints, Binding, BindingError, ChallengeBinding, ChannelBinding, Fingerprint,
    NamedCertificate, CHALLENGE_BYTES,
};
pub use codec::{
    decode, encode, encode_frames, ChunkError, Chunker, CodecError, FrameError, Reassembler,
    MAX_CHUNK_BYTES,
};
pub use ids::{JobId, LeaseId, UnitId};
pub use messages::{Assignment, DeviceInfo, Receipt, ToRelay, ToVolunteer};
pub use site::{OriginError, SiteClaim, SiteOrigin};
pub use wallet::{Signature, WalletAddress, WalletError, WalletKey, MAX_TRANSFER_VALIDITY_MS};

/// The protocol version this build speaks. Bumped on any incompatible change to
/// [`messages`]; peers with another version are refused at hello time.
pub const PROTOCOL_VERSION: u16 = 6;
