//! The engine's KV cache sized from the memory its device has. The cache is allocated once, every
//! slot at full length ([`KvCache::bytes`]: ~101 KB a token for V3.2, so 512 slots × 9K tokens
//! would be ~480 GB), so before allocating it the engine compares its bytes with what the device
//! can still give ([`rlvr_model::device::available_bytes`]: free CUDA memory, or the host's
//! `MemAvailable`), less a tenth kept as a working margin for the forwards. The weights are
//! resident by then, so the figure already leaves them room.
//!
//! When the configured slots do not fit: a slot count the user set is refused, with an error that
//! names the setting, the numbers and what does fit; a default is lowered to the slots that fit
//! (said on stderr), as long as that leaves the fewest the caller needs (its largest request's `n`).
//!
//! Left out: paging (a slot's cache is its full length from the start), and room for what else
//! will share the device later (a colocated trainer's step: `rlvr plan` prices the two together).

use super::error::EngineError;
use rlvr_model::{KvCache, ModelConfig};
use tch::Kind;

/// How an engine's slot count meets the memory of its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sizing {
    /// The slot count is the user's own setting: refused when its cache does not fit. Otherwise
    /// it is a default, lowered to what fits.
    pub explicit: bool,
    /// The fewest slots the caller can work with (its largest request's `n`).
    pub min_slots: usize,
    /// The slot setting as the user spells it (`--slots`, `rollout.slots`), for messages.
    pub slots_field: &'static str,
    /// The length setting as the user spells it (`--max-seq-len`, `rollout.max_tokens`).
    pub length_field: &'static str,
    /// Bytes the device can still give; `None` asks the device when the engine is built (tests
    /// give a figure).
    pub available: Option<u64>,
}

impl Sizing {
    /// A slot count the user set, named `slots_field`, with a length named `length_field`.
    pub fn explicit(slots_field: &'static str, length_field: &'static str) -> Self {
        Sizing { explicit: true, min_slots: 1, slots_field, length_field, available: None }
    }

    /// A default slot count, lowered to what fits but not below `min_slots`.
    pub fn default_slots(min_slots: usize, slots_field: &'static str, length_field: &'static str) -> Self {
        Sizing { explicit: false, min_slots: min_slots.max(1), slots_field, length_field, available: None }
    }
}

/// The share of the available memory kept out of the cache's reach: 1/`MARGIN_DIVISOR`.
pub const MARGIN_DIVISOR: u64 = 10;

/// The slots of `capacity` tokens the engine allocates for a configured `slots` (see the module
/// notes): `slots` when the cache fits `available` (or when that is unknown), fewer for a default
/// that does not, else the error.
pub fn fit_slots(
    cfg: &ModelConfig,
    kind: Kind,
    slots: usize,
    capacity: usize,
    sizing: &Sizing,
    available: Option<u64>,
) -> Result<usize, EngineError> {
    let Some(available) = available else { return Ok(slots) };
    let budget = available - available / MARGIN_DIVISOR;
    let per_slot = KvCache::bytes(cfg, 1, capacity, kind).max(1);
    let fit = (budget / per_slot) as usize;
    if fit >= slots {
        return Ok(slots);
    }
    let refuse = |wanted: usize, fix: String| EngineError::CacheDoesNotFit {
        slots: wanted,
        length: capacity,
        need: per_slot * wanted as u64,
        budget,
        available,
        fix,
    };
    let (slots_field, length_field) = (sizing.slots_field, sizing.length_field);
    if sizing.explicit {
        let fix = match fit {
            0 => format!("not one slot fits: lower {length_field}, or free memory on the device"),
            n => format!("set {slots_field} to at most {n}, or lower {length_field}"),
        };
        return Err(refuse(slots, fix));
    }
    if fit < sizing.min_slots {
        let fix = format!(
            "{} slot(s) fit, fewer than the {} a request needs: lower {length_field} or the samples per request",
            fit, sizing.min_slots
        );
        return Err(refuse(sizing.min_slots, fix));
    }
    eprintln!(
        "rollout engine: {fit} slots of {capacity} tokens instead of the default {slots} ({slots_field}): the cache of {slots} would need {}, and {} of the {} free on the device are left for it (a tenth is the working margin)",
        show(per_slot * slots as u64),
        show(budget),
        show(available)
    );
    Ok(fit)
}

/// Bytes in GiB, as the messages show them.
pub(crate) fn show(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}
