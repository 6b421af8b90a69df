//! The pipeline inside an uploaded file, as KFP's upload endpoints read it:
//! `.yaml`, `.yml` and `.json` by name; otherwise a zip (`PK`) or a gzipped
//! tar (`1F 8B`) by content, whose entry `pipeline.yaml` (or else its first
//! entry, which must be YAML) is the pipeline.

use std::io::Read;

use crate::error::{ApiError, ApiResult};

/// The name KFP looks for inside an archive before taking its first entry.
const ENTRY: &str = "pipeline.yaml";

/// The most a pipeline read from an archive may unpack to: the spec parser's
/// own limit (a small archive can unpack to far more than it weighs).
const MAX_UNPACKED: u64 = switchyard_kfp_spec::parse::MAX_SPEC_BYTES as u64;

/// The most entries a `.tar.gz` may have (a pipeline package holds one or a few).
const MAX_ENTRIES: u32 = 10_000;

/// Reads at most [`MAX_UNPACKED`] bytes of an entry; more is refused.
fn read_bounded(entry: impl Read, what: &str) -> ApiResult<Vec<u8>> {
    let mut out = Vec::new();
    entry
        .take(MAX_UNPACKED + 1)
        .read_to_end(&mut out)
        .map_err(|e| bad(format!("{what} cannot be read: {e}")))?;
    if out.len() as u64 > MAX_UNPACKED {
        return Err(bad(format!(
            "{what} unpacks to more than {} MiB, the largest pipeline accepted",
            MAX_UNPACKED >> 20
        )));
    }
    Ok(out)
}

/// The pipeline text of an uploaded file.
pub(crate) fn pipeline_text(file_name: Option<&str>, bytes: &[u8]) -> ApiResult<String> {
    let name = file_name.unwrap_or("").to_ascii_lowercase();
    let raw = if [".yaml", ".yml", ".json"].iter().any(|e| name.ends_with(e)) {
        bytes.to_vec()
    } else if bytes.starts_with(b"PK") {
        from_zip(bytes)?
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        from_tar_gz(bytes)?
    } else if file_name.is_none() {
        // A client that names no file sends the compiled YAML itself.
        bytes.to_vec()
    } else {
        return Err(bad(format!(
            "'{}' is not a pipeline package: upload the compiled .yaml or .json, or a .zip or .tar.gz holding it",
            file_name.unwrap_or("")
        )));
    };
    String::from_utf8(raw).map_err(|_| {
        bad("the uploaded pipeline is not UTF-8 text (upload the compiled YAML)".into())
    })
}

fn bad(message: String) -> ApiError {
    ApiError::BadRequest(message)
}

fn is_yaml(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

fn from_zip(bytes: &[u8]) -> ApiResult<Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| bad(format!("the uploaded .zip cannot be read: {e}")))?;
    let mut files = Vec::new();
    for i in 0..archive.len() {
        let entry = archive
            .by_index(i)
            .map_err(|e| bad(format!("the uploaded .zip cannot be read: {e}")))?;
        if entry.is_file() {
            let name = entry
                .name()
                .map_err(|e| bad(format!("the uploaded .zip has an unreadable name: {e}")))?;
            files.push(name.into_owned());
        }
    }
    let chosen = files
        .iter()
        .find(|n| n.as_str() == ENTRY)
        .or_else(|| files.first())
        .ok_or_else(|| bad("the uploaded .zip is empty".into()))?
        .clone();
    if !is_yaml(&chosen) {
        return Err(bad(format!(
            "the uploaded .zip holds '{chosen}': put the compiled pipeline in it as {ENTRY}"
        )));
    }
    let entry = archive.by_name(&chosen).map_err(|e| {
        bad(format!(
            "the uploaded .zip's '{chosen}' cannot be read: {e}"
        ))
    })?;
    read_bounded(entry, &format!("the uploaded .zip's '{chosen}'"))
}

