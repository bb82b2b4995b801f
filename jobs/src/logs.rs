//! Job log lines: handlers append without waiting; one task per process writes them to
//! `job_logs` in batches and only then publishes them, so a live viewer that replays the
//! table after subscribing misses nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use storage::events::{Event, EventBus};
use storage::sql::{JobStore, LogLine};
use tokio::sync::{mpsc, oneshot};

use crate::events::{JobEvent, job_topic};

/// Most lines written in one batch.
const BATCH: usize = 1000;

enum Message {
    Line(String, LogLine),
    Event(String, JobEvent),
    Flush(oneshot::Sender<()>),
}

/// Cheap handle to the process's log writer.
#[derive(Clone)]
pub struct LogWriter {
    sender: mpsc::UnboundedSender<Message>,
}

impl LogWriter {
    /// Starts the writer task; it ends when every handle is dropped.
    pub fn spawn(jobs: Arc<dyn JobStore>, events: Arc<dyn EventBus>) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(receiver, jobs, events));
        Self { sender }
    }

    pub fn append(&self, job_id: &str, line: LogLine) {
        let _ = self.sender.send(Message::Line(job_id.to_string(), line));
    }

    /// Publishes an event after every line appended before it.
    pub fn publish(&self, job_id: &str, event: JobEvent) {
        let _ = self.sender.send(Message::Event(job_id.to_string(), event));
    }

    /// Waits until every line appended before this call is stored and published.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// What to do once a batch's lines are stored, in arrival order.
enum AfterWrite {
    Publish(String, JobEvent),
    Notify(oneshot::Sender<()>),
}

async fn write_loop(
    mut receiver: mpsc::UnboundedReceiver<Message>,
    jobs: Arc<dyn JobStore>,
    events: Arc<dyn EventBus>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        let mut lines: BTreeMap<String, Vec<LogLine>> = BTreeMap::new();
        let mut after_write = Vec::with_capacity(batch.len());
        for message in batch.drain(..) {
            match message {
                Message::Line(job_id, line) => {
                    after_write.push(AfterWrite::Publish(job_id.clone(), JobEvent::Log(line.clone())));
                    lines.entry(job_id).or_default().push(line);
                }
                Message::Event(job_id, event) => after_write.push(AfterWrite::Publish(job_id, event)),
                Message::Flush(done) => after_write.push(AfterWrite::Notify(done)),
            }
        }
        for (job_id, lines) in &lines {
            if let Err(e) = jobs.append_logs(job_id, lines).await {
                tracing::error!(job_id, error = %e, lines = lines.len(), "cannot store job log lines");
            }
        }
        // One publish for the whole batch: readers order lines by seq and fill gaps from the table.
        let mut publish = Vec::new();
        let mut notify = Vec::new();
        for step in after_write {
            match step {
                AfterWrite::Publish(job_id, event) => publish.push(Event {
                    topic: job_topic(&job_id),
                    payload: serde_json::to_value(&event).expect("job events serialise"),
                }),
                AfterWrite::Notify(done) => notify.push(done),
            }
        }
        if !publish.is_empty()
            && let Err(e) = events.publish_many(publish).await
        {
            tracing::warn!(error = %e, "cannot publish job events");
        }
        for done in notify {
            let _ = done.send(());
        }
    }
}
