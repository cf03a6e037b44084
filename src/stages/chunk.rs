//! `chunk`: cuts a decoded document into chunks sized for the embedding model.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::Deserialize;

use super::StageBuilder;
use crate::chunk::{chunk_text, ChunkLimits, ModelTokenizer, TokenCounter};
use crate::contracts::{ChunkedDocument, Document, DocumentChunk, DocumentOp};
use crate::core_api::{MessageContext, Payload, Record, Stage};
use crate::error::Findings;
use crate::error::{ConfigError, StageError};
use serde_inline_default::serde_inline_default;

/// Cuts each document (the output of `decode_document`) into chunks, counting tokens with the
/// embedding model's own tokenizer. A delete passes through with no chunks.
#[serde_inline_default]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkConfig {
    /// Directory of the embedding model; its `tokenizer.json` counts the tokens.
    pub model_dir: PathBuf,
    /// Most tokens per chunk, heading context and special tokens included (all-MiniLM-L6-v2
    /// reads at most 256).
    #[serde_inline_default(256)]
    pub max_tokens: usize,
    /// Tokens of the end of a chunk repeated at the start of the next one in the same section.
    #[serde_inline_default(32)]
    pub overlap_tokens: usize,
    /// Tokens the model adds to every input (`[CLS]` and `[SEP]` for BERT models).
    #[serde_inline_default(2)]
    pub special_tokens: usize,
    /// Most chunks one document may yield; a larger document is dead-lettered with the count.
    #[serde_inline_default(5_000)]
    pub max_chunks: usize,
}

impl StageBuilder for ChunkConfig {
    fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if self.max_tokens < 32 {
            errors.report(
                path,
                "max_tokens",
                format!("must be at least 32, got {}", self.max_tokens),
            );
        }
        if self.overlap_tokens * 2 > self.max_tokens {
            errors.report(
                path,
                "overlap_tokens",
                format!(
                    "must be at most half of max_tokens ({}), got {}",
                    self.max_tokens / 2,
                    self.overlap_tokens
                ),
            );
        }
        errors.require_nonzero(path, "max_chunks", self.max_chunks);
        super::check_model_files(
            &format!("{path}.model_dir"),
            &self.model_dir,
            &["tokenizer.json"],
            errors,
        );
    }

    fn build(&self) -> Result<Box<dyn Stage>, StageError> {
        let tokenizer = ModelTokenizer::from_model_dir(&self.model_dir)?;
        Ok(Box::new(ChunkStage {
            counter: Box::new(tokenizer),
            limits: ChunkLimits {
                max_tokens: self.max_tokens,
                overlap_tokens: self.overlap_tokens,
                special_tokens: self.special_tokens,
            },
            max_chunks: self.max_chunks,
        }))
    }
}

struct ChunkStage {
    counter: Box<dyn TokenCounter>,
    limits: ChunkLimits,
    max_chunks: usize,
}

impl ChunkStage {
    fn chunk(&self, document: Document) -> Result<ChunkedDocument, StageError> {
        let header = document.header;
        let chunks = match header.op {
            DocumentOp::Delete => Vec::new(),
            DocumentOp::Upsert => {
                let text = document.text.as_deref().unwrap_or_default();
                let chunks = chunk_text(text, header.title.as_deref(), self.limits, self.counter.as_ref());
                if chunks.is_empty() {
                    return Err(StageError::input("document has no text to index"));
                }
                if chunks.len() > self.max_chunks {
                    return Err(StageError::input(format!(
                        "document yields {} chunks, more than max_chunks ({})",
                        chunks.len(),
                        self.max_chunks
                    )));
                }
                chunks
                    .into_iter()
                    .map(|chunk| DocumentChunk {
                        chunk_id: format!("{}:{}:{}", header.doc_id, header.version, chunk.position),
                        position: chunk.position as u32,
                        text: chunk.text,
                        context: chunk.context,
                        token_count: chunk.token_count as u32,
                        vector: None,
                    })
                    .collect()
            }
        };
        Ok(ChunkedDocument {
            header,
            embedding_model: None,
            chunks,
        })
    }
}