fn from_tar_gz(bytes: &[u8]) -> ApiResult<Vec<u8>> {
    let unreadable = |e: std::io::Error| bad(format!("the uploaded .tar.gz cannot be read: {e}"));
    // The stream itself is bounded: the tar reader keeps long names and PAX
    // headers in memory before it hands out an entry.
    let stream = flate2::read::GzDecoder::new(bytes).take(MAX_UNPACKED + (1 << 20));
    let mut archive = tar::Archive::new(stream);
    let mut entries = 0u32;
    let mut first: Option<(String, Vec<u8>)> = None;
    // Skipped entries are unpacked too (a tar is read through): all of them
    // together stay within the limit.
    let mut unpacked: u64 = 0;
    for entry in archive.entries().map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        entries += 1;
        if entries > MAX_ENTRIES {
            return Err(bad(format!(
                "the uploaded .tar.gz has more than {MAX_ENTRIES} entries: put only the compiled pipeline in it, as {ENTRY}"
            )));
        }
        unpacked = unpacked.saturating_add(entry.header().size().unwrap_or(u64::MAX));
        if unpacked > MAX_UNPACKED {
            return Err(bad(format!(
                "the uploaded .tar.gz unpacks to more than {} MiB, the largest pipeline accepted",
                MAX_UNPACKED >> 20
            )));
        }
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(unreadable)?
            .to_string_lossy()
            .into_owned();
        let name = name.trim_start_matches("./").to_string();
        if name != ENTRY && first.is_some() {
            continue;
        }
        let data = read_bounded(entry, &format!("the uploaded .tar.gz's '{name}'"))?;
        if name == ENTRY {
            return Ok(data);
        }
        first = Some((name, data));
    }
    match first {
        Some((name, data)) if is_yaml(&name) => Ok(data),
        Some((name, _)) => Err(bad(format!(
            "the uploaded .tar.gz holds '{name}': put the compiled pipeline in it as {ENTRY}"
        ))),
        None => Err(bad("the uploaded .tar.gz is empty".into())),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const YAML: &str = "pipelineInfo:\n  name: p\n";

    fn zip_of(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut buf = std::io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut buf);
        for (name, text) in entries {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .expect("entry");
            w.write_all(text.as_bytes()).expect("write");
        }
        w.finish().expect("finish");
        buf.into_inner()
    }

    fn tar_gz_of(entries: &[(&str, &str)]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut b = tar::Builder::new(gz);
        for (name, text) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, text.as_bytes())
                .expect("append");
        }
        b.into_inner().expect("tar").finish().expect("gz")
    }

    #[test]
    fn archives_give_their_pipeline() {
        let z = zip_of(&[("arguments-parameters.yaml", YAML)]);
        assert_eq!(pipeline_text(Some("p.zip"), &z).expect("zip"), YAML);
        let z = zip_of(&[("README.md", "x"), ("pipeline.yaml", YAML)]);
        assert_eq!(pipeline_text(Some("p.zip"), &z).expect("named entry"), YAML);
        let t = tar_gz_of(&[("pipeline.yaml", YAML)]);
        assert_eq!(pipeline_text(Some("p.tar.gz"), &t).expect("tar.gz"), YAML);
        assert_eq!(
            pipeline_text(Some("p.yaml"), YAML.as_bytes()).expect("yaml"),
            YAML
        );
    }

    #[test]
    fn other_files_are_refused_with_the_fix() {
        let err = pipeline_text(Some("wrong_format.png"), b"\x89PNG....").expect_err("png");
        assert!(err.to_string().contains(".zip or .tar.gz"), "{err}");
        let err = pipeline_text(Some("empty.zip"), b"not a zip").expect_err("text named zip");
        assert!(err.to_string().contains("not a pipeline package"), "{err}");
        // Small archives that unpack to more than a pipeline may be.
        let huge = "a".repeat(MAX_UNPACKED as usize + 1);
        let err = pipeline_text(Some("bomb.zip"), &zip_of(&[("p.yaml", &huge)])).expect_err("bomb");
        assert!(err.to_string().contains("unpacks to more than"), "{err}");
        let err = pipeline_text(
            Some("bomb.tgz"),
            &tar_gz_of(&[("x.bin", &huge), ("pipeline.yaml", YAML)]),
        )
        .expect_err("tar bomb");
        assert!(err.to_string().contains("unpacks to more than"), "{err}");
        let z = zip_of(&[("notes.txt", "x")]);
        let err = pipeline_text(Some("p.zip"), &z).expect_err("no yaml");
        assert!(err.to_string().contains("pipeline.yaml"), "{err}");
        let t = tar_gz_of(&[]);
        assert!(pipeline_text(Some("p.tgz"), &t).is_err());
        assert!(pipeline_text(Some("p.zip"), b"PK\x03\x04garbage").is_err());
    }
}
