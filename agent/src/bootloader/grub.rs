//! The GRUB backend: A/B state in a grubenv file, read and written as one block.
//!
//! Each operation loads the block, decodes it ([`GrubEnv`]), reads the [`AbState`],
//! applies the pure change, and writes back only the variables whose meaning changed,
//! keeping unrelated variables, comments and the block size. Nothing is written when
//! nothing changed. The block is written in place, in one write, then synced (a grubenv
//! on a FAT ESP must not be replaced by rename: GRUB reads it by block list).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::abstate::{AbState, SlotBootState};
use super::Bootloader;
use flipslot_bootenv::grubenv::GrubEnv;

/// Where the environment block lives.
pub trait EnvBlockStore {
    /// The whole block.
    fn read(&mut self) -> Result<Vec<u8>>;
    /// Replaces the whole block with `block` (same size as read).
    fn write(&mut self, block: &[u8]) -> Result<()>;
    /// Names the store in messages (e.g. the file path).
    fn describe(&self) -> String;
}

/// A grubenv file.
#[derive(Debug, Clone)]
pub struct FileEnvStore {
    /// The file, already resolved under the root.
    pub path: PathBuf,
}

impl FileEnvStore {
    /// A store for the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileEnvStore { path: path.into() }
    }
}

impl EnvBlockStore for FileEnvStore {
    fn read(&mut self) -> Result<Vec<u8>> {
        std::fs::read(&self.path)
            .with_context(|| format!("cannot read grubenv {}", self.path.display()))
    }

    /// Overwrites the existing file from offset 0 without truncating (the file keeps its
    /// blocks), refusing to change its size, then syncs it.
    fn write(&mut self, block: &[u8]) -> Result<()> {
        let path = self.path.display();
        let mut file = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .with_context(|| format!("cannot open grubenv {path} for writing"))?;
        let len = file
            .metadata()
            .with_context(|| format!("cannot stat grubenv {path}"))?
            .len();
        if u64::try_from(block.len()).ok() != Some(len) {
            bail!(
                "refusing to write a {}-byte block into grubenv {path} of {len} bytes",
                block.len()
            );
        }
        if let Some(action) = crate::host::failpoint::is_armed("grubenv-torn-write") {
            // A power cut in the middle of the block: only its first sector lands.
            let half = block.len().min(512);
            file.write_all(&block[..half])
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write grubenv {path}"))?;
            crate::host::failpoint::trigger("grubenv-torn-write", action);
        }
        file.write_all(block)
            .with_context(|| format!("cannot write grubenv {path}"))?;
        file.sync_all()
            .with_context(|| format!("cannot sync grubenv {path}"))?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("grubenv {}", self.path.display())
    }
}

/// [`Bootloader`] over a GRUB environment block.
#[derive(Debug)]
pub struct GrubBackend<S: EnvBlockStore> {
    store: S,
    bootnames: Vec<String>,
}

