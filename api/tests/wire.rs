//! The types read and write the wire exactly as the relay has always spoken it.

use serde_json::json;
use starling_api::{JobEvent, JobState, Problem, SubmitJob};

#[test]
fn a_submission_sends_only_what_it_sets() {
    let plain = SubmitJob::new("montecarlo", json!({"samples": 10, "seed": 1}));
    assert_eq!(
        serde_json::to_value(&plain).ok(),
        Some(json!({"kernel": "montecarlo", "params": {"samples": 10, "seed": 1}}))
    );
    let quorum = serde_json::to_value(plain.with_quorum(3)).ok();
    assert_eq!(
        quorum.map(|v| v["verification"].clone()),
        Some(json!({"quorum": 3}))
    );
}

#[test]
fn a_submission_refuses_fields_it_does_not_know() {
    let typo = r#"{"kernel": "matmul", "params": {}, "inputs": {}}"#;
    assert!(serde_json::from_str::<SubmitJob>(typo).is_err());
}

#[test]
fn a_job_round_trips_without_inventing_absent_fields() {
    let sent = json!({
        "id": "0190f5d6-8a5e-7cc0-b1e4-1b2b3c4d5e6f",
        "kernel": "matmul",
        "params": {"m": 2, "k": 2, "n": 2},
        "state": "running",
        "progress": {"units_total": 4, "units_done": 1, "units_leased": 2},
        "flops": 32,
        "quorum": 2,
        "created_ms": 1,
        "updated_ms": 2,
    });
    let job: starling_api::Job = serde_json::from_value(sent.clone()).expect("a job");
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.error, None);
    assert_eq!(serde_json::to_value(&job).ok(), Some(sent));
}

#[test]
fn job_events_decode_by_their_name() {
    let progress = JobEvent::parse(
        "progress",
        r#"{"state":"running","units_total":4,"units_done":1,"units_leased":2,"flops":32,"updated_ms":2}"#,
    );
    assert!(matches!(progress, Ok(JobEvent::Progress(p)) if p.units_done == 1));
    assert!(matches!(
        JobEvent::parse("error", "job no longer exists"),
        Ok(JobEvent::Error(text)) if text == "job no longer exists"
    ));
    assert!(JobEvent::parse("progress", "{}").is_err());
    assert!(JobEvent::parse("message", "{}").is_err());
}

#[test]
fn job_states_use_their_wire_names_and_align_in_tables() {
    for state in JobState::ALL {
        assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        assert_eq!(
            serde_json::to_value(state).ok(),
            Some(json!(state.as_str()))
        );
    }
    assert!("paused".parse::<JobState>().is_err());
    assert_eq!(format!("[{:<9}]", JobState::Done), "[done     ]");
}

#[test]
fn a_problem_is_one_line_naming_its_field() {
    let problem: Problem = serde_json::from_value(json!({
        "type": "/problems/invalid-value",
        "title": "Invalid value",
        "status": 422,
        "detail": "unknown kernel `fft`",
        "field": "kernel",
    }))
    .expect("a problem");
    assert_eq!(
        problem.to_string(),
        "422 Invalid value: unknown kernel `fft` (field kernel)"
    );
    let without: Problem = serde_json::from_value(json!({
        "type": "/problems/not-found",
        "title": "Not found",
        "status": 404,
        "detail": "no such API endpoint",
    }))
    .expect("a problem without a field");
    assert_eq!(
        serde_json::to_value(&without)
            .ok()
            .map(|v| v.get("field").is_none()),
        Some(true)
    );
}

#[test]
fn a_unit_map_is_runs_of_one_state_that_expand_back_in_order() {
    use starling_api::{UnitRun, UnitState, UnitStates};
    let states = [
        UnitState::Done,
        UnitState::Done,
        UnitState::Leased,
        UnitState::Done,
        UnitState::Queued,
        UnitState::Queued,
        UnitState::Queued,
    ];
    let map: UnitStates = states.into_iter().collect();
    assert_eq!(map.runs.len(), 4);
    assert_eq!(
        map.runs[0],
        UnitRun {
            state: UnitState::Done,
            count: 2
        }
    );
    assert_eq!(map.units(), 7);
    assert_eq!(map.states().collect::<Vec<_>>(), states);
    let wire = serde_json::to_value(&map).unwrap_or_default();
    assert_eq!(
        wire["runs"][2],
        serde_json::json!({"state": "done", "count": 1})
    );
    // A 100,000-unit job half done is two runs, not 100,000 entries.
    let big: UnitStates = (0..100_000)
        .map(|i| {
            if i < 50_000 {
                UnitState::Done
            } else {
                UnitState::Queued
            }
        })
        .collect();
    assert!(
        serde_json::to_string(&big)
            .map(|s| s.len())
            .unwrap_or(usize::MAX)
            < 100
    );
}
