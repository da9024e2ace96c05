//! The compressions of archived WAL and base backups, by the names CloudNativePG's
//! manifests give them (`wal.compression`, `data.compression`) and in the formats
//! barman-cloud writes and reads, so either side restores what the other stored:
//! gzip (`.gz`), bzip2 (`.bz2`) and snappy's framing format (`.snappy`) for both; lz4's frame
//! format (`.lz4`), xz (`.xz`) and zstd (`.zst`) for WAL only, as barman-cloud (3.12 and
//! later) offers them only there.
//!
//! A whole WAL segment is compressed at once ([`Compression::compress`]); where the
//! format reads concatenated streams as one file (gzip members, bzip2 and xz streams: the
//! command-line tools and Python's modules barman-cloud uses all do), the segment is cut
//! into one piece per core, compressed side by side. Compression is most of what archiving
//! a segment costs. Tarballs are compressed as they stream ([`Encoder`]), as one stream.

use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// How WAL or a base backup is compressed on its way to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip, as barman-cloud's `--gzip`.
    Gzip,
    /// bzip2, as `--bzip2`.
    Bzip2,
    /// snappy's framing format, as `--snappy` (python-snappy's streams).
    Snappy,
    /// lz4's frame format, as `--lz4` (WAL only).
    Lz4,
    /// xz, as `--xz` (WAL only).
    Xz,
    /// zstd, as `--zstd` (WAL only).
    Zstd,
}

impl Compression {
    /// Every compression, in the order the manifests list them.
    pub const ALL: [Compression; 6] = [
        Compression::Bzip2,
        Compression::Gzip,
        Compression::Lz4,
        Compression::Snappy,
        Compression::Xz,
        Compression::Zstd,
    ];

    /// Its name in a manifest (and in `backup.info`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }

    /// What barman-cloud appends to the name of what it compressed.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::Gzip => ".gz",
            Compression::Bzip2 => ".bz2",
            Compression::Snappy => ".snappy",
            Compression::Lz4 => ".lz4",
            Compression::Xz => ".xz",
            Compression::Zstd => ".zst",
        }
    }

    /// The compression an object's name ends with, and the name without it.
    pub fn from_name(key: &str) -> (Option<Compression>, &str) {
        Self::ALL
            .into_iter()
            .find_map(|c| key.strip_suffix(c.suffix()).map(|k| (Some(c), k)))
            .unwrap_or((None, key))
    }

    /// Whether base backups can be written with it: barman-cloud's backup and restore
    /// tools know gzip, bzip2 and snappy only.
    pub fn for_data(self) -> bool {
        matches!(
            self,
            Compression::Gzip | Compression::Bzip2 | Compression::Snappy
        )
    }

    /// `data` compressed (a WAL segment: fast settings, every core where the format allows).
    pub fn compress(self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        let whole = |piece: &[u8]| {
            let mut e = Encoder::new(Some(self), Vec::with_capacity(piece.len() / 2))?;
            e.write_all(piece)?;
            e.finish()
        };
        if !matches!(
            self,
            Compression::Gzip | Compression::Bzip2 | Compression::Xz
        ) {
            return whole(data);
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let piece = data.len().div_ceil(cores).max(1 << 20);
        if data.len() <= piece {
            return whole(data);
        }
        let pieces: Vec<std::io::Result<Vec<u8>>> = std::thread::scope(|s| {
            let threads: Vec<_> = data
                .chunks(piece)
                .map(|p| s.spawn(move || whole(p)))
                .collect();
            threads
                .into_iter()
                .map(|t| {
                    t.join().unwrap_or_else(|_| {
                        Err(std::io::Error::other("a compression thread panicked"))
                    })
                })
                .collect()
        });
        let mut out = Vec::with_capacity(data.len() / 2);
        for p in pieces {
            out.extend_from_slice(&p?);
        }
        Ok(out)
    }

    /// A reader of what `compressed` holds, concatenated streams included.
    pub fn decoder<'a>(self, compressed: impl Read + 'a) -> std::io::Result<Box<dyn Read + 'a>> {
        let r = std::io::BufReader::new(compressed);
        Ok(match self {
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
            Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(r)),
            Compression::Snappy => Box::new(snap::read::FrameDecoder::new(r)),
            Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(r)),
            Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(r)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        })
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A stream compressed as it is written (or not: `None`); [`Encoder::finish`] ends it and
/// gives back what it wrote to.
pub enum Encoder<W: Write> {
    /// Not compressed.
    Plain(W),
    /// gzip.
    Gzip(flate2::write::GzEncoder<W>),
    /// bzip2.
    Bzip2(bzip2::write::BzEncoder<W>),
    /// snappy (framing format).
    Snappy(Box<snap::write::FrameEncoder<W>>),
    /// lz4 (frame format).
    Lz4(lz4_flex::frame::FrameEncoder<W>),
    /// xz.
    Xz(liblzma::write::XzEncoder<W>),
    /// zstd.
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    /// Compresses what is written into `w` with `compression`, at settings that favour speed
    /// (archiving must keep up with PostgreSQL).
    pub fn new(compression: Option<Compression>, w: W) -> std::io::Result<Self> {
        Ok(match compression {
            None => Encoder::Plain(w),
            Some(Compression::Gzip) => Encoder::Gzip(flate2::write::GzEncoder::new(
                w,
                flate2::Compression::fast(),
            )),
            Some(Compression::Bzip2) => {
                Encoder::Bzip2(bzip2::write::BzEncoder::new(w, bzip2::Compression::fast()))
            }
            Some(Compression::Snappy) => {
                Encoder::Snappy(Box::new(snap::write::FrameEncoder::new(w)))
            }
            Some(Compression::Lz4) => Encoder::Lz4(lz4_flex::frame::FrameEncoder::new(w)),
            Some(Compression::Xz) => Encoder::Xz(liblzma::write::XzEncoder::new(w, 1)),
            Some(Compression::Zstd) => Encoder::Zstd(zstd::stream::write::Encoder::new(w, 1)?),
        })
    }

