//! Library-level tests of the bundle format: real bundles built in temporary directories,
//! read back, tampered with, truncated, extended and re-signed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ed25519_dalek::SigningKey;
use flipslot_format::builder::{self, BuildOptions, ImageInput};
use flipslot_format::format::{Header, HEADER_LEN, MAX_MANIFEST_LEN, MAX_SIGNATURES};
use flipslot_format::keys::key_id;
use flipslot_format::source::{ByteSource, FileSource, MemSource};
use flipslot_format::{Bundle, BundleError, ChunkHash, Compression, KeyId, Keyring, VerifyPolicy};
use std::path::{Path, PathBuf};

const CHUNK: u32 = 64 * 1024;
const BUILD_TIME: u64 = 1_700_000_000;

/// Deterministic test data: xorshift noise with runs of zeros, so zstd has work to do.
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    for i in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Every fourth 16 KiB stretch is zeros.
        v.push(if (i / 16384) % 4 == 3 { 0 } else { x as u8 });
    }
    v
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn keyring(keys: &[&SigningKey]) -> Keyring {
    Keyring::from_keys(keys.iter().map(|k| {
        (
            k.verifying_key(),
            PathBuf::from(format!("{}.pub", key_id(&k.verifying_key()))),
        )
    }))
}

fn policy(n: u32) -> VerifyPolicy {
    VerifyPolicy { min_signatures: n }
}

/// Both chunk hashes: every build-and-read test runs with each.
const ALGS: [ChunkHash; 2] = [ChunkHash::Blake3, ChunkHash::Sha256];

fn options(compression: Compression) -> BuildOptions {
    options_alg(compression, ChunkHash::default())
}

fn options_alg(compression: Compression, chunk_hash: ChunkHash) -> BuildOptions {
    BuildOptions {
        compatible: "acme-box".into(),
        version: semver::Version::new(1, 2, 3),
        build_time: BUILD_TIME,
        description: Some("test bundle".into()),
        chunk_size: CHUNK,
        compression,
        zstd_level: 3,
        block_index: true,
        chunk_hash,
    }
}

/// Two images of a few hundred KiB (neither a multiple of the chunk size) in a temp dir.
struct Fixture {
    dir: tempfile::TempDir,
    images: Vec<(String, Vec<u8>)>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with(vec![
            ("rootfs".to_string(), data(1, 300 * 1024 + 123)),
            ("boot".to_string(), data(2, 200 * 1024 + 7)),
        ])
    }

    fn with(images: Vec<(String, Vec<u8>)>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        for (class, bytes) in &images {
            std::fs::write(dir.path().join(format!("{class}.img")), bytes).unwrap();
        }
        Fixture { dir, images }
    }

    fn inputs(&self) -> Vec<ImageInput> {
        self.images
            .iter()
            .map(|(class, _)| ImageInput {
                class: class.clone(),
                path: self.dir.path().join(format!("{class}.img")),
            })
            .collect()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Builds `name` and returns its bytes.
    fn build(&self, name: &str, opts: &BuildOptions, keys: &[SigningKey]) -> Vec<u8> {
        let out = self.path(name);
        builder::build(
            &self.inputs(),
            opts,
            keys,
            &mut std::fs::File::create(&out).unwrap(),
            &mut |_, _, _| {},
        )
        .unwrap();
        std::fs::read(out).unwrap()
    }
}

fn open(bytes: &[u8], ring: &Keyring, min: u32) -> Result<Bundle<MemSource>, BundleError> {
    Bundle::open(MemSource(bytes.to_vec()), ring, &policy(min))
}

fn payload_offset(bytes: &[u8]) -> usize {
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&bytes[..HEADER_LEN]);
    Header::decode(&h).unwrap().payload_offset() as usize
}

