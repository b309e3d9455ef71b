//! The engine thread. The model is not `Sync`, so one dedicated thread owns the [`Engine`] and
//! everything else talks to it through channels: [`Command`]s in, [`Event`]s per request out.
//!
//! Its loop: take every waiting command (blocking only when the engine has nothing to do), abort
//! the requests whose receiver is gone (the client disconnected), run one [`Engine::step`], refresh
//! the metrics, answer queued weight updates with the version the step applied, send each streamed
//! request's new tokens ([`Event::Tokens`], from [`Engine::take_progress`]), and send the finished
//! requests ([`Event::Done`]). A weight update therefore lands between two steps, as the engine
//! requires, and a streamed token leaves as soon as the step that drew it ends.

use super::metrics::Metrics;
use crate::engine::{Engine, EngineError, MappedWeights, Progress, Request, RequestId, RequestOutput};
use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tch::Tensor;
use tokio::sync::{mpsc::UnboundedSender, oneshot};

/// What a request's caller hears back.
#[derive(Debug)]
pub enum Event {
    /// New tokens of one sample (streamed requests only, while they run).
    Tokens(Progress),
    /// The request ended (its samples may have ended by abort).
    Done(RequestOutput),
    /// The engine refused it.
    Rejected(EngineError),
}

/// What the engine thread is asked to do.
pub enum Command {
    /// Queue the requests of one HTTP request, all before the next engine step (so they are
    /// admitted together, as a colocated engine's batch is); each one's [`Event`]s go to its
    /// sender. Dropping a receiver aborts its request.
    Submit {
        /// The requests and where their events go.
        requests: Vec<(Request, UnboundedSender<Event>)>,
        /// Whether to send their tokens step by step ([`Event::Tokens`]) before their outcome.
        stream: bool,
    },
    /// Queue new weights; `reply` gets the version they are applied as, or the refusal.
    Weights {
        /// The weights.
        weights: NewWeights,
        /// The outcome.
        reply: oneshot::Sender<Result<u64, EngineError>>,
    },
    /// Abort every request in flight (the shutdown grace period ran out).
    AbortAll,
}

/// New weights for the engine, in one of its two forms.
pub enum NewWeights {
    /// Named tensors (names as the checkpoint's) with their announced
    /// [`crate::engine::checksum_of`], checked by the engine.
    Tensors(Vec<(String, Tensor)>, u64),
    /// A mapped safetensors file, its checksum already checked.
    Mapped(MappedWeights),
}

/// The handle of the engine thread; dropping every sender ends it.
pub struct Worker {
    commands: Mutex<Option<Sender<Command>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Worker {
    /// Starts the thread that owns `engine`.
    pub fn start(engine: Engine, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel();
        metrics.observe(&engine);
        let thread = std::thread::Builder::new()
            .name("rlvr-engine".into())
            .spawn(move || run(engine, rx, &metrics))
            .expect("spawning the engine thread");
        Worker { commands: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) }
    }

    /// Sends a command; false when the thread has stopped.
    pub fn send(&self, command: Command) -> bool {
        let commands = self.commands.lock().expect("worker lock");
        commands.as_ref().is_some_and(|tx| tx.send(command).is_ok())
    }

    /// Whether the thread is still running.
    pub fn is_alive(&self) -> bool {
        let thread = self.thread.lock().expect("worker lock");
        thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Closes the command channel and waits for the thread: requests still in flight are
    /// aborted and answered first. Err if the thread panicked.
    pub fn stop(&self) -> Result<(), ()> {
        self.commands.lock().expect("worker lock").take();
        let thread = self.thread.lock().expect("worker lock").take();
        thread.map_or(Ok(()), |t| t.join().map_err(|_| ()))
    }
}

/// The engine thread's loop (see the module notes).
fn run(mut engine: Engine, commands: Receiver<Command>, metrics: &Metrics) {
    let mut events: HashMap<RequestId, UnboundedSender<Event>> = HashMap::new();
    let mut replies: Vec<oneshot::Sender<Result<u64, EngineError>>> = Vec::new();
    loop {
        let first = if engine.is_idle() && replies.is_empty() {
            match commands.recv() {
                Ok(command) => Some(command),
                Err(_) => return,
            }
        } else {
            None
        };
        let mut closed = false;
        let mut pending: Vec<Command> = first.into_iter().collect();
        loop {
            match commands.try_recv() {
                Ok(command) => pending.push(command),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        for command in pending {
            handle(&mut engine, command, &mut events, &mut replies, metrics);
        }
        let gone: Vec<RequestId> =
            events.iter().filter(|(_, tx)| closed || tx.is_closed()).map(|(id, _)| *id).collect();
        for id in gone {
            if engine.abort(id) {
                metrics.count_abort();
            }
        }
        let outputs = engine.step();
        // Gauges first, so a client that reads /metrics after its answer sees this step.
        metrics.observe(&engine);
        for reply in replies.drain(..) {
            let _ = reply.send(Ok(engine.version()));
        }
        deliver(&mut engine, &mut events, outputs);
        if closed && engine.is_idle() {
            return;
        }
    }
}

/// Sends the new tokens of streamed requests still running, then the ended requests' outputs
/// (dropping their senders). A request is either running or ended, so its tokens always come
/// before its outcome.
fn deliver(engine: &mut Engine, events: &mut HashMap<RequestId, UnboundedSender<Event>>, outputs: Vec<RequestOutput>) {
    for progress in engine.take_progress() {
        if let Some(tx) = events.get(&progress.id) {
            let _ = tx.send(Event::Tokens(progress));
        }
    }
    for output in outputs {
        if let Some(tx) = events.remove(&output.id) {
            let _ = tx.send(Event::Done(output));
        }
    }
}

/// Carries out one command.
fn handle(
    engine: &mut Engine,
    command: Command,
    events: &mut HashMap<RequestId, UnboundedSender<Event>>,
    replies: &mut Vec<oneshot::Sender<Result<u64, EngineError>>>,
    metrics: &Metrics,
) {
    match command {
        Command::Submit { requests, stream } => {
            for (request, tx) in requests {
                match engine.submit(request) {
                    Ok(id) => {
                        if stream {
                            engine.watch(id);
                        }
                        events.insert(id, tx);
                    }
                    Err(e) => {
                        let _ = tx.send(Event::Rejected(e));
                    }
                }
            }
        }
        Command::Weights { weights, reply } => {
            let queued = match weights {
                NewWeights::Tensors(tensors, checksum) => engine.update_weights(&tensors, checksum),
                NewWeights::Mapped(mapped) => engine.update_weights_mapped(mapped),
            };
            match queued {
                Ok(()) => replies.push(reply),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        Command::AbortAll => {
            for id in events.keys() {
                if engine.abort(*id) {
                    metrics.count_abort();
                }
            }
        }
    }
}
