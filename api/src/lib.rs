//! The Starling relay's REST API as Rust types, shared by the relay (which answers with
//! them), the `starling` CLI, the web UI and the tests (which read them), so a renamed
//! field is a compile error everywhere instead of a surprise at run time.
//!
//! - [`jobs`]: submitting, listing, following and cancelling jobs, and their units;
//! - [`events`]: the payloads of a job's Server-Sent Events;
//! - [`manifest`]: a submitter's own WGSL kernel, its manifest and length expressions;
//! - [`kernels`], [`network`], [`wallets`], [`ledger`], [`sites`], [`rtc`]: the other
//!   endpoints' bodies;
//! - [`Problem`]: the RFC 9457 body of every error;
//! - [`sse`]: a small Server-Sent Events parser for the event stream;
//! - [`Client`] (feature `client`, native only): the calls the CLI and the tests make;
//!   `https`: which certificates it trusts.
//!
//! With the `openapi` feature every type derives `utoipa::ToSchema`, and the relay's
//! OpenAPI document is built from these same types. The types only describe the wire:
//! the relay's storage has row types of its own and converts them in one place.

pub mod events;
pub mod jobs;
pub mod kernels;
pub mod ledger;
pub mod manifest;
pub mod network;
mod problem;
pub mod rtc;
pub mod sites;
pub mod wallets;

#[cfg(all(feature = "client", not(target_arch = "wasm32")))]
mod client;
#[cfg(all(feature = "client", not(target_arch = "wasm32")))]
pub mod https;
pub mod sse;

#[cfg(all(feature = "client", not(target_arch = "wasm32")))]
pub use client::{Client, Error, EventStream, Input, JobResult};
pub use events::{JobEvent, ProgressEvent};
pub use jobs::{
    EscrowProof, Job, JobList, JobState, OutputsQuery, Progress, Quote, SubmitJob, UnitOutput,
    UnitOutputs, UnitPage, UnitRun, UnitState, UnitStates, UnitSummary, Verification,
};
pub use kernels::{CustomOrigin, KernelCatalog, KernelInfo};
pub use ledger::{Account, LedgerEntry, LedgerPage, TransferRequest, WalletHistory};
pub use manifest::{CustomKernel, KernelManifest, RegisterKernel};
pub use network::{Earner, Leaderboard, MinuteRates, Stats, StatsHistory};
pub use problem::{Problem, PROBLEM_CONTENT_TYPE};
pub use rtc::{IceServer, IceServers, Sdp};
pub use sites::{Site, SiteRegistration};
pub use wallets::Wallet;

/// Where every endpoint lives, relative to the relay's base URL.
pub const API_PREFIX: &str = "/api/v1";