fn stream_all<S: ByteSource>(b: &mut Bundle<S>, image: usize) -> Result<Vec<u8>, BundleError> {
    let mut out = Vec::new();
    b.stream_image(image, &mut |offset, data| {
        assert_eq!(offset, out.len() as u64);
        out.extend_from_slice(data);
        Ok(())
    })?;
    Ok(out)
}

#[test]
fn build_then_read_back_everything() {
    for alg in ALGS {
        build_then_read_back_everything_with(alg);
    }
}

fn build_then_read_back_everything_with(alg: ChunkHash) {
    let fx = Fixture::new();
    let k1 = key(1);
    for compression in [Compression::None, Compression::Zstd] {
        let bytes = fx.build(
            "b.fsb",
            &options_alg(compression, alg),
            std::slice::from_ref(&k1),
        );
        let mut b = open(&bytes, &keyring(&[&k1]), 1).unwrap();
        assert!(b.is_verified());
        assert_eq!(
            b.signature_report().trusted,
            vec![key_id(&k1.verifying_key())]
        );
        let m = b.manifest().clone();
        assert_eq!(m.chunk_hash(), alg);
        assert_eq!(m.format, alg.manifest_format());
        assert_eq!(m.compatible, "acme-box");
        assert_eq!(m.version, semver::Version::new(1, 2, 3));
        assert_eq!(m.build_time, BUILD_TIME);
        assert_eq!(m.description.as_deref(), Some("test bundle"));
        assert_eq!(b.total_len(), bytes.len() as u64);
        assert_eq!(b.payload_offset() % 4096, 0);
        let mut scratch = Vec::new();
        let mut buf = vec![0u8; CHUNK as usize];
        for (i, (class, input)) in fx.images.iter().enumerate() {
            let img = &m.images[i];
            assert_eq!(&img.class, class);
            assert_eq!(img.size, input.len() as u64);
            assert_eq!(img.compression, compression);
            // Every chunk on its own.
            for c in 0..img.chunks.len() {
                let n = b.read_chunk(i, c, &mut scratch, &mut buf).unwrap();
                let start = c * CHUNK as usize;
                assert_eq!(&buf[..n], &input[start..start + n], "{class} chunk {c}");
                let ch = &img.chunks[c];
                assert_eq!(ch.hash_hex().map(|(a, _)| a), Some(alg));
                let stored = match alg {
                    ChunkHash::Sha256 => ch.stored_sha256.is_some(),
                    ChunkHash::Blake3 => ch.stored_blake3.is_some(),
                };
                assert_eq!(stored, compression == Compression::Zstd);
            }
            // The whole image as a stream.
            assert_eq!(&stream_all(&mut b, i).unwrap(), input, "{class}");
            // The block index: one SHA-256 per 4 KiB block, last block zero-padded.
            let index = b.read_block_index(i).unwrap().unwrap();
            let expect: Vec<u8> = input
                .chunks(4096)
                .flat_map(|blk| builder::block_hash(blk).0)
                .collect();
            assert_eq!(index, expect);
        }
        if compression == Compression::Zstd {
            assert!(m.payload_size < fx.images.iter().map(|(_, d)| d.len() as u64).sum::<u64>());
        }
        // verify_payload reports uncompressed bytes up to their total.
        let total: u64 = fx.images.iter().map(|(_, d)| d.len() as u64).sum();
        let mut last = (0, 0);
        b.verify_payload(&mut |d, t| {
            assert!(d >= last.0 && d <= t);
            last = (d, t);
        })
        .unwrap();
        assert_eq!(last, (total, total));
        // The same through a file.
        let src = FileSource::open(&fx.path("b.fsb")).unwrap();
        let mut fb = Bundle::open(src, &keyring(&[&k1]), &policy(1)).unwrap();
        assert_eq!(stream_all(&mut fb, 1).unwrap(), fx.images[1].1);
        assert_eq!(fb.manifest_sha256(), b.manifest_sha256());
    }
}

