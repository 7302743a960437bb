//! A PostgreSQL group's work leases drawn together: each drawn as alone, leaving out the
//! units drawn before it in the group, and all of them written with one statement per
//! table (see [`many_rows`](crate::storage::many_rows)).
//!
//! Why: a lease was a draw and two writes (the unit's state, the lease's row); the writes
//! are two statements for the whole group here. Leaving out the units drawn before keeps
//! every draw's view exact without the writes: such a unit is the only one the rows not
//! yet written could change. A lease that finds nothing but those units is left to be
//! drawn alone after the others, on a view that then includes them (so a unit's second
//! replica can still go out in the same group).

use super::{load_drawn_unit, Leasing, WorkLease};
use crate::lifecycle::lease::{decide_work_lease, LeaseDecision};
use crate::storage::many_rows::{write_rows, Param};
use crate::storage::sql::{params, Db};
use crate::storage::{now_ms, StorageError};
use std::collections::BTreeSet;

/// Draws the leases of `leasings` that it can, writes them, and sets their outcomes; says
/// which it drew (the others are left to be drawn alone). An error leaves the transaction
/// to be rolled back.
pub(in crate::storage) fn lease_together(
    db: &dyn Db,
    leasings: &mut [(usize, &mut Leasing)],
) -> Result<Vec<bool>, StorageError> {
    let mut drawn: Vec<String> = Vec::new();
    let mut units: Vec<Vec<Param<'_>>> = Vec::new();
    let mut leases: Vec<Vec<Param<'_>>> = Vec::new();
    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut outcomes: Vec<Option<WorkLease>> = (0..leasings.len()).map(|_| None).collect();
    for (n, (_, leasing)) in leasings.iter().enumerate() {
        let request = &leasing.request;
        let wallet = request.wallet.to_string();
        let excluding = drawn.join(" ");
        let Some((row, wanted, outstanding)) =
            load_drawn_unit(db, request, &wallet, Some(&excluding))?
        else {
            if drawn.is_empty() {
                outcomes[n] = Some(WorkLease::Done(None));
            }
            continue;
        };
        let lease = match decide_work_lease(
            &row.drawn(wanted, outstanding),
            &leasing.quorums,
            &request.terms,
        ) {
            LeaseDecision::NeedsQuorum { kernel, job_quorum } => {
                outcomes[n] = Some(WorkLease::NeedsQuorum(kernel, job_quorum));
                continue;
            }
            LeaseDecision::Lease(lease) => lease,
        };
        if lease.update_unit {
            units.push(vec![
                Param::Text(row.id.clone()),
                Param::Int(Some(lease.quorum)),
                Param::Int(Some(lease.wanted)),
                Param::Int(Some(i64::from(lease.leased))),
            ]);
        }
        leases.push(vec![
            Param::Text(request.lease.to_string()),
            Param::Text(row.id.clone()),
            Param::Text(request.peer.to_string()),
            Param::Text(wallet),
            request
                .site
                .map_or(Param::Null, |s| Param::Text(s.to_string())),
            Param::Int(Some(request.terms.start_ms)),
            Param::Int(Some(lease.deadline_ms)),
            request
                .network
                .map_or(Param::Null, |n| Param::Text(n.to_string())),
            Param::Text(leasing.relay.to_string()),
        ]);
        if lease.starts_job {
            started.insert(row.job_id.clone());
        }
        drawn.push(row.id.clone());
        outcomes[n] = Some(WorkLease::Done(Some(row.leased(
            request.lease,
            lease.deadline_ms,
            false,
        )?)));
    }
    write_rows(
        db,
        &units,
        &[],
        "UPDATE units SET quorum = v.quorum, wanted = v.wanted,
             state = CASE WHEN v.leased = 1 THEN 'leased' ELSE units.state END
         FROM (VALUES {}) AS v (id, quorum, wanted, leased) WHERE units.id = v.id",
        &["text", "bigint", "bigint", "bigint"],
    )?;
    write_rows(
        db,
        &leases,
        &[],
        "INSERT INTO leases (id, unit_id, peer, wallet, site, kind, state, issued_ms,
                             deadline_ms, network, relay)
         SELECT v.id, v.unit_id, v.peer, v.wallet, v.site, 'work', 'active',
                v.issued_ms, v.deadline_ms, v.network, v.relay
         FROM (VALUES {}) AS v (id, unit_id, peer, wallet, site, issued_ms, deadline_ms,
                                network, relay)",
        &[
            "text", "text", "text", "text", "text", "bigint", "bigint", "text", "text",
        ],
    )?;
    if !started.is_empty() {
        let started: Vec<&str> = started.iter().map(String::as_str).collect();
        db.write(
            "UPDATE jobs SET state = 'running', updated_ms = ?1
             WHERE state = 'queued' AND id = ANY(string_to_array(?2, ' '))",
            params![now_ms(), started.join(" ")],
        )?;
    }
    let mut answered = vec![false; leasings.len()];
    for (n, outcome) in outcomes.into_iter().enumerate() {
        if let Some(outcome) = outcome {
            leasings[n].1.reply.set(Ok(outcome));
            answered[n] = true;
        }
    }
    Ok(answered)
}