    /// Ends the stream (its trailer written) and returns the writer underneath.
    pub fn finish(self) -> std::io::Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Bzip2(e) => e.finish(),
            Encoder::Snappy(e) => e.into_inner().map_err(|e| e.into_error()),
            Encoder::Lz4(e) => e.finish().map_err(std::io::Error::other),
            Encoder::Xz(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(b),
            Encoder::Gzip(e) => e.write(b),
            Encoder::Bzip2(e) => e.write(b),
            Encoder::Snappy(e) => e.write(b),
            Encoder::Lz4(e) => e.write(b),
            Encoder::Xz(e) => e.write(b),
            Encoder::Zstd(e) => e.write(b),
        }
    }

    /// Nothing to push early: what is written reaches the store when the stream ends.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment() -> Vec<u8> {
        // 5 MB that compress like WAL (repeats, with some noise), so pieces are cut.
        (0..1_250_000u32)
            .flat_map(|i| (i % 251 + (i / 4096)).to_le_bytes())
            .collect()
    }

    #[test]
    fn each_compression_reads_back_what_it_wrote_whole_and_streamed() {
        let data = segment();
        for c in Compression::ALL {
            let packed = c.compress(&data).expect("compress");
            assert!(packed.len() < data.len() / 2, "{c} compresses");
            for input in [&data[..], &data[..10], &[][..]] {
                let packed = c.compress(input).expect("compress");
                let mut back = Vec::new();
                c.decoder(&packed[..])
                    .expect("decoder")
                    .read_to_end(&mut back)
                    .expect("decompress");
                assert!(back == input, "{c} reads back {} bytes", input.len());
            }

            let mut e = Encoder::new(Some(c), Vec::new()).expect("encoder");
            for part in data.chunks(70_000) {
                e.write_all(part).expect("write");
            }
            let streamed = e.finish().expect("finish");
            let mut back = Vec::new();
            c.decoder(&streamed[..])
                .expect("decoder")
                .read_to_end(&mut back)
                .expect("decompress");
            assert!(back == data, "{c} reads back the stream");
        }
    }

    #[test]
    fn the_command_line_tools_read_what_we_compress() {
        // The reference implementations, where the machine has them (Debian's xz-utils,
        // bzip2, gzip, zstd and lz4): the formats are theirs, not an idea of ours.
        let data = segment();
        let tools = [
            (Compression::Gzip, "gzip"),
            (Compression::Bzip2, "bzip2"),
            (Compression::Xz, "xz"),
            (Compression::Zstd, "zstd"),
            (Compression::Lz4, "lz4"),
        ];
        for (c, tool) in tools {
            let Ok(mut child) = std::process::Command::new(tool)
                .args(["-d", "-c"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
            else {
                panic!("{tool} is missing: install it (apt-get install -y {tool})");
            };
            let packed = c.compress(&data).expect("compress");
            let mut stdin = child.stdin.take().expect("stdin");
            let writer = std::thread::spawn(move || stdin.write_all(&packed));
            let out = child.wait_with_output().expect(tool);
            writer.join().expect("join").expect("write");
            assert!(out.status.success(), "{tool} -d failed");
            assert!(out.stdout == data, "{tool} reads back the segment");
        }
    }

    #[test]
    fn names_and_suffixes_are_barman_clouds() {
        assert_eq!(
            Compression::from_name("000000010000000000000001.zst"),
            (Some(Compression::Zstd), "000000010000000000000001")
        );
        assert_eq!(Compression::from_name("data.tar"), (None, "data.tar"));
        assert_eq!(
            Compression::from_name("data.tar.snappy"),
            (Some(Compression::Snappy), "data.tar")
        );
        let data: Vec<_> = Compression::ALL
            .into_iter()
            .filter(|c| c.for_data())
            .collect();
        assert_eq!(
            data,
            [Compression::Bzip2, Compression::Gzip, Compression::Snappy]
        );
        assert_eq!(
            serde_json::to_string(&Compression::Lz4).expect("json"),
            "\"lz4\""
        );
    }
}
