//! Drawing a step's tokens from its logits, where the logits are: on the host (`live.rs`, the
//! whole `(B, V)` copied over) or as tensor ops on the model's device (`rlvr_model::draw`), where
//! only the ids, log-probs and kept sets come back. [`DrawSite`] picks; on a GPU the device draw
//! is what keeps a decode step to one host synchronisation (the sampled ids) instead of a copy of
//! every row's logits. Both draw the same ids from the same uniforms of each sample's stream.
//!
//! Rows whose request applies penalties or asks for alternatives (`top_logprobs`) are drawn on
//! the host whatever the site: both need the host's per-sample history or ordering. The device
//! draw runs once per distinct (temperature, truncation) among a step's rows, so a batch that
//! shares its settings (an RL rollout) is one call.

use super::live::Drawn;
use super::Engine;
use rlvr_model::draw::draw_rows;
use rlvr_model::sample::Truncation;
use tch::{Device, Kind, Tensor};

/// Where an engine draws its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DrawSite {
    /// On the device for a CUDA model, on the host otherwise.
    #[default]
    Auto,
    /// Every row's logits are copied to the host and drawn there.
    Host,
    /// Tensor ops on the model's device (on a CPU model: the CPU's libtorch).
    Device,
}

impl std::str::FromStr for DrawSite {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DrawSite::Auto),
            "host" => Ok(DrawSite::Host),
            "device" => Ok(DrawSite::Device),
            other => Err(format!("must be auto, host or device, got {other:?}")),
        }
    }
}

/// A draw to make: (live index, sample index, row of the logits).
pub(super) type Pick = (usize, usize, usize);

/// The rows of one device call: their picks (indices into the step's picks), temperature and
/// truncation.
struct Batch {
    members: Vec<usize>,
    temperature: f64,
    trunc: Truncation,
}

impl Engine {
    /// Whether this engine draws on the model's device.
    fn draws_on_device(&self) -> bool {
        match self.config.draw {
            DrawSite::Auto => self.model.embed_tokens.device().is_cuda(),
            DrawSite::Host => false,
            DrawSite::Device => true,
        }
    }

    /// Draws each pick's token from its row of `logits (R, V)`, in `picks` order (see the module
    /// notes). Each sample's stream advances by one uniform per sampled token wherever it is drawn.
    pub(super) fn draw(&mut self, logits: &Tensor, picks: &[Pick]) -> Vec<Drawn> {
        let mut out: Vec<Option<Drawn>> = picks.iter().map(|_| None).collect();
        let on_device = self.draws_on_device();
        let mut batches: Vec<Batch> = Vec::new();
        let mut host: Vec<usize> = Vec::new();
        for (n, &(i, _, _)) in picks.iter().enumerate() {
            let live = &self.live[i];
            if !(on_device && live.draws_on_device()) {
                host.push(n);
                continue;
            }
            let (temperature, trunc) = (live.req.sampling.temperature, live.truncation());
            match batches.iter_mut().find(|b| b.temperature == temperature && b.trunc == trunc) {
                Some(b) => b.members.push(n),
                None => batches.push(Batch { members: vec![n], temperature, trunc }),
            }
        }
        self.draw_on_host(logits, picks, &host, &mut out);
        self.draw_on_device(logits, picks, &batches, &mut out);
        out.into_iter().map(|d| d.expect("every pick is drawn")).collect()
    }

    /// The host draw of picks `which`: their rows' logits copied over once.
    fn draw_on_host(&mut self, logits: &Tensor, picks: &[Pick], which: &[usize], out: &mut [Option<Drawn>]) {
        if which.is_empty() {
            return;
        }
        let mut rows: Vec<i64> = which.iter().map(|&n| picks[n].2 as i64).collect();
        rows.sort_unstable();
        rows.dedup();
        let host = Vec::<f32>::try_from(
            self.select_rows(logits, &rows).to_kind(Kind::Float).to_device(Device::Cpu).flatten(0, -1),
        )
        .expect("f32 logits");
        let v = host.len() / rows.len();
        for &n in which {
            let (i, j, row) = picks[n];
            let at = rows.binary_search(&(row as i64)).expect("row copied above");
            out[n] = Some(self.live[i].draw(j, &host[at * v..(at + 1) * v]));
        }
    }

