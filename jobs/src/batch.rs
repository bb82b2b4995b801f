//! Coalescing many concurrent single calls into batch calls. Each call waits on a oneshot;
//! one task takes every request waiting (up to a maximum), runs the batch function once, and
//! answers each caller. Idle, a lone call runs at once; busy, calls queue up behind the
//! running batch and go together in the next, so one statement serves many jobs.

use std::future::Future;

use storage::StoreResult;
use tokio::sync::{mpsc, oneshot};

type Request<I, O> = (I, oneshot::Sender<Result<O, String>>);

/// A handle to a running batch loop; cheap to clone. The loop ends when every handle is dropped.
pub struct Batcher<I, O> {
    sender: mpsc::UnboundedSender<Request<I, O>>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self { sender: self.sender.clone() }
    }
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the loop. `run` gets up to `max` requests in arrival order and must answer with
    /// one output per request, in the same order.
    pub fn spawn<F, Fut>(max: usize, run: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = StoreResult<Vec<O>>> + Send,
    {
        let (sender, mut receiver) = mpsc::unbounded_channel::<Request<I, O>>();
        tokio::spawn(async move {
            let mut waiting = Vec::with_capacity(max);
            while receiver.recv_many(&mut waiting, max).await > 0 {
                let (inputs, replies): (Vec<I>, Vec<_>) = waiting.drain(..).unzip();
                let count = inputs.len();
                match run(inputs).await {
                    Ok(outputs) if outputs.len() == count => {
                        for (reply, output) in replies.into_iter().zip(outputs) {
                            let _ = reply.send(Ok(output));
                        }
                    }
                    Ok(outputs) => {
                        let error = format!("a batch of {count} gave {} answers", outputs.len());
                        for reply in replies {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                    Err(e) => {
                        let error = e.to_string();
                        for reply in replies {
                            let _ = reply.send(Err(error.clone()));
                        }
                    }
                }
            }
        });
        Self { sender }
    }

    /// Runs `input` in the next batch and returns its output.
    pub async fn call(&self, input: I) -> anyhow::Result<O> {
        let (reply, answer) = oneshot::channel();
        self.sender.send((input, reply)).map_err(|_| anyhow::anyhow!("the batch loop has stopped"))?;
        let output = answer.await.map_err(|_| anyhow::anyhow!("the batch loop dropped a request"))?;
        output.map_err(|e| anyhow::anyhow!(e))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_calls_share_batches_and_get_their_own_answers() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = batches.clone();
        let doubler = Batcher::spawn(64, move |inputs: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                Ok(inputs.into_iter().map(|i| i * 2).collect())
            }
        });
        let calls = (0..500u32).map(|i| {
            let doubler = doubler.clone();
            tokio::spawn(async move { (i, doubler.call(i).await.unwrap()) })
        });
        for call in futures::future::join_all(calls).await {
            let (input, output) = call.unwrap();
            assert_eq!(output, input * 2);
        }
        let batches = batches.load(Ordering::SeqCst);
        assert!((8..100).contains(&batches), "500 calls went in {batches} batches of at most 64");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_calls() {
        let failing = Batcher::spawn(8, |_: Vec<u32>| async {
            Err::<Vec<u32>, _>(storage::StoreError::backend("test", anyhow::anyhow!("disk on fire")))
        });
        let error = failing.call(1).await.unwrap_err();
        assert!(error.to_string().contains("disk on fire"), "{error}");
        let short = Batcher::spawn(8, |_: Vec<u32>| async { Ok(Vec::<u32>::new()) });
        assert!(short.call(1).await.unwrap_err().to_string().contains("gave 0 answers"));
    }
}