#[test]
fn builds_are_reproducible() {
    let fx = Fixture::new();
    let (k1, k2) = (key(1), key(2));
    for compression in [Compression::None, Compression::Zstd] {
        let opts = options(compression);
        let a = fx.build("a.fsb", &opts, &[k1.clone(), k2.clone()]);
        let b = fx.build("b.fsb", &opts, &[k1.clone(), k2.clone()]);
        assert!(a == b, "two builds with two keys differ ({compression:?})");
        let mut later = opts.clone();
        later.build_time += 1;
        assert!(
            fx.build("c.fsb", &later, std::slice::from_ref(&k1))
                != fx.build("d.fsb", &opts, std::slice::from_ref(&k1))
        );
    }
    // No temporary file is left next to the output.
    let left: Vec<_> = std::fs::read_dir(fx.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn every_bit_flip_before_the_payload_is_rejected() {
    for alg in ALGS {
        every_bit_flip_before_the_payload_is_rejected_with(alg);
    }
}

fn every_bit_flip_before_the_payload_is_rejected_with(alg: ChunkHash) {
    // One small image keeps the manifest short: each flip in it costs a signature check.
    let fx = Fixture::with(vec![("rootfs".to_string(), data(3, 150 * 1024 + 5))]);
    let k1 = key(1);
    let ring = keyring(&[&k1]);
    let bytes = fx.build(
        "b.fsb",
        &options_alg(Compression::Zstd, alg),
        std::slice::from_ref(&k1),
    );
    let end = payload_offset(&bytes);
    let mut src = MemSource(bytes);
    assert!(Bundle::open(&mut src, &ring, &policy(1)).is_ok());
    for i in 0..end {
        let bit = 1u8 << (i % 8);
        src.0[i] ^= bit;
        let r = Bundle::open(&mut src, &ring, &policy(1));
        assert!(
            r.is_err(),
            "flipping bit {} of byte {i} was not detected",
            i % 8
        );
        src.0[i] ^= bit;
    }
    assert!(Bundle::open(&mut src, &ring, &policy(1)).is_ok());
}

#[test]
fn a_payload_bit_flip_is_caught_at_its_chunk() {
    for alg in ALGS {
        a_payload_bit_flip_is_caught_at_its_chunk_with(alg);
    }
}

fn a_payload_bit_flip_is_caught_at_its_chunk_with(alg: ChunkHash) {
    let fx = Fixture::new();
    let k1 = key(1);
    let ring = keyring(&[&k1]);
    for compression in [Compression::None, Compression::Zstd] {
        let mut bytes = fx.build(
            "b.fsb",
            &options_alg(compression, alg),
            std::slice::from_ref(&k1),
        );
        let p = payload_offset(&bytes);
        let chunk = open(&bytes, &ring, 1).unwrap().manifest().images[0].chunks[2].clone();
        let at = p + chunk.offset as usize + chunk.stored_size as usize / 2;
        bytes[at] ^= 0x10;
        // The head is intact, so the bundle opens ...
        let mut b = open(&bytes, &ring, 1).unwrap();
        // ... but the chunk does not verify, named with its absolute offset.
        let err = stream_all(&mut b, 0).unwrap_err();
        let want_offset = p as u64 + chunk.offset;
        match &err {
            BundleError::ChunkHash {
                image: 0,
                chunk: 2,
                offset,
                ..
            } => assert_eq!(*offset, want_offset),
            other => panic!("unexpected error {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("chunk 2") && msg.contains(&want_offset.to_string()),
            "{msg}"
        );
        assert!(matches!(
            b.verify_payload(&mut |_, _| {}),
            Err(BundleError::ChunkHash { chunk: 2, .. })
        ));
        // The other image still streams.
        assert_eq!(stream_all(&mut b, 1).unwrap(), fx.images[1].1);
    }
}

#[test]
fn a_block_index_bit_flip_is_caught() {
    let fx = Fixture::new();
    let k1 = key(1);
    let ring = keyring(&[&k1]);
    let mut bytes = fx.build(
        "b.fsb",
        &options(Compression::None),
        std::slice::from_ref(&k1),
    );
    let p = payload_offset(&bytes);
    let bi = open(&bytes, &ring, 1).unwrap().manifest().images[1]
        .block_index
        .clone()
        .unwrap();
    bytes[p + bi.offset as usize + 5] ^= 1;
    let mut b = open(&bytes, &ring, 1).unwrap();
    assert!(matches!(
        b.read_block_index(1),
        Err(BundleError::RegionHash { .. })
    ));
    assert!(matches!(
        b.verify_payload(&mut |_, _| {}),
        Err(BundleError::RegionHash { .. })
    ));
}

#[test]
fn truncated_bundles_are_rejected() {
    for alg in ALGS {
        truncated_bundles_are_rejected_with(alg);
    }
}

fn truncated_bundles_are_rejected_with(alg: ChunkHash) {
    let fx = Fixture::new();
    let k1 = key(1);
    let ring = keyring(&[&k1]);
    let bytes = fx.build(
        "b.fsb",
        &options_alg(Compression::Zstd, alg),
        std::slice::from_ref(&k1),
    );
    let p = payload_offset(&bytes);
    let mut cuts: Vec<usize> = (0..bytes.len()).step_by(997).collect();
    cuts.extend([1, 63, 64, 65, p - 1, p, p + 1, bytes.len() - 1]);
    for cut in cuts {
        match open(&bytes[..cut], &ring, 1) {
            Err(BundleError::Truncated { needed, len, .. }) => {
                assert_eq!(len, cut as u64);
                assert!(needed > len, "cut at {cut}: needed {needed}");
            }
            Err(other) => panic!("cut at {cut}: unexpected error {other}"),
            Ok(_) => panic!("cut at {cut}: accepted"),
        }
    }
}

#[test]
fn trailing_data_is_rejected() {
    let fx = Fixture::new();
    let k1 = key(1);
    let ring = keyring(&[&k1]);
    let mut bytes = fx.build(
        "b.fsb",
        &options(Compression::None),
        std::slice::from_ref(&k1),
    );
    let end = bytes.len() as u64;
    bytes.push(0);
    assert!(matches!(
        open(&bytes, &ring, 1),
        Err(BundleError::TrailingData { end: e, extra: 1 }) if e == end
    ));
    bytes.extend_from_slice(&[0u8; 4095]);
    assert!(matches!(
        open(&bytes, &ring, 1),
        Err(BundleError::TrailingData { extra: 4096, .. })
    ));
}

#[test]
fn signature_policy() {
    let fx = Fixture::new();
    let (k1, k2, k3) = (key(1), key(2), key(3));
    let (id1, id2, id3) = (
        key_id(&k1.verifying_key()),
        key_id(&k2.verifying_key()),
        key_id(&k3.verifying_key()),
    );
    let opts = options(Compression::None);

    // Unsigned: refused, though it can be inspected.
    let unsigned = fx.build("u.fsb", &opts, &[]);
    assert!(matches!(
        open(&unsigned, &keyring(&[&k1]), 1),
        Err(BundleError::Unsigned)
    ));
    let u = Bundle::open_unverified(MemSource(unsigned)).unwrap();
    assert!(u.signatures().is_empty() && !u.is_verified());

    // Signed by a key the device does not trust.
    let one = fx.build("one.fsb", &opts, std::slice::from_ref(&k3));
    match open(&one, &keyring(&[&k1, &k2]), 1) {
        Err(e @ BundleError::NotEnoughSignatures { .. }) => {
            let BundleError::NotEnoughSignatures {
                trusted,
                required,
                ref untrusted,
            } = e
            else {
                unreachable!()
            };
            assert_eq!((trusted, required), (0, 1));
            assert_eq!(untrusted, &vec![id3]);
            assert!(e.to_string().contains(&id3.to_string()), "{e}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // ... which open_unverified still reads.
    let u = Bundle::open_unverified(MemSource(one.clone())).unwrap();
    assert_eq!(u.signature_report().untrusted, vec![id3]);
    assert_eq!(u.manifest().compatible, "acme-box");

    // Threshold 2 with one signature.
    let single = fx.build("s.fsb", &opts, std::slice::from_ref(&k1));
    assert!(matches!(
        open(&single, &keyring(&[&k1, &k2]), 2),
        Err(BundleError::NotEnoughSignatures {
            trusted: 1,
            required: 2,
            ..
        })
    ));

    // Threshold 2 with two trusted keys, plus an untrusted third signature.
    let three = fx.build("t.fsb", &opts, &[k1.clone(), k2.clone(), k3.clone()]);
    let b = open(&three, &keyring(&[&k1, &k2]), 2).unwrap();
    assert_eq!(b.signature_report().trusted, vec![id1, id2]);
    assert_eq!(b.signature_report().untrusted, vec![id3]);

    // The same key twice counts once.
    let twice = fx.build("d.fsb", &opts, &[k1.clone(), k1.clone()]);
    assert_eq!(
        Bundle::open_unverified(MemSource(twice.clone()))
            .unwrap()
            .signatures()
            .len(),
        2
    );
    assert!(matches!(
        open(&twice, &keyring(&[&k1]), 2),
        Err(BundleError::NotEnoughSignatures {
            trusted: 1,
            required: 2,
            ..
        })
    ));
    assert_eq!(
        open(&twice, &keyring(&[&k1]), 1)
            .unwrap()
            .signature_report()
            .trusted,
        vec![id1]
    );

    // A trusted key whose signature does not verify is an error even if another one
    // would satisfy the policy.
    let mut bad = three.clone();
    let h = Bundle::open_unverified(MemSource(three)).unwrap();
    let sig2 = HEADER_LEN + h.manifest_bytes().len() + 80 + 16;
    bad[sig2 + 3] ^= 1;
    assert!(matches!(
        open(&bad, &keyring(&[&k1, &k2]), 1),
        Err(BundleError::BadSignature { key_id }) if key_id == id2
    ));
}

fn signer_ids(path: &Path) -> Vec<KeyId> {
    let b = Bundle::open_unverified(FileSource::open(path).unwrap()).unwrap();
    b.signatures().iter().map(|s| s.key_id).collect()
}

fn payload_of(path: &Path) -> (Vec<u8>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let b = Bundle::open_unverified(MemSource(bytes.clone())).unwrap();
    let p = payload_offset(&bytes);
    (b.manifest_bytes().to_vec(), bytes[p..].to_vec())
}

/// Re-signs the bundle file at `path` in memory and writes it back when that worked (as
/// `flipslot-image sign` does through a temporary file).
fn resign(
    path: &Path,
    keys: &[SigningKey],
    replace: bool,
) -> Result<Vec<flipslot_format::format::SignatureEntry>, BundleError> {
    let src = MemSource(std::fs::read(path).unwrap());
    let mut out = Vec::new();
    let sigs = builder::resign(src, keys, replace, &mut out)?;
    std::fs::write(path, out).unwrap();
    Ok(sigs)
}

#[test]
fn resign_replaces_and_sign_adds() {
    let fx = Fixture::new();
    let (k1, k2, k3) = (key(1), key(2), key(3));
    let (id1, id2, id3) = (
        key_id(&k1.verifying_key()),
        key_id(&k2.verifying_key()),
        key_id(&k3.verifying_key()),
    );
    fx.build(
        "b.fsb",
        &options(Compression::Zstd),
        std::slice::from_ref(&k1),
    );
    let path = fx.path("b.fsb");
    let original = payload_of(&path);

    // resign: replace all.
    let sigs = resign(&path, std::slice::from_ref(&k2), true).unwrap();
    assert_eq!(sigs.iter().map(|s| s.key_id).collect::<Vec<_>>(), vec![id2]);
    assert_eq!(signer_ids(&path), vec![id2]);
    assert_eq!(
        payload_of(&path),
        original,
        "resign changed manifest or payload"
    );
    let bytes = std::fs::read(&path).unwrap();
    assert!(matches!(
        open(&bytes, &keyring(&[&k1]), 1),
        Err(BundleError::NotEnoughSignatures { ref untrusted, .. }) if untrusted == &vec![id2]
    ));
    let mut b = open(&bytes, &keyring(&[&k2]), 1).unwrap();
    b.verify_payload(&mut |_, _| {}).unwrap();

    // sign: add; signing again with a key already present does not duplicate it.
    resign(&path, std::slice::from_ref(&k3), false).unwrap();
    assert_eq!(signer_ids(&path), vec![id2, id3]);
    resign(&path, &[k2.clone(), k1.clone()], false).unwrap();
    assert_eq!(signer_ids(&path), vec![id3, id2, id1]);
    assert_eq!(
        payload_of(&path),
        original,
        "sign changed manifest or payload"
    );
    let bytes = std::fs::read(&path).unwrap();
    open(&bytes, &keyring(&[&k1, &k2, &k3]), 3).unwrap();

    // The same result as building with those keys directly, up to signature order.
    assert!(resign(&path, &[], false).is_err());
    let many: Vec<SigningKey> = (10..10 + MAX_SIGNATURES as u8).map(key).collect();
    assert!(matches!(
        resign(&path, &many, false),
        Err(BundleError::TooManySignatures { .. })
    ));
    assert_eq!(
        payload_of(&path),
        original,
        "a failed sign changed the bundle"
    );
}

/// A source that records the largest read asked of it.
struct Recording {
    inner: MemSource,
    known_size: bool,
    largest_read: usize,
}

impl ByteSource for Recording {
    fn size(&self) -> Option<u64> {
        self.known_size.then_some(self.inner.0.len() as u64)
    }
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.largest_read = self.largest_read.max(buf.len());
        self.inner.read_exact_at(offset, buf)
    }
    fn describe(&self) -> String {
        "(recording)".into()
    }
}

fn crafted(manifest_len: u64, signature_count: u32) -> Vec<u8> {
    let h = Header {
        manifest_len: 100,
        signature_count: 1,
    };
    let mut b = h.encode().to_vec();
    b[16..24].copy_from_slice(&manifest_len.to_le_bytes());
    b[24..28].copy_from_slice(&signature_count.to_le_bytes());
    let claimed = Header {
        manifest_len,
        signature_count,
    };
    if manifest_len <= MAX_MANIFEST_LEN && signature_count <= MAX_SIGNATURES {
        // Make the payload offset field consistent, so only the lengths are wrong.
        b[32..40].copy_from_slice(&claimed.payload_offset().to_le_bytes());
    }
    b.resize(4096, 0);
    b
}

#[test]
fn huge_length_fields_fail_without_allocating() {
    let ring = keyring(&[&key(1)]);
    for known_size in [true, false] {
        let open_crafted = |bytes: Vec<u8>| {
            let mut src = Recording {
                inner: MemSource(bytes),
                known_size,
                largest_read: 0,
            };
            let r = Bundle::open(&mut src, &ring, &policy(1)).map(|_| ());
            (r, src.largest_read)
        };
        let (r, largest) = open_crafted(crafted(u64::MAX, 1));
        assert!(
            matches!(r, Err(BundleError::ManifestSize { len: u64::MAX, .. })),
            "{r:?}"
        );
        assert_eq!(largest, HEADER_LEN);
        let (r, largest) = open_crafted(crafted(100, u32::MAX));
        assert!(
            matches!(
                r,
                Err(BundleError::TooManySignatures {
                    count: u32::MAX,
                    ..
                })
            ),
            "{r:?}"
        );
        assert_eq!(largest, HEADER_LEN);
        // The largest length allowed, in a 4 KiB file.
        let (r, largest) = open_crafted(crafted(MAX_MANIFEST_LEN, MAX_SIGNATURES));
        assert!(matches!(r, Err(BundleError::Truncated { .. })), "{r:?}");
        if known_size {
            // The length is compared with the file size before anything is read.
            assert_eq!(largest, HEADER_LEN);
        } else {
            // Without a known size the read is bounded by the format's limits.
            assert!(
                largest as u64 <= MAX_MANIFEST_LEN + 16 * 80 + 4096,
                "{largest}"
            );
        }
    }
}

/// Re-signs `bytes` (a bundle signed by `k`) with its manifest JSON changed by `edit`.
fn with_edited_manifest(
    bytes: &[u8],
    k: &SigningKey,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Vec<u8> {
    let b = Bundle::open_unverified(MemSource(bytes.to_vec())).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(b.manifest_bytes()).unwrap();
    edit(&mut v);
    let manifest = serde_json::to_vec_pretty(&v).unwrap();
    let sigs = builder::sign_manifest(&manifest, std::slice::from_ref(k));
    let mut out = builder::encode_head(&manifest, &sigs);
    out.extend_from_slice(&bytes[payload_offset(bytes)..]);
    out
}

#[test]
fn a_signed_manifest_that_mixes_chunk_hashes_or_names_an_unknown_one_is_refused() {
    let fx = Fixture::new();
    let k1 = key(1);
    let ring = keyring(&[&k1]);
    let bytes = fx.build(
        "b.fsb",
        &options_alg(Compression::None, ChunkHash::Blake3),
        std::slice::from_ref(&k1),
    );
    // The re-signing itself is sound: an unchanged manifest opens.
    assert!(open(&with_edited_manifest(&bytes, &k1, |_| {}), &ring, 1).is_ok());
    let sha = "00".repeat(32);
    type Edit<'a> = Box<dyn FnOnce(&mut serde_json::Value) + 'a>;
    let cases: Vec<(&str, Edit<'_>, &str)> = vec![
        (
            "a sha256 chunk hash beside the blake3 ones",
            Box::new(|v| v["images"][0]["chunks"][1]["sha256"] = sha.clone().into()),
            "has a sha256 hash, but the manifest's chunk hash is blake3",
        ),
        (
            "format 2 naming an unknown chunk hash",
            Box::new(|v| v["chunk_hash"] = "md5".into()),
            "md5",
        ),
        (
            "format 1 with blake3 chunk hashes",
            Box::new(|v| {
                v["format"] = 1.into();
                v.as_object_mut().unwrap().remove("chunk_hash");
            }),
            "has a blake3 hash, but the manifest's chunk hash is sha256",
        ),
    ];
    for (name, edit, want) in cases {
        let tampered = with_edited_manifest(&bytes, &k1, edit);
        let e = open(&tampered, &ring, 1).expect_err(name);
        let mut chain = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(c) = src {
            chain.push_str(&format!(": {c}"));
            src = c.source();
        }
        assert!(chain.contains(want), "{name}: {chain}");
    }
}

#[test]
fn a_sha256_build_is_a_format_1_bundle_older_readers_know() {
    let fx = Fixture::new();
    let k1 = key(1);
    let bytes = fx.build(
        "b.fsb",
        &options_alg(Compression::Zstd, ChunkHash::Sha256),
        std::slice::from_ref(&k1),
    );
    let b = open(&bytes, &keyring(&[&k1]), 1).unwrap();
    let text = std::str::from_utf8(b.manifest_bytes()).unwrap();
    assert!(text.contains("\"format\": 1"), "{text}");
    assert!(
        !text.contains("chunk_hash") && !text.contains("blake3"),
        "{text}"
    );
}
