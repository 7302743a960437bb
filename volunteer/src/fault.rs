//! Test-only fault injection for the native volunteer (`volunteer --fault …`): a transport
//! wrapper that mishandles results the way a broken or dishonest volunteer would, so tests
//! can check the relay's defences against it. Nothing but tests should use it.
//!
//! It sits below the work loop, so the loop itself stays honest and identical to the
//! browser's: the wrapper reassembles each outgoing message and, for a `Result` picked at
//! `rate`, corrupts it (at random, or the same way as every other colluder), drops the
//! connection, holds it past its lease, sends it twice, or hands the unit back with
//! `Failed`.

use starling_client::{Transport, TransportError, TransportKind};
use starling_protocol::{encode_frames, Binding, LeaseId, Reassembler, ToRelay, ToVolunteer};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Largest message the wrapper reassembles in either direction.
const MAX_MESSAGE: usize = 512 * 1024 * 1024;

/// How a faulty volunteer misbehaves on a picked result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// A plausible but wrong output: one element scaled by 1.5 plus 1 (or bumped), sent
    /// on the wallet's own channel, as a cheating wallet would send it.
    Wrong,
    /// Disconnect instead of answering, leaving the lease held.
    Drop,
    /// Answer one second after the lease's deadline.
    Stall,
    /// Send the result twice.
    Duplicate,
    /// Hand the unit back at once with `Failed` instead of the result, and stay
    /// connected for the next: the quickest way to hand units back.
    Fail,
    /// A wrong output that every colluder sends alike: corrupted as [`Fault::Wrong`]
    /// does, but with picks seeded from the unit itself (kernel, parameters and input),
    /// so colluding wallets given replicas of one unit agree on the same lie. With a
    /// [`CollusionGroup`], only on units another member holds too (honest otherwise).
    Collude,
}

/// A [`Transport`] that applies a [`Fault`] to a fraction of results.
pub struct FaultyTransport<T> {
    inner: T,
    fault: Fault,
    rate: f64,
    rng: Cell<u64>,
    /// Shared by every connection of the process, so "the first result" means the
    /// process's first, not each reconnection's (which would drop forever).
    faulted: Rc<Cell<bool>>,
    outgoing: RefCell<Reassembler>,
    incoming: Reassembler,
    /// Each held lease's deadline (for `Stall`) and its unit's seed (for `Collude`).
    leases: RefCell<HashMap<LeaseId, (Instant, u64)>>,
    group: Option<CollusionGroup>,
}

/// Colluders that talk to each other out of band, as a real group would: each member
/// notes the units it is given in a shared directory, and lies about a unit only when
/// another member was given it too (so their lies agree and nothing contradicts them),
/// answering honestly otherwise, which earns the group a clean record.
#[derive(Debug, Clone)]
pub struct CollusionGroup {
    dir: std::path::PathBuf,
    member: String,
}

impl CollusionGroup {
    /// How long a member's note counts: about a lease. A unit sent again much later (a
    /// known-answer test of a settled unit) does not find its old holders.
    pub const RECENT: Duration = Duration::from_secs(30);

    /// The group meeting in `dir` (created if missing), as `member` (a name unique in
    /// the group: the wallet address).
    pub fn new(dir: std::path::PathBuf, member: String) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir, member })
    }

    /// Notes that this member was given the unit with seed `unit`.
    pub fn hold(&self, unit: u64) {
        let note = self.dir.join(format!("{unit:016x}.{}", self.member));
        if let Err(e) = std::fs::write(&note, b"") {
            tracing::warn!("collusion note {}: {e}", note.display());
        }
    }

    /// Whether another member was given the unit with seed `unit` lately.
    pub fn partner_holds(&self, unit: u64) -> bool {
        let prefix = format!("{unit:016x}.");
        let mine = format!("{prefix}{}", self.member);
        let Ok(notes) = std::fs::read_dir(&self.dir) else {
            return false;
        };
        notes.flatten().any(|note| {
            let name = note.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix)
                && name != mine
                && note
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age < Self::RECENT)
        })
    }
}

impl<T: Transport> FaultyTransport<T> {
    /// Wraps `inner`; the process's first result is always mishandled (so a test can rely
    /// on seeing the fault), each later one with probability `rate` (0 to 1). `faulted`
    /// records whether that first fault happened, across connections.
    pub fn new(inner: T, fault: Fault, rate: f64, seed: u64, faulted: Rc<Cell<bool>>) -> Self {
        Self {
            inner,
            fault,
            rate: rate.clamp(0.0, 1.0),
            rng: Cell::new(seed | 1),
            faulted,
            outgoing: RefCell::new(Reassembler::new(MAX_MESSAGE)),
            incoming: Reassembler::new(MAX_MESSAGE),
            leases: RefCell::new(HashMap::new()),
            group: None,
        }
    }

