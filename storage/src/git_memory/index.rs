//! A user's tantivy index of memory blocks, kept in a directory of its own: BM25 with English
//! stemming and stop words, each hit's score multiplied by its block's strength. Files are
//! re-indexed whole when they change; a rebuild reads every file again. Writers are opened
//! per change and dropped after the commit, so an idle index holds no writer memory (and
//! tantivy's lock file keeps two processes from writing at once).

use std::path::Path;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
    TokenStream,
};
use tantivy::{
    DocId, Index, IndexReader, IndexWriter, ReloadPolicy, Score, SegmentReader, TantivyDocument, Term,
};

use super::blocks::{Block, Strength, parse_blocks};
use crate::error::{StoreError, StoreResult};

/// Most hits one search returns.
pub const MAX_K: usize = 100;
/// How long taking the writer waits for a busy lock.
const WRITER_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
const TOKENIZER: &str = "engram_en";
/// tantivy's smallest writer budget.
const WRITER_BUDGET: usize = 15_000_000;

fn tantivy_error(e: impl Into<anyhow::Error>) -> StoreError {
    StoreError::backend("tantivy", e)
}

#[derive(Clone, Copy)]
struct Fields {
    file: Field,
    entity: Field,
    ordinal: Field,
    heading: Field,
    text: Field,
    always_load: Field,
    strength: Field,
    tokens: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text_options = TextOptions::default().set_stored().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        file: builder.add_text_field("file", STRING | STORED),
        entity: builder.add_text_field("entity", STRING | STORED),
        ordinal: builder.add_u64_field("ordinal", STORED),
        heading: builder.add_text_field("heading", STORED),
        text: builder.add_text_field("text", text_options),
        always_load: builder.add_bool_field("always_load", STORED | INDEXED),
        strength: builder.add_f64_field("strength", FAST | STORED),
        tokens: builder.add_u64_field("tokens", FAST | STORED),
    };
    (builder.build(), fields)
}

fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(StopWordFilter::new(Language::English).expect("tantivy has English stop words"))
        .filter(Stemmer::new(Language::English))
        .build()
}

/// A block found by a search, with where it lives.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    /// Path of the file in the repo, e.g. `memories/people/mom.md`.
    pub file: String,
    /// The file's name without `.md`.
    pub entity: String,
    pub ordinal: u64,
    pub heading: Option<String>,
    pub text: String,
    pub always_load: bool,
    pub strength: Strength,
    /// BM25 × strength weight.
    pub score: f32,
}

/// What `/repos/status` reports of an index.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct IndexStats {
    pub total_blocks: u64,
    /// Whitespace-separated words per block, on average.
    pub avg_tokens: f64,
}

/// One change to the indexed files.
pub enum FileChange<'a> {
    /// The file's current content: its blocks replace whatever was indexed for it.
    Upsert {
        file: &'a str,
        markdown: &'a str,
    },
    Remove {
        file: &'a str,
    },
}

pub struct BlockIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
}

/// `memories/people/mom.md` → `mom`.
pub fn entity_of(file: &str) -> &str {
    let name = file.rsplit('/').next().unwrap_or(file);
    name.strip_suffix(".md").unwrap_or(name)
}

