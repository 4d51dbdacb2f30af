//! The notes, loaded once at start-up from the scenario's JSON file into two
//! read-only indexes: title -> note and mail -> notes (in file order).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::pb;

/// One entry of `notes.json`.
#[derive(Debug, Deserialize)]
struct NoteRecord {
    title: String,
    content: String,
    author: AuthorRecord,
}

#[derive(Debug, Deserialize)]
struct AuthorRecord {
    nickname: String,
    mail: String,
}

impl From<NoteRecord> for pb::Note {
    fn from(record: NoteRecord) -> Self {
        pb::Note {
            title: record.title,
            content: record.content,
            author: Some(pb::Author {
                nickname: record.author.nickname,
                mail: record.author.mail,
            }),
        }
    }
}

/// Why the notes file could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    Io(std::io::Error),
    Json(serde_json::Error),
    DuplicateTitle(String),
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Io(e) => Some(e),
            LoadError::Json(e) => Some(e),
            LoadError::DuplicateTitle(_) => None,
        }
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Io(e) => write!(f, "cannot read notes file: {e}"),
            LoadError::Json(e) => write!(f, "invalid notes file: {e}"),
            LoadError::DuplicateTitle(t) => write!(f, "duplicate title in notes file: {t:?}"),
        }
    }
}

/// Read-only, shared between all connections.
#[derive(Debug, Default)]
pub struct NoteStore {
    by_title: HashMap<String, pb::Note>,
    by_mail: HashMap<String, Arc<[pb::Note]>>,
}

impl NoteStore {
    /// Loads and indexes the notes file.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let file = File::open(path).map_err(LoadError::Io)?;
        let records: Vec<NoteRecord> =
            serde_json::from_reader(BufReader::new(file)).map_err(LoadError::Json)?;
        Self::from_notes(records.into_iter().map(pb::Note::from))
    }

    /// Builds the indexes; `notes` must be in file order.
    pub fn from_notes(notes: impl IntoIterator<Item = pb::Note>) -> Result<Self, LoadError> {
        let mut by_title = HashMap::new();
        let mut by_mail: HashMap<String, Vec<pb::Note>> = HashMap::new();
        for note in notes {
            let mail = note
                .author
                .as_ref()
                .map(|a| a.mail.clone())
                .unwrap_or_default();
            by_mail.entry(mail).or_default().push(note.clone());
            if let Some(previous) = by_title.insert(note.title.clone(), note) {
                return Err(LoadError::DuplicateTitle(previous.title));
            }
        }
        Ok(NoteStore {
            by_title,
            by_mail: by_mail
                .into_iter()
                .map(|(k, v)| (k, Arc::from(v)))
                .collect(),
        })
    }

    pub fn by_title(&self, title: &str) -> Option<&pb::Note> {
        self.by_title.get(title)
    }

    /// The author's notes in file order (shared, so a stream can hold them
    /// without copying the list).
    pub fn by_mail(&self, mail: &str) -> Option<Arc<[pb::Note]>> {
        self.by_mail.get(mail).cloned()
    }

    pub fn len(&self) -> usize {
        self.by_title.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_title.is_empty()
    }

    pub fn authors(&self) -> usize {
        self.by_mail.len()
    }
}