    /// Makes a `Collude` volunteer a member of `group`: it lies only on units another
    /// member holds too.
    pub fn in_group(mut self, group: Option<CollusionGroup>) -> Self {
        self.group = group;
        self
    }

    /// The wrapped transport, to close it.
    pub fn into_inner(self) -> T {
        self.inner
    }

    fn roll(&self) -> f64 {
        let mut state = self.rng.get();
        let roll = xorshift(&mut state);
        self.rng.set(state);
        roll
    }

    async fn send_message(&self, message: &ToRelay) -> Result<(), TransportError> {
        for frame in encode_frames(message) {
            self.inner.send(frame).await?;
        }
        Ok(())
    }
}

/// xorshift64*: uniform in [0, 1), advancing `state` (never zero).
fn xorshift(state: &mut u64) -> f64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
}

/// A seed that names one unit, the same in every process given it: FNV-1a over the
/// kernel, the unit's parameters and its input. Replicas of a unit (and a known-answer
/// test re-sending it) have the same seed, whichever lease carries them.
pub fn unit_seed(kernel: &str, params_json: &str, input: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for part in [kernel.as_bytes(), params_json.as_bytes(), input] {
        for &byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// The colluders' lie: [`corrupt`] with picks drawn from `unit_seed` alone, so every
/// colluder that computed the same honest output sends the same wrong one (the right
/// length, one element far outside any tolerance).
pub fn collude(output: &mut [u8], unit_seed: u64) {
    let mut state = unit_seed | 1;
    corrupt(output, || xorshift(&mut state));
}

/// Makes an output plausibly wrong: of eight 4-byte elements drawn by `picks`, the one
/// largest in magnitude as an f32 is scaled by 1.5 and pushed one further from zero
/// (so even a pixel or a probability moves by more than 1) when it is a finite non-zero float,
/// else (integer counts, zeros) the first is bumped by a random 1 to 10^6 (a zero first
/// becoming 1.0's bits).
///
/// Taking a large element makes the error far exceed any kernel's rounding tolerance: this
/// tests that wrong results are caught, not where each check's threshold lies (the kernels
/// document those; a tiny change to a tiny element can pass a one-result check such as
/// Freivalds', which is why replication exists).
pub fn corrupt(output: &mut [u8], mut picks: impl FnMut() -> f64) {
    let words = output.len() / 4;
    if words == 0 {
        if let Some(b) = output.first_mut() {
            *b ^= 1;
        }
        return;
    }
    let read = |output: &[u8], i: usize| {
        let mut word = [0u8; 4];
        word.copy_from_slice(&output[4 * i..4 * i + 4]);
        word
    };
    let candidates: Vec<usize> = (0..8)
        .map(|_| ((picks() * words as f64) as usize).min(words - 1))
        .collect();
    let largest = candidates
        .iter()
        .copied()
        .filter(|&i| f32::from_le_bytes(read(output, i)).is_normal())
        .max_by(|&a, &b| {
            let (x, y) = (
                f32::from_le_bytes(read(output, a)).abs(),
                f32::from_le_bytes(read(output, b)).abs(),
            );
            x.total_cmp(&y)
        });
    let (i, wrong) = match largest {
        Some(i) => {
            let v = f32::from_le_bytes(read(output, i));
            (i, (v * 1.5 + 1f32.copysign(v)).to_le_bytes())
        }
        None => {
            // A random bump, so two independent cheaters almost never send the same
            // wrong count (colluding ones are another threat: see validation::quorum).
            // A zero word may be a float 0.0 (a black pixel), where a small integer bump
            // would be a subnormal within any tolerance: it becomes 1.0 plus the bump.
            let i = candidates[0];
            let bump = 1 + (picks() * 1_000_000.0) as u32;
            let word = u32::from_le_bytes(read(output, i));
            let base = if word == 0 { 1f32.to_bits() } else { word };
            (i, base.wrapping_add(bump).to_le_bytes())
        }
    };
    output[4 * i..4 * i + 4].copy_from_slice(&wrong);
}

impl<T: Transport> Transport for FaultyTransport<T> {
    async fn send(&self, frame: Vec<u8>) -> Result<(), TransportError> {
        // The work loop only sends what it encoded itself; a frame that does not decode
        // would be a bug in this wrapper, so pass it on untouched.
        let decoded = self.outgoing.borrow_mut().push_message::<ToRelay>(&frame);
        let message = match decoded {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(()),
            Err(_) => return self.inner.send(frame).await,
        };
        let ToRelay::Result { lease, .. } = &message else {
            return self.send_message(&message).await;
        };
        let lease = *lease;
        let held = self.leases.borrow_mut().remove(&lease);
        if let (Fault::Collude, Some(group)) = (self.fault, &self.group) {
            if !held.is_some_and(|(_, unit)| group.partner_holds(unit)) {
                return self.send_message(&message).await;
            }
        }
        if self.faulted.get() && self.roll() >= self.rate {
            return self.send_message(&message).await;
        }
        self.faulted.set(true);
        tracing::warn!(?lease, fault = ?self.fault, "injecting a fault (test mode)");
        match self.fault {
            Fault::Wrong => {
                let mut message = message;
                if let ToRelay::Result { output, .. } = &mut message {
                    corrupt(output, || self.roll());
                }
                self.send_message(&message).await
            }
            Fault::Collude => {
                let mut message = message;
                if let ToRelay::Result { output, .. } = &mut message {
                    // A lease never assigned on this connection cannot happen; seeding
                    // from the output would still agree with other colluders.
                    let seed = held.map_or_else(|| unit_seed("", "", output), |(_, s)| s);
                    collude(output, seed);
                }
                self.send_message(&message).await
            }
            Fault::Drop => Err(TransportError::Closed),
            Fault::Stall => {
                let until = held.map_or_else(Instant::now, |(d, _)| d) + Duration::from_secs(1);
                tokio::time::sleep_until(until.into()).await;
                self.send_message(&message).await
            }
            Fault::Duplicate => {
                self.send_message(&message).await?;
                // The copy asks for no more units: only the result is duplicated.
                let mut copy = message;
                if let ToRelay::Result { more, .. } = &mut copy {
                    *more = 0;
                }
                self.send_message(&copy).await
            }
            Fault::Fail => {
                self.send_message(&ToRelay::Failed {
                    lease,
                    reason: "fault injection".into(),
                })
                .await?;
                // The result would have asked for the next units: a `Failed` cannot.
                match message {
                    ToRelay::Result { more, .. } if more > 0 => {
                        self.send_message(&ToRelay::Ready { slots: more }).await
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    async fn recv(&mut self) -> Option<Vec<u8>> {
        let frame = self.inner.recv().await?;
        // Learn each lease's deadline, for `Stall`, and its unit, for `Collude`.
        // A unit comes alone or with the verdict on the result before it.
        if let Ok(Some(ToVolunteer::Assign(a) | ToVolunteer::Ack { next: Some(a), .. })) =
            self.incoming.push_message(&frame)
        {
            let deadline = Instant::now() + Duration::from_millis(u64::from(a.deadline_ms));
            let seed = unit_seed(&a.kernel, &a.params_json, &a.input);
            if let Some(group) = &self.group {
                group.hold(seed);
            }
            self.leases.borrow_mut().insert(a.lease, (deadline, seed));
        }
        Some(frame)
    }

    fn binding(&self) -> &Binding {
        self.inner.binding()
    }

    fn kind(&self) -> TransportKind {
        self.inner.kind()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_scales_the_largest_of_its_picks_or_bumps_a_count() {
        let honest: Vec<u8> = [1.0f32, -2.0, 0.5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut wrong = honest.clone();
        let mut picks = [0.0, 0.4, 0.9].into_iter().cycle();
        corrupt(&mut wrong, || picks.next().unwrap_or(0.0));
        let values: Vec<f32> = wrong
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(values, [1.0, -4.0, 0.5]);

        let mut count = 41u64.to_le_bytes().to_vec();
        corrupt(&mut count, || 0.0);
        assert_eq!(u64::from_le_bytes(count.try_into().unwrap_or_default()), 42);
        let mut count = 41u64.to_le_bytes().to_vec();
        // Eight picks choose the element, the ninth the bump.
        let mut picks = std::iter::repeat_n(0.0, 8).chain([0.5]);
        corrupt(&mut count, || picks.next().unwrap_or(0.0));
        assert_eq!(
            u64::from_le_bytes(count.try_into().unwrap_or_default()),
            41 + 500_001
        );
    }

    /// A small job of each built-in kernel: its first unit's parameters and input.
    fn first_units() -> Vec<(&'static str, String, Vec<u8>)> {
        let floats = |count: usize, seed: u32| -> Vec<u8> {
            (0..count)
                .flat_map(|i| {
                    let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
                    (x as f32 / u32::MAX as f32 - 0.5).to_le_bytes()
                })
                .collect()
        };
        let mut matmul = starling_kernels::NamedInputs::new();
        matmul.insert("a".into(), floats(16 * 8, 1));
        matmul.insert("b".into(), floats(8 * 12, 2));
        let mut mlp = starling_kernels::NamedInputs::new();
        mlp.insert("weights".into(), floats(8 * 6 + 6 + 6 * 4 + 4, 3));
        mlp.insert("inputs".into(), floats(10 * 8, 4));
        let none = starling_kernels::NamedInputs::new();
        let jobs = [
            (
                "matmul",
                serde_json::json!({"m": 16, "k": 8, "n": 12}),
                &matmul,
            ),
            (
                "render",
                serde_json::json!({"width": 16, "height": 8, "samples_per_pixel": 2, "seed": 3}),
                &none,
            ),
            (
                "mlp",
                serde_json::json!({"layers": [8, 6, 4], "batch": 10, "output": "softmax"}),
                &mlp,
            ),
            (
                "montecarlo",
                serde_json::json!({"samples": 5000, "seed": 9}),
                &none,
            ),
        ];
        let catalog = starling_kernels::Catalog::builtin();
        jobs.into_iter()
            .map(|(id, params, inputs)| {
                let kernel = catalog.get(id).expect("a built-in kernel");
                let plan = kernel.plan(&params, inputs, 1 << 30).expect("a valid job");
                let unit = plan.units[0].clone();
                let input = kernel
                    .unit_input(&params, &plan.input, &unit)
                    .expect("the unit's input");
                (id, unit, input)
            })
            .collect()
    }

    #[test]
    fn colluders_tell_the_same_lie_about_a_unit_of_every_kernel() {
        let catalog = starling_kernels::Catalog::builtin();
        let units = first_units();
        assert_eq!(
            units.len(),
            catalog.infos().len(),
            "a kernel is not covered"
        );
        for (id, unit, input) in units {
            let kernel = catalog.get(id).expect("a built-in kernel");
            let honest = kernel.run_cpu(&unit, &input).expect("the CPU reference");
            // Two colluding processes: each hashes the assignment it was given.
            let lie = |_colluder: u32| {
                let mut output = honest.clone();
                collude(&mut output, unit_seed(id, &unit, &input));
                output
            };
            let (first, second) = (lie(1), lie(2));
            assert_eq!(first, second, "{id}: colluders disagree");
            assert_eq!(first.len(), honest.len(), "{id}: length changed");
            assert_ne!(first, honest, "{id}: nothing changed");
            kernel
                .check_output(&unit, &first)
                .expect("a plausible size");
            assert!(
                !kernel
                    .outputs_agree(&unit, &honest, &first)
                    .expect("comparable"),
                "{id}: the lie is within the kernel's tolerance"
            );
            // An independent cheater's lie is another one.
            let mut picks = [0.9, 0.1, 0.7].into_iter().cycle();
            let mut wrong = honest.clone();
            corrupt(&mut wrong, || picks.next().unwrap_or(0.0));
            assert_ne!(wrong, first, "{id}: a random lie matched the colluders'");
        }
    }

    #[test]
    fn the_unit_seed_names_the_unit() {
        let seed = unit_seed("matmul", r#"{"row_start":0}"#, &[1, 2, 3]);
        assert_eq!(seed, unit_seed("matmul", r#"{"row_start":0}"#, &[1, 2, 3]));
        assert_ne!(seed, unit_seed("matmul", r#"{"row_start":4}"#, &[1, 2, 3]));
        assert_ne!(seed, unit_seed("matmul", r#"{"row_start":0}"#, &[1, 2, 4]));
        // The separator keeps field boundaries: "ab"+"c" is not "a"+"bc".
        assert_ne!(unit_seed("ab", "c", &[]), unit_seed("a", "bc", &[]));
    }

    #[test]
    fn a_collusion_group_member_sees_units_another_member_holds() {
        let dir = std::env::temp_dir().join(format!("collusion-{}", std::process::id()));
        let a = CollusionGroup::new(dir.clone(), "a".into()).expect("a temp dir");
        let b = CollusionGroup::new(dir.clone(), "b".into()).expect("a temp dir");
        a.hold(7);
        assert!(!a.partner_holds(7), "its own note is no partner");
        assert!(b.partner_holds(7));
        assert!(!b.partner_holds(8));
        b.hold(7);
        assert!(a.partner_holds(7));
        let _ = std::fs::remove_dir_all(dir);
    }
}