impl BlockIndex {
    /// Opens the index in `dir`, creating it when there is none.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(dir).map_err(tantivy_error)?;
        let (schema, fields) = schema();
        let directory = tantivy::directory::MmapDirectory::open(dir).map_err(tantivy_error)?;
        let index = Index::open_or_create(directory, schema).map_err(tantivy_error)?;
        index.tokenizers().register(TOKENIZER, analyzer());
        let reader =
            index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(tantivy_error)?;
        Ok(Self { index, reader, fields })
    }

    /// The index's one writer. Its lock file is `flock`ed, and a child process spawned at the
    /// wrong moment holds a copy of the descriptor until it `exec`s, so a lock found busy is
    /// tried again for a while before giving up.
    fn writer(&self) -> StoreResult<IndexWriter> {
        let deadline = std::time::Instant::now() + WRITER_LOCK_WAIT;
        loop {
            match self.index.writer_with_num_threads(1, WRITER_BUDGET) {
                Err(tantivy::TantivyError::LockFailure(..)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return other.map_err(tantivy_error),
            }
        }
    }

    fn add_file(&self, writer: &IndexWriter, file: &str, blocks: &[Block]) -> StoreResult<()> {
        let f = self.fields;
        for block in blocks {
            let mut doc = TantivyDocument::default();
            doc.add_text(f.file, file);
            doc.add_text(f.entity, entity_of(file));
            doc.add_u64(f.ordinal, block.ordinal as u64);
            if let Some(heading) = &block.heading {
                doc.add_text(f.heading, heading);
            }
            doc.add_text(f.text, &block.text);
            doc.add_bool(f.always_load, block.always_load);
            doc.add_f64(f.strength, block.strength.weight());
            doc.add_u64(f.tokens, block.text.split_whitespace().count() as u64);
            writer.add_document(doc).map_err(tantivy_error)?;
        }
        Ok(())
    }

    fn commit(&self, mut writer: IndexWriter) -> StoreResult<()> {
        writer.commit().map_err(tantivy_error)?;
        writer.wait_merging_threads().map_err(tantivy_error)?;
        self.reader.reload().map_err(tantivy_error)
    }

    /// Re-indexes the changed files in one commit.
    pub fn apply(&self, changes: &[FileChange<'_>]) -> StoreResult<()> {
        let writer = self.writer()?;
        for change in changes {
            match change {
                FileChange::Upsert { file, markdown } => {
                    writer.delete_term(Term::from_field_text(self.fields.file, file));
                    self.add_file(&writer, file, &parse_blocks(markdown))?;
                }
                FileChange::Remove { file } => {
                    writer.delete_term(Term::from_field_text(self.fields.file, file));
                }
            }
        }
        self.commit(writer)
    }

    /// Replaces the whole index with the blocks of `files` (path, markdown).
    pub fn rebuild<'a>(
        &self,
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> StoreResult<IndexStats> {
        let writer = self.writer()?;
        writer.delete_all_documents().map_err(tantivy_error)?;
        for (file, markdown) in files {
            self.add_file(&writer, file, &parse_blocks(markdown))?;
        }
        self.commit(writer)?;
        self.stats()
    }

    /// The `k` best blocks for `query` (1 ≤ k ≤ `MAX_K`); blocks that match nothing are never
    /// returned, so there may be fewer.
    pub fn search(&self, query: &str, k: usize) -> StoreResult<Vec<Hit>> {
        if !(1..=MAX_K).contains(&k) {
            return Err(StoreError::InvalidKey(format!("k must be from 1 to {MAX_K}")));
        }
        // The query's words, analysed as the blocks were; no query syntax, so `*` or `text:x`
        // are words like any other, and a query of stop words alone matches nothing.
        let mut words = std::collections::BTreeSet::new();
        let mut analyzer = analyzer();
        let mut stream = analyzer.token_stream(query);
        while stream.advance() {
            words.insert(stream.token().text.clone());
        }
        if words.is_empty() {
            return Ok(Vec::new());
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = words
            .into_iter()
            .map(|word| {
                let term = Term::from_field_text(self.fields.text, &word);
                (
                    Occur::Should,
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)) as Box<dyn Query>,
                )
            })
            .collect();
        let parsed = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let weighted = TopDocs::with_limit(k).tweak_score(|segment: &SegmentReader| {
            let strength = segment
                .fast_fields()
                .f64("strength")
                .map(|column| column.first_or_default_col(1.0))
                .expect("the strength field is a fast f64 field");
            move |doc: DocId, score: Score| score * strength.get_val(doc) as Score
        });
        let found = searcher.search(&parsed, &weighted).map_err(tantivy_error)?;
        found
            .into_iter()
            .filter(|(score, _)| *score > 0.0)
            .map(|(score, address)| {
                let doc: TantivyDocument = searcher.doc(address).map_err(tantivy_error)?;
                Ok(self.hit(&doc, score))
            })
            .collect()
    }

    fn hit(&self, doc: &TantivyDocument, score: f32) -> Hit {
        let f = self.fields;
        let text = |field| doc.get_first(field).and_then(|v| v.as_str()).map(str::to_string);
        let weight = doc.get_first(f.strength).and_then(|v| v.as_f64()).unwrap_or(1.0);
        Hit {
            file: text(f.file).unwrap_or_default(),
            entity: text(f.entity).unwrap_or_default(),
            ordinal: doc.get_first(f.ordinal).and_then(|v| v.as_u64()).unwrap_or_default(),
            heading: text(f.heading),
            text: text(f.text).unwrap_or_default(),
            always_load: doc.get_first(f.always_load).and_then(|v| v.as_bool()).unwrap_or(false),
            strength: if weight >= 1.5 {
                Strength::High
            } else if weight >= 1.2 {
                Strength::Medium
            } else {
                Strength::Low
            },
            score,
        }
    }

    /// Makes what other processes committed to this index visible to searches.
    pub fn reload(&self) -> StoreResult<()> {
        self.reader.reload().map_err(tantivy_error)
    }

    /// How many blocks are indexed and their average length.
    pub fn stats(&self) -> StoreResult<IndexStats> {
        let searcher = self.reader.searcher();
        let mut total_blocks = 0u64;
        let mut total_tokens = 0u64;
        for segment in searcher.segment_readers() {
            let tokens = segment.fast_fields().u64("tokens").map_err(tantivy_error)?.first_or_default_col(0);
            for doc in segment.doc_ids_alive() {
                total_blocks += 1;
                total_tokens += tokens.get_val(doc);
            }
        }
        let avg_tokens = if total_blocks == 0 { 0.0 } else { total_tokens as f64 / total_blocks as f64 };
        Ok(IndexStats { total_blocks, avg_tokens })
    }

    /// Every core (`[ALWAYS_LOAD]`) block of `file`, in file order.
    pub fn always_load_blocks(&self, file: &str) -> StoreResult<Vec<Hit>> {
        let searcher = self.reader.searcher();
        let query = TermQuery::new(Term::from_field_text(self.fields.file, file), IndexRecordOption::Basic);
        let found =
            searcher.search(&query, &TopDocs::with_limit(10_000).order_by_score()).map_err(tantivy_error)?;
        let mut hits: Vec<Hit> = found
            .into_iter()
            .map(|(_, address)| searcher.doc(address).map(|doc: TantivyDocument| self.hit(&doc, 0.0)))
            .collect::<Result<_, _>>()
            .map_err(tantivy_error)?;
        hits.retain(|hit| hit.always_load);
        hits.sort_by_key(|hit| hit.ordinal);
        Ok(hits)
    }
}