impl<S: EnvBlockStore> GrubBackend<S> {
    /// A backend on `store` for the configured `bootnames` (in config order).
    pub fn new(store: S, bootnames: Vec<String>) -> Self {
        GrubBackend { store, bootnames }
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    fn load(&mut self) -> Result<(Vec<u8>, GrubEnv)> {
        let block = self.store.read()?;
        let env = GrubEnv::parse(&block)
            .with_context(|| format!("cannot parse {}", self.store.describe()))?;
        Ok((block, env))
    }

    fn check_bootname(&self, bootname: &str) -> Result<()> {
        if !self.bootnames.iter().any(|b| b == bootname) {
            bail!(
                "unknown bootname {bootname:?} (configured bootnames: {})",
                self.bootnames.join(", ")
            );
        }
        Ok(())
    }

    /// Load, change the state with `change`, and store what changed.
    fn update(
        &mut self,
        bootname: &str,
        change: impl FnOnce(&mut AbState, &[String]),
    ) -> Result<()> {
        self.check_bootname(bootname)?;
        let (block, mut env) = self.load()?;
        let before = AbState::from_vars(env.vars(), &self.bootnames);
        let mut after = before.clone();
        change(&mut after, &self.bootnames);
        let changed = after.changed_vars(&before);
        if changed.is_empty() {
            log::debug!(
                "{}: {bootname} already in the wanted state",
                self.store.describe()
            );
            return Ok(());
        }
        for (name, value) in &changed {
            env.set(name, value)
                .with_context(|| format!("cannot set {name} in {}", self.store.describe()))?;
        }
        let new_block = env
            .encode(block.len())
            .with_context(|| format!("cannot encode {}", self.store.describe()))?;
        self.store.write(&new_block)?;
        log::info!(
            "{}: set {}",
            self.store.describe(),
            changed
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        Ok(())
    }
}

impl<S: EnvBlockStore> Bootloader for GrubBackend<S> {
    fn name(&self) -> &'static str {
        "grub"
    }

    fn bootnames(&self) -> &[String] {
        &self.bootnames
    }

    fn state(&mut self) -> Result<AbState> {
        let (_, env) = self.load()?;
        Ok(AbState::from_vars(env.vars(), &self.bootnames))
    }

    fn slot_state(&mut self, bootname: &str) -> Result<SlotBootState> {
        self.check_bootname(bootname)?;
        Ok(self.state()?.state(bootname))
    }

    fn mark_good(&mut self, bootname: &str) -> Result<()> {
        self.update(bootname, |s, _| s.mark_good(bootname))
    }

    fn mark_bad(&mut self, bootname: &str) -> Result<()> {
        self.update(bootname, |s, _| s.mark_bad(bootname))
    }

    fn mark_active(&mut self, bootname: &str) -> Result<()> {
        self.update(bootname, |s, all| s.mark_active(bootname, all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flipslot_bootenv::grubenv::HEADER;

    /// An in-memory store that counts writes.
    #[derive(Debug)]
    struct MemStore {
        block: Vec<u8>,
        writes: usize,
    }

    impl MemStore {
        fn with(block: Vec<u8>) -> Self {
            MemStore { block, writes: 0 }
        }
    }

    impl EnvBlockStore for MemStore {
        fn read(&mut self) -> Result<Vec<u8>> {
            Ok(self.block.clone())
        }
        fn write(&mut self, block: &[u8]) -> Result<()> {
            self.block = block.to_vec();
            self.writes += 1;
            Ok(())
        }
        fn describe(&self) -> String {
            "memory".into()
        }
    }

    fn block(body: &str) -> Vec<u8> {
        let mut b = format!("{HEADER}{body}").into_bytes();
        b.resize(1024, b'#');
        b
    }

    fn backend(body: &str, bootnames: &[&str]) -> GrubBackend<MemStore> {
        GrubBackend::new(
            MemStore::with(block(body)),
            bootnames.iter().map(|s| s.to_string()).collect(),
        )
    }

    #[test]
    fn reads_primary_and_states() {
        let mut b = backend("ORDER=A B\nA_OK=1\nA_TRY=1\nB_OK=1\nB_TRY=0\n", &["A", "B"]);
        assert_eq!(b.name(), "grub");
        assert_eq!(b.primary().unwrap().as_deref(), Some("B"));
        assert_eq!(b.slot_state("A").unwrap(), SlotBootState::Trying);
        assert_eq!(b.slot_state("B").unwrap(), SlotBootState::Good);
        let e = b.slot_state("C").unwrap_err().to_string();
        assert!(e.contains("\"C\"") && e.contains("A, B"), "{e}");
    }

    #[test]
    fn mark_active_preserves_other_variables() {
        let mut b = backend(
            "saved_entry=1\nORDER=A B\nA_OK=1\nA_TRY=0\nB_OK=0\nB_TRY=0\nnext_entry=\n",
            &["A", "B"],
        );
        b.mark_active("B").unwrap();
        assert_eq!(
            b.store().block,
            block("saved_entry=1\nORDER=B A\nA_OK=1\nA_TRY=0\nB_OK=1\nB_TRY=0\nnext_entry=\n")
        );
        assert_eq!(b.primary().unwrap().as_deref(), Some("B"));
        // Already active: nothing written.
        b.mark_active("B").unwrap();
        assert_eq!(b.store().writes, 1);
    }

    #[test]
    fn mark_good_and_bad() {
        let mut b = backend("ORDER=B A\nA_OK=1\nA_TRY=0\nB_OK=1\nB_TRY=1\n", &["A", "B"]);
        b.mark_good("B").unwrap();
        assert_eq!(b.slot_state("B").unwrap(), SlotBootState::Good);
        b.mark_bad("B").unwrap();
        assert_eq!(b.slot_state("B").unwrap(), SlotBootState::Bad);
        assert_eq!(b.primary().unwrap().as_deref(), Some("A"));
        assert_eq!(
            b.store().block,
            block("ORDER=B A\nA_OK=1\nA_TRY=0\nB_OK=0\nB_TRY=0\n")
        );
        assert!(b.mark_bad("Z").is_err());
        assert_eq!(b.store().writes, 2);
    }

    #[test]
    fn empty_env_gets_variables_appended() {
        let mut b = backend("", &["A", "B", "C"]);
        assert_eq!(b.primary().unwrap(), None);
        b.mark_active("C").unwrap();
        assert_eq!(b.store().block, block("ORDER=C A B\nC_OK=1\nC_TRY=0\n"));
        assert_eq!(b.primary().unwrap().as_deref(), Some("C"));
    }

    #[test]
    fn keeps_block_size() {
        let mut small = format!("{HEADER}ORDER=A B\n").into_bytes();
        small.resize(512, b'#');
        let store = MemStore::with(small);
        let mut b = GrubBackend::new(store, vec!["A".into(), "B".into()]);
        b.mark_active("B").unwrap();
        assert_eq!(b.store().block.len(), 512);
    }

    #[test]
    fn too_small_block_is_an_error_and_not_written() {
        let store = MemStore::with(format!("{HEADER}ORDER=A B\n").into_bytes());
        let mut b = GrubBackend::new(store, vec!["A".into(), "B".into()]);
        let e = format!("{:#}", b.mark_active("B").unwrap_err());
        assert!(e.contains("memory") && e.contains("bytes"), "{e}");
        assert_eq!(b.store().writes, 0);
    }

    #[test]
    fn corrupt_block_is_named() {
        let store = MemStore::with(b"garbage".to_vec());
        let mut b = GrubBackend::new(store, vec!["A".into(), "B".into()]);
        let e = format!("{:#}", b.primary().unwrap_err());
        assert!(e.contains("memory") && e.contains("header"), "{e}");
    }

    #[test]
    fn file_store_writes_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grubenv");
        let mut store = FileEnvStore::new(&path);
        let e = format!("{:#}", store.read().unwrap_err());
        assert!(e.contains("grubenv"), "{e}");
        let e = format!("{:#}", store.write(&block("")).unwrap_err());
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(!path.exists(), "write must not create the file");

        std::fs::write(&path, block("ORDER=A B\n")).unwrap();
        let mut b = GrubBackend::new(FileEnvStore::new(&path), vec!["A".into(), "B".into()]);
        b.mark_active("B").unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            block("ORDER=B A\nB_OK=1\nB_TRY=0\n")
        );
        let e = format!("{:#}", store.write(&[b'#'; 10]).unwrap_err());
        assert!(e.contains("refusing"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap().len(), 1024);
        assert!(store.describe().contains("grubenv"));
    }
}
