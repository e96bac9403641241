//! Where the index lives on disk: generations of the index side by side, and a `CURRENT` file
//! naming the one in use. `tripline reindex` builds a new generation while the old one keeps
//! answering, then switches `CURRENT` in one atomic rename; indexers and APIs (in any process)
//! notice the switch and move over. The generation before the current one is kept, so a reader
//! still on it keeps working until it moves; older ones are removed at the next switch.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::{IndexError, IndexResult, TripIndex};

/// The file naming the generation in use.
const CURRENT: &str = "CURRENT";
/// Generation folders are `gen-` and a number.
const PREFIX: &str = "gen-";

fn io_error(what: &str, path: &Path, error: std::io::Error) -> IndexError {
    IndexError::Tantivy { detail: format!("{what} {}: {error}", path.display()) }
}

/// The folder holding the index generations.
#[derive(Clone, Debug)]
pub struct IndexHome {
    dir: PathBuf,
}

impl IndexHome {
    /// The index home in `dir` (created when missing).
    pub fn open(dir: &Path) -> IndexResult<IndexHome> {
        std::fs::create_dir_all(dir).map_err(|e| io_error("creating", dir, e))?;
        Ok(IndexHome { dir: dir.to_owned() })
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The generation in use (`gen-1` for a new home).
    pub fn current(&self) -> IndexResult<String> {
        let path = self.dir.join(CURRENT);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let name = text.trim();
                if generation_number(name).is_none() {
                    return Err(IndexError::Tantivy {
                        detail: format!("{}: no generation in {name:?}", path.display()),
                    });
                }
                Ok(name.to_owned())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(format!("{PREFIX}1")),
            Err(e) => Err(io_error("reading", &path, e)),
        }
    }

    /// Opens (or creates) a generation.
    pub fn open_generation(&self, name: &str) -> IndexResult<TripIndex> {
        TripIndex::open_or_create(&self.dir.join(name))
    }

    /// Creates a new, empty generation numbered after every existing one, for a rebuild. Two
    /// rebuilds at once each get their own.
    pub fn create_next(&self) -> IndexResult<(String, TripIndex)> {
        let mut next = self.generations()?.into_iter().map(|(n, _)| n).max().unwrap_or(0).max(1) + 1;
        loop {
            let name = format!("{PREFIX}{next}");
            let path = self.dir.join(&name);
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok((name.clone(), self.open_generation(&name)?)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => next += 1,
                Err(e) => return Err(io_error("creating", &path, e)),
            }
        }
    }

    /// Makes `name` the generation in use (an atomic rename of `CURRENT`), then removes the
    /// generations older than the one it replaces.
    pub fn switch_to(&self, name: &str) -> IndexResult<()> {
        let previous = self.current()?;
        let tmp = self.dir.join(format!("{CURRENT}.tmp"));
        let path = self.dir.join(CURRENT);
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp).map_err(|e| io_error("writing", &tmp, e))?;
            file.write_all(format!("{name}\n").as_bytes()).map_err(|e| io_error("writing", &tmp, e))?;
            file.sync_all().map_err(|e| io_error("syncing", &tmp, e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| io_error("renaming", &tmp, e))?;
        if let Ok(dir) = std::fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        let keep = [generation_number(name), generation_number(&previous)];
        let newest = keep.iter().flatten().max().copied().unwrap_or(0);
        for (number, path) in self.generations()? {
            // Older than both: nobody reads it any more. Newer ones may be another rebuild.
            if !keep.contains(&Some(number))
                && number < newest
                && let Err(error) = std::fs::remove_dir_all(&path)
            {
                tracing::warn!(%error, path = %path.display(), "removing an old index generation failed");
            }
        }
        Ok(())
    }

    fn generations(&self) -> IndexResult<Vec<(u64, PathBuf)>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| io_error("listing", &self.dir, e))?;
        let mut found = Vec::new();
        for entry in entries.flatten() {
            if let Some(number) = entry.file_name().to_str().and_then(generation_number) {
                found.push((number, entry.path()));
            }
        }
        Ok(found)
    }
}

fn generation_number(name: &str) -> Option<u64> {
    name.strip_prefix(PREFIX)?.parse().ok()
}

impl From<TripIndex> for LiveIndex {
    fn from(index: TripIndex) -> Self {
        LiveIndex::fixed(index)
    }
}

/// The index generation in use, shared by the tasks of a process and replaced when `CURRENT`
/// names another one.
#[derive(Clone, Debug)]
pub struct LiveIndex {
    home: Option<IndexHome>,
    current: Arc<RwLock<(String, TripIndex)>>,
}

impl LiveIndex {
    /// The generation `CURRENT` names in `home`.
    pub fn open(home: IndexHome) -> IndexResult<LiveIndex> {
        let name = home.current()?;
        let index = home.open_generation(&name)?;
        Ok(LiveIndex { home: Some(home), current: Arc::new(RwLock::new((name, index))) })
    }

    /// A single index that never switches (tests, benchmarks).
    pub fn fixed(index: TripIndex) -> LiveIndex {
        LiveIndex { home: None, current: Arc::new(RwLock::new(("fixed".to_owned(), index))) }
    }

    /// The home, when on disk.
    pub fn home(&self) -> Option<&IndexHome> {
        self.home.as_ref()
    }

    /// The index in use now.
    pub fn get(&self) -> TripIndex {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).1.clone()
    }

    /// The name of the generation in use.
    pub fn generation(&self) -> String {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).0.clone()
    }

    /// Moves to the generation `CURRENT` names, if it changed; `true` when it moved.
    pub fn refresh(&self) -> IndexResult<bool> {
        let Some(home) = &self.home else { return Ok(false) };
        let name = home.current()?;
        if name == self.generation() {
            return Ok(false);
        }
        let index = home.open_generation(&name)?;
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = (name, index);
        Ok(true)
    }
}
