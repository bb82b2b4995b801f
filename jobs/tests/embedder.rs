//! The local embedding model against the real all-MiniLM-L6-v2 files in `ENGRAM_MODEL_DIR`
//! (`scripts/test.sh` installs them; by hand:
//! `ENGRAM_MODEL_DIR=$(scripts/install-model.sh) cargo test -p jobs --test embedder`).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use jobs::embed::{DIMENSIONS, EmbedError, LocalEmbedder, MAX_TOKENS, cosine};

fn embedder() -> &'static LocalEmbedder {
    static EMBEDDER: OnceLock<LocalEmbedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| {
        let dir = std::env::var_os("ENGRAM_MODEL_DIR").map(PathBuf::from).expect(
            "ENGRAM_MODEL_DIR is not set: run `ENGRAM_MODEL_DIR=$(scripts/install-model.sh) \
             cargo test -p jobs --test embedder` (scripts/test.sh sets it)",
        );
        LocalEmbedder::load(&dir).unwrap_or_else(|err| panic!("{err}"))
    })
}

fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32) {
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= tolerance, "dim {i}: {a} vs {e} (tolerance {tolerance})\n{actual:?}");
    }
}

fn norm(vector: &[f32]) -> f32 {
    vector.iter().map(|x| x * x).sum::<f32>().sqrt()
}

#[test]
fn matches_the_sentence_transformers_reference_vectors() {
    let vectors = embedder().embed(&["This is an example sentence", "Each sentence is converted."]).unwrap();
    assert_close(
        &vectors[0][..6],
        &[0.06765693, 0.06349593, 0.04871314, 0.07930495, 0.03744806, 0.00265273],
        1e-6,
    );
    assert_close(
        &vectors[1][..6],
        &[0.07853645, 0.08856265, -0.00209270, -0.00717247, -0.01252624, 0.01881747],
        1e-6,
    );
}

#[test]
fn vectors_are_unit_length_and_384_wide() {
    let texts = ["short", "a somewhat longer sentence about memory and agents", "Grüße aus Köln 🚲 日本語"];
    for vector in embedder().embed(&texts).unwrap() {
        assert_eq!(vector.len(), DIMENSIONS);
        assert!((norm(&vector) - 1.0).abs() < 1e-5, "norm {}", norm(&vector));
        assert!(vector.iter().all(|x| x.is_finite()));
    }
}

#[test]
fn a_batch_gives_the_same_vectors_as_one_by_one() {
    // More than one internal batch, of mixed lengths, so sorting and padding are exercised.
    let texts: Vec<String> =
        (0..40).map(|i| format!("sentence number {i} {}", "with some more words ".repeat(i % 7))).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batched = embedder().embed(&texts).unwrap();
    assert_eq!(batched.len(), texts.len());
    for (text, vector) in texts.iter().zip(&batched) {
        let single = embedder().embed(&[text]).unwrap().remove(0);
        assert_close(vector, &single, 1e-5);
    }
}

#[test]
fn similar_meanings_are_closer() {
    let [jogging, running, taxes] = <[Vec<f32>; 3]>::try_from(
        embedder()
            .embed(&["I went jogging this morning", "running exercise", "quarterly tax filing"])
            .unwrap(),
    )
    .unwrap();
    let near = cosine(&jogging, &running);
    let far = cosine(&jogging, &taxes);
    assert!(near > far + 0.1, "jogging~running {near}, jogging~taxes {far}");
}

#[test]
fn inputs_longer_than_the_model_window_are_truncated() {
    let long = "memory ".repeat(MAX_TOKENS * 4);
    let truncated = "memory ".repeat(MAX_TOKENS - 2); // 256 tokens with [CLS] and [SEP]
    let vectors = embedder().embed(&[&long, &truncated]).unwrap();
    assert_eq!(vectors[0].len(), DIMENSIONS);
    assert_close(&vectors[0], &vectors[1], 1e-5);
}

#[test]
fn empty_and_blank_inputs_get_a_valid_vector() {
    let vectors = embedder().embed(&["", "   "]).unwrap();
    for vector in &vectors {
        assert_eq!(vector.len(), DIMENSIONS);
        assert!((norm(vector) - 1.0).abs() < 1e-5);
    }
    assert!(embedder().embed(&[]).unwrap().is_empty());
}

#[test]
fn query_embeddings_are_cached_and_match_embed() {
    let first = embedder().embed_query("where did I park the car").unwrap();
    let again = embedder().embed_query("where did I park the car").unwrap();
    assert!(Arc::ptr_eq(&first, &again), "the second call is answered from the cache");
    let direct = embedder().embed(&["where did I park the car"]).unwrap().remove(0);
    assert_close(&first, &direct, 1e-6);
}

#[test]
fn the_embedder_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LocalEmbedder>();
    let reference = embedder().embed(&["shared across threads"]).unwrap().remove(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            (0..2).map(|_| scope.spawn(|| embedder().embed(&["shared across threads"]).unwrap())).collect();
        for handle in handles {
            assert_close(&handle.join().unwrap()[0], &reference, 1e-6);
        }
    });
}

#[test]
fn loading_from_a_missing_dir_names_the_dir_and_the_install_script() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("all-MiniLM-L6-v2");
    let err = LocalEmbedder::load(&model_dir).err().expect("no model there");
    assert!(matches!(err, EmbedError::ModelMissing { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&model_dir.display().to_string()), "{message}");
    assert!(message.contains("scripts/install-model.sh"), "{message}");
    assert!(message.contains("model.safetensors"), "{message}");
}