    /// The device draws of `batches`, brought to the host in one copy (and one more for the kept
    /// sets of requests that record them).
    fn draw_on_device(&mut self, logits: &Tensor, picks: &[Pick], batches: &[Batch], out: &mut [Option<Drawn>]) {
        if batches.is_empty() {
            return;
        }
        // Per batch one (3, B) block: ids, log-probs and kept-set sizes (0 without truncation).
        let mut parts = Vec::new();
        let mut orders = Vec::new();
        for batch in batches {
            let rows: Vec<i64> = batch.members.iter().map(|&n| picks[n].2 as i64).collect();
            let uniforms: Vec<f64> = batch
                .members
                .iter()
                .filter_map(|&n| {
                    let (i, j, _) = picks[n];
                    self.live[i].next_uniform(j)
                })
                .collect();
            let d = draw_rows(&self.select_rows(logits, &rows), batch.temperature, &batch.trunc, &uniforms);
            let sizes = d.kept.as_ref().map_or_else(|| d.logprobs.zeros_like(), |(_, s)| s.to_kind(Kind::Double));
            parts.push(Tensor::stack(&[d.ids.to_kind(Kind::Double), d.logprobs, sizes], 0).flatten(0, -1));
            orders.push(d.kept.map(|(order, _)| order));
        }
        let host = Vec::<f64>::try_from(Tensor::cat(&parts, 0).to_device(Device::Cpu)).expect("f64 draws");
        let mut at = 0;
        for (batch, order) in batches.iter().zip(orders) {
            let b = batch.members.len();
            let block = &host[at..at + 3 * b];
            at += 3 * b;
            let sizes: Vec<usize> = block[2 * b..].iter().map(|&s| s as usize).collect();
            let kept = self.kept_sets(picks, batch, order.as_ref(), &sizes);
            for (k, (&n, kept)) in batch.members.iter().zip(kept).enumerate() {
                out[n] = Some(Drawn { id: block[k] as i64, logprob: block[b + k] as f32, kept, top: None });
            }
        }
    }

    /// Each member's kept set (ascending ids) from the device's `order (B, K)` and `sizes`, copied
    /// over only when one of the batch's requests records it; empty otherwise.
    fn kept_sets(&self, picks: &[Pick], batch: &Batch, order: Option<&Tensor>, sizes: &[usize]) -> Vec<Vec<i64>> {
        let wanted: Vec<bool> = batch.members.iter().map(|&n| self.live[picks[n].0].req.return_sampling_mask).collect();
        let (Some(order), true) = (order, wanted.iter().any(|&w| w)) else {
            return batch.members.iter().map(|_| Vec::new()).collect();
        };
        let width = sizes.iter().copied().max().unwrap_or(0) as i64;
        let host = Vec::<i64>::try_from(order.narrow(1, 0, width).to_device(Device::Cpu).flatten(0, -1)).expect("ids");
        (0..batch.members.len())
            .map(|k| {
                if !wanted[k] {
                    return Vec::new();
                }
                let mut ids = host[k * width as usize..k * width as usize + sizes[k]].to_vec();
                ids.sort_unstable();
                ids
            })
            .collect()
    }

    /// Rows `rows` of `logits` (a view when they are all of them, in order).
    fn select_rows(&self, logits: &Tensor, rows: &[i64]) -> Tensor {
        if rows.len() as i64 == logits.size()[0] && rows.iter().enumerate().all(|(k, &r)| k as i64 == r) {
            return logits.shallow_clone();
        }
        logits.index_select(0, &Tensor::from_slice(rows).to_device(logits.device()))
    }
}