#[async_trait]
impl Stage for ChunkStage {
    async fn process(&self, record: Record, _context: &MessageContext) -> Result<Vec<Record>, StageError> {
        let document: Document = record.payload.typed("a decoded document (put decode_document first)")?;
        let chunked = self.chunk(document)?;
        let payload = Payload::holding(&chunked, "chunks")?;
        Ok(vec![Record { payload, ..record }])
    }
}

// They read the downloaded models (deploy/local/models.sh): `cargo test --lib` alone needs no
// model file; scripts/test.sh turns the feature on.
#[cfg(all(test, feature = "model-files"))]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::contracts::DocumentHeader;

    fn stage(max_tokens: usize) -> ChunkStage {
        let model_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
        let tokenizer = ModelTokenizer::from_model_dir(&model_dir)
            .unwrap_or_else(|e| panic!("{e}; run deploy/local/models.sh to fetch the model"));
        ChunkStage {
            counter: Box::new(tokenizer),
            limits: ChunkLimits {
                max_tokens,
                overlap_tokens: 16,
                special_tokens: 2,
            },
            max_chunks: 100,
        }
    }

    fn document(text: &str) -> Document {
        Document {
            header: DocumentHeader {
                title: Some("Employee handbook".into()),
                ..DocumentHeader::new("acme", "handbook", DocumentOp::Upsert, 3)
            },
            text: Some(text.into()),
        }
    }

    #[test]
    fn chunks_fit_the_model_by_its_own_tokenizer_and_have_stable_ids() {
        let stage = stage(64);
        let paragraph = "Employees accrue twenty-seven days of paid leave per year, prorated for part-time contracts. \
                         Unused days carry over until April 30 of the following year, after which they lapse.";
        let text = format!("# Leave\n\n{paragraph}\n\n{paragraph}\n\n## Sick leave\n\n{paragraph}");
        let chunked = stage.chunk(document(&text)).unwrap();
        assert!(chunked.chunks.len() >= 3);
        for (index, chunk) in chunked.chunks.iter().enumerate() {
            assert_eq!(chunk.chunk_id, format!("handbook:3:{index}"));
            assert!(chunk.token_count as usize + 2 <= 64, "{chunk:?}");
            assert_eq!(chunk.token_count as usize, stage.counter.count(&chunk.text));
        }
        assert_eq!(chunked.chunks[0].context, "Employee handbook > Leave");
        assert_eq!(
            chunked.chunks.last().unwrap().context,
            "Employee handbook > Leave > Sick leave"
        );
        assert_eq!(stage.chunk(document(&text)).unwrap(), chunked, "deterministic");
    }

    #[test]
    fn the_tokenizer_counts_without_the_shipped_128_token_padding() {
        let stage = stage(256);
        assert_eq!(stage.counter.count("hello world"), 2);
        let long = "word ".repeat(300);
        assert_eq!(stage.counter.count(&long), 300, "no truncation at 128");
    }

    #[test]
    fn empty_and_oversized_documents_are_the_inputs_fault() {
        let stage = stage(64);
        let empty = stage.chunk(document("  \n\n ")).unwrap_err();
        assert_eq!(empty.reason, "document has no text to index");
        let huge = stage.chunk(document(&"Many words here. ".repeat(3000))).unwrap_err();
        assert!(huge.reason.starts_with("document yields "), "{}", huge.reason);
        assert!(huge.reason.ends_with("chunks, more than max_chunks (100)"));
    }

    #[test]
    fn a_delete_has_no_chunks() {
        let stage = stage(64);
        let mut delete = document("");
        delete.header.op = DocumentOp::Delete;
        delete.text = None;
        let chunked = stage.chunk(delete).unwrap();
        assert_eq!(chunked.header.op, DocumentOp::Delete);
        assert!(chunked.chunks.is_empty());
    }
}
