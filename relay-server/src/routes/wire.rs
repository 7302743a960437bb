//! The relay's own types as the API shows them: the one place storage rows, ledger
//! entries and catalog entries become `starling_api`'s types. Handlers answer with what
//! these return; nothing here reads or writes storage.

use crate::error::ApiError;
use crate::ledger::{AccountId, Entry, MicroCredits};
use crate::scheduler::throughput::Rates;
use crate::storage::job_queries::Counts;
use crate::storage::{self, JobRecord, UnitSummary, WalletRecord};
use starling_api as api;
use starling_protocol::{SiteOrigin, WalletAddress};
use std::collections::BTreeMap;

/// A job's record as its owner sees it.
pub fn job(record: &JobRecord) -> api::Job {
    api::Job {
        id: record.id,
        kernel: record.kernel.clone(),
        params: record.params.clone(),
        state: record.state,
        progress: api::Progress {
            units_total: record.progress.units_total,
            units_done: record.progress.units_done,
            units_leased: record.progress.units_leased,
        },
        flops: record.flops,
        quorum: record.quorum,
        error: record.error.clone(),
        created_ms: record.created_ms,
        updated_ms: record.updated_ms,
        escrow: record.escrow.as_ref().map(|escrow| api::EscrowProof {
            account: escrow.account.clone(),
            salt: escrow.salt.clone(),
        }),
        inputs_purged_ms: record.inputs_purged_ms,
        purged_ms: record.purged_ms,
    }
}

/// A unit's summary; storage's state text is one of the four the schema allows.
pub fn unit(summary: UnitSummary) -> Result<api::UnitSummary, ApiError> {
    let state = crate::storage::parse_unit_state(&summary.state)?;
    Ok(api::UnitSummary {
        index: summary.idx,
        state,
        results: summary.results,
        valid_wallets: summary.valid_wallets,
        leases_out: summary.active_leases,
    })
}

/// A kernel as the catalog describes it.
pub fn kernel(info: &starling_kernels::KernelInfo) -> api::KernelInfo {
    api::KernelInfo {
        id: info.id.to_owned(),
        version: info.version,
        description: info.description.to_owned(),
        params_schema: info.params_schema.clone(),
        inputs: info
            .inputs
            .iter()
            .map(|input| api::kernels::KernelInput {
                name: input.name.to_owned(),
                encoding: input.encoding.to_owned(),
            })
            .collect(),
        output: info.output.to_owned(),
        output_content_type: info.output_content_type.to_owned(),
        comparison: info.comparison.to_owned(),
        spot_check: info.spot_check.map(str::to_owned),
        custom: None,
    }
}

/// A registered kernel, source and all.
pub fn custom_kernel(kernel: &crate::storage::StoredKernel) -> api::CustomKernel {
    api::CustomKernel {
        id: kernel.id.clone(),
        owner: kernel.owner.clone(),
        registered_ms: kernel.registered_ms,
        suspended: kernel.suspended.clone(),
        manifest: kernel.manifest.clone(),
        source: kernel.source.clone(),
        measured: None,
    }
}

/// A ledger entry: amounts as decimal credits and as integer micro-credits, hashes and
/// the signature in hex.
pub fn ledger_entry(entry: &Entry) -> api::LedgerEntry {
    api::LedgerEntry {
        seq: entry.seq,
        time_ms: entry.time_ms,
        debit: entry.debit.to_string(),
        credit: entry.credit.to_string(),
        amount: entry.amount.to_string(),
        amount_micro: entry.amount.0,
        reason: entry.reason.to_string(),
        reference: entry.reference.clone(),
        prev_hash: hex::encode(entry.prev_hash),
        hash: hex::encode(entry.hash),
        signature: hex::encode(entry.signature.0),
    }
}

/// A wallet's standing, with its balance.
pub fn wallet(record: WalletRecord, balance: MicroCredits) -> api::Wallet {
    api::Wallet {
        balance: balance.to_string(),
        balance_micro: balance.0,
        valid_results: record.reliability.valid,
        invalid_results: record.reliability.invalid,
        error_rate: record.reliability.error_rate,
        trusted: record.reliability.trusted(),
        quarantined: record.quarantined,
        handbacks: record.handbacks,
        address: record.address,
    }
}

/// The leaderboard's `rank`th wallet (from 1).
pub fn earner(rank: u64, earner: storage::Earner) -> api::Earner {
    api::Earner {
        rank,
        address: earner.address,
        earned: earner.earned.to_string(),
        earned_micro: earner.earned.0,
        valid_results: earner.valid_results,
    }
}

/// A wallet's balance and a page of its ledger entries.
pub fn wallet_history(
    address: &WalletAddress,
    balance: MicroCredits,
    entries: &[Entry],
) -> api::WalletHistory {
    api::WalletHistory {
        address: address.to_string(),
        balance: balance.to_string(),
        balance_micro: balance.0,
        entries: entries.iter().map(ledger_entry).collect(),
    }
}

/// A submitter's account and balance.
pub fn account(id: AccountId, balance: MicroCredits) -> api::Account {
    api::Account {
        id: id.to_string(),
        balance: balance.to_string(),
        balance_micro: balance.0,
    }
}

/// A site's registration.
pub fn site(origin: &SiteOrigin, wallet: &WalletAddress, registered_ms: i64) -> api::Site {
    api::Site {
        origin: origin.as_str().to_owned(),
        wallet: wallet.to_string(),
        registered_ms,
    }
}

/// The network now: `volunteers` connected, the scheduler's rates over its window, and
/// storage's counts of jobs per state and units per kernel and state.
pub fn stats(volunteers: usize, rates: Rates, counts: Counts, ledger_seq: u64) -> api::Stats {
    let mut units_by_kernel: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (kernel, unit_state, n) in &counts.units {
        units_by_kernel
            .entry(kernel.clone())
            .or_default()
            .insert(unit_state.clone(), *n);
    }
    api::Stats {
        volunteers: volunteers as u64,
        results_per_s: rates.results_per_s,
        units_per_s: rates.units_per_s,
        gflops: rates.gflops,
        window_s: rates.window_s,
        units_queued: counts
            .units
            .iter()
            .filter(|(_, unit_state, _)| unit_state == api::UnitState::Queued.as_str())
            .map(|(_, _, n)| n)
            .sum(),
        units_by_kernel,
        jobs: counts.jobs.into_iter().collect(),
        ledger_seq,
    }
}

/// One minute of the throughput history.
pub fn minute_rates(m: crate::scheduler::throughput::MinuteRates) -> api::MinuteRates {
    api::MinuteRates {
        minutes_ago: m.minutes_ago,
        seconds: m.seconds,
        units: m.units,
        units_per_s: m.units_per_s,
        gflops: m.gflops,
    }
}
