//! Building a dm-verity hash tree and its root hash from the payload data: [`TreeBuilder`]
//! fed in pieces, and [`build_tree`] over a reader.

use std::io::{self, Read};

use super::{Geometry, SaltedHasher, VerityError, BLOCK_SIZE, BS, DIGEST_SIZE, SALT_SIZE};

/// A hash tree and its root hash, as [`TreeBuilder`] makes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltTree {
    /// The tree bytes (`verity-size` of them), to be appended to the data.
    pub tree: Vec<u8>,
    /// The root hash (`verity-hash`).
    pub root_hash: [u8; DIGEST_SIZE],
}

/// Computes the hash tree of data fed to it in pieces; memory apart from the tree itself is
/// one block.
#[derive(Debug)]
pub struct TreeBuilder {
    geometry: Geometry,
    hasher: SaltedHasher,
    tree: Vec<u8>,
    pending: Vec<u8>,
    blocks: u64,
    /// The hash of data block 0, the root hash when there are no levels.
    first: [u8; DIGEST_SIZE],
}

impl TreeBuilder {
    /// A builder for `data_size` bytes (a positive multiple of 4096).
    pub fn new(data_size: u64, salt: &[u8; SALT_SIZE]) -> Result<Self, VerityError> {
        let geometry = Geometry::new(data_size)?;
        let size = geometry.tree_size;
        let n = usize::try_from(size).map_err(|_| VerityError::TreeAlloc { size })?;
        let mut tree = Vec::new();
        tree.try_reserve_exact(n)
            .map_err(|_| VerityError::TreeAlloc { size })?;
        tree.resize(n, 0);
        Ok(TreeBuilder {
            geometry,
            hasher: SaltedHasher::new(salt),
            tree,
            pending: Vec::with_capacity(BS),
            blocks: 0,
            first: [0; DIGEST_SIZE],
        })
    }

    fn received(&self) -> u64 {
        self.blocks * BLOCK_SIZE + self.pending.len() as u64
    }

    /// Feeds the next bytes of data.
    pub fn update(&mut self, mut data: &[u8]) -> Result<(), VerityError> {
        let expected = self.geometry.data_size;
        let got = self.received().saturating_add(data.len() as u64);
        if got > expected {
            return Err(VerityError::DataLength { got, expected });
        }
        while !data.is_empty() {
            if self.pending.is_empty() && data.len() >= BS {
                let (block, rest) = data.split_at(BS);
                self.add_block_hash(self.hasher.hash(block));
                data = rest;
            } else {
                let take = (BS - self.pending.len()).min(data.len());
                self.pending.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.pending.len() == BS {
                    self.add_block_hash(self.hasher.hash(&self.pending));
                    self.pending.clear();
                }
            }
        }
        Ok(())
    }

    fn add_block_hash(&mut self, hash: [u8; DIGEST_SIZE]) {
        if self.blocks == 0 {
            self.first = hash;
        }
        if let Some(leaf) = self.geometry.levels().first() {
            // Within the tree: blocks < data_blocks, which the leaf level covers.
            let at = (leaf.offset + self.blocks * DIGEST_SIZE as u64) as usize;
            self.tree[at..at + DIGEST_SIZE].copy_from_slice(&hash);
        }
        self.blocks += 1;
    }

    /// Computes the upper levels and the root hash; fails unless exactly `data_size` bytes
    /// were fed.
    pub fn finish(mut self) -> Result<BuiltTree, VerityError> {
        let got = self.received();
        if got != self.geometry.data_size {
            return Err(VerityError::DataLength {
                got,
                expected: self.geometry.data_size,
            });
        }
        let levels = self.geometry.levels();
        for pair in levels.windows(2) {
            let (below, above) = (pair[0], pair[1]);
            // Offsets and sizes are within the tree, which fits in memory.
            for j in 0..below.blocks as usize {
                let from = below.offset as usize + j * BS;
                let hash = self.hasher.hash(&self.tree[from..from + BS]);
                let to = above.offset as usize + j * DIGEST_SIZE;
                self.tree[to..to + DIGEST_SIZE].copy_from_slice(&hash);
            }
        }
        let root_hash = match levels.last() {
            Some(top) => {
                let at = top.offset as usize;
                self.hasher.hash(&self.tree[at..at + BS])
            }
            None => self.first,
        };
        Ok(BuiltTree {
            tree: self.tree,
            root_hash,
        })
    }
}

/// Builds the tree of `data_size` bytes read from `data` to its end.
pub fn build_tree<R: Read>(
    mut data: R,
    data_size: u64,
    salt: &[u8; SALT_SIZE],
) -> Result<BuiltTree, VerityError> {
    let mut builder = TreeBuilder::new(data_size, salt)?;
    let mut buf = vec![0u8; 16 * BS];
    loop {
        let n = match data.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                return Err(VerityError::Io {
                    what: "data".into(),
                    offset: builder.received(),
                    error,
                })
            }
        };
        builder.update(&buf[..n])?;
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verity::tests::{data, SALT};

    #[test]
    fn builder_takes_any_pieces_and_checks_length() {
        let data = data(130);
        let whole = build_tree(&data[..], data.len() as u64, &SALT).unwrap();
        let mut b = TreeBuilder::new(data.len() as u64, &SALT).unwrap();
        for piece in data.chunks(1000) {
            b.update(piece).unwrap();
        }
        assert_eq!(b.finish().unwrap(), whole);
        assert!(matches!(
            build_tree(&data[..4096], data.len() as u64, &SALT),
            Err(VerityError::DataLength { got: 4096, .. })
        ));
        assert!(matches!(
            build_tree(&data[..], 4096, &SALT),
            Err(VerityError::DataLength { expected: 4096, .. })
        ));
    }
}
