//! `GET /apis/switchyard/v1/runs/{id}/logs?task=KEY[&follow=true]`: a task's log
//! as plain text; with `follow`, streamed as it is written until the task ends.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::AppState;

#[derive(Deserialize)]
pub struct LogQuery {
    task: String,
    #[serde(default)]
    follow: bool,
}

pub async fn task_log(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Response> {
    let task = crate::lookup::exact_task(&s, &id, &q.task).await?;
    let path = task.log_path.clone().ok_or_else(|| {
        ApiError::NotFound(format!(
            "task '{}' has no log (it did not run a container)",
            q.task
        ))
    })?;
    if !q.follow || task.state.is_final() {
        return Ok(files_response(vec![(path.into(), String::new())]));
    }
    let (runs, run_id, key) = (s.runs.clone(), task.run_id.clone(), q.task.clone());
    let done = move || {
        let (runs, run_id, key) = (runs.clone(), run_id.clone(), key.clone());
        async move {
            runs.get_task(&run_id, &key)
                .await
                .ok()
                .flatten()
                .is_none_or(|t| t.state.is_final())
        }
    };
    Ok(follow_file(std::path::PathBuf::from(path), done))
}

/// Largest piece of a log read at once: memory per reader stays at this,
/// however long the log.
const CHUNK: usize = 64 * 1024;

/// The next piece of `file` (at most [`CHUNK`] bytes); empty at its end.
async fn next_chunk(file: &mut tokio::fs::File) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; CHUNK];
    match file.read(&mut buf).await {
        Ok(n) => {
            buf.truncate(n);
            buf
        }
        Err(_) => Vec::new(),
    }
}

fn text_response(
    stream: impl futures::Stream<Item = std::io::Result<Vec<u8>>> + Send + 'static,
) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Files one after the other as a text body, read in pieces, each line of a
/// file preceded by its prefix (`""` for none): a 200 MB log costs the server
/// 64 KiB per reader, not 200 MB. A missing file is skipped.
pub fn files_response(files: Vec<(std::path::PathBuf, String)>) -> Response {
    struct St {
        files: std::vec::IntoIter<(std::path::PathBuf, String)>,
        open: Option<(tokio::fs::File, String)>,
        at_line_start: bool,
    }
    let st = St {
        files: files.into_iter(),
        open: None,
        at_line_start: true,
    };
    let stream = futures::stream::unfold(st, |mut st| async move {
        loop {
            if st.open.is_none() {
                let (path, prefix) = st.files.next()?;
                if let Ok(f) = tokio::fs::File::open(&path).await {
                    st.open = Some((f, prefix));
                    st.at_line_start = true;
                }
                continue;
            }
            let (file, prefix) = st.open.as_mut()?;
            let chunk = next_chunk(file).await;
            if chunk.is_empty() {
                // A file not ending in a newline still ends its line.
                let tail = if st.at_line_start {
                    Vec::new()
                } else {
                    b"\n".to_vec()
                };
                st.open = None;
                if !tail.is_empty() {
                    return Some((Ok(tail), st));
                }
                continue;
            }
            let out = prefix_lines(&chunk, prefix.as_bytes(), &mut st.at_line_start);
            return Some((Ok::<_, std::io::Error>(out), st));
        }
    });
    text_response(stream)
}

/// `chunk` with `prefix` put before every line that starts in it.
fn prefix_lines(chunk: &[u8], prefix: &[u8], at_line_start: &mut bool) -> Vec<u8> {
    if prefix.is_empty() {
        *at_line_start = chunk.last() == Some(&b'\n');
        return chunk.to_vec();
    }
    let mut out = Vec::with_capacity(chunk.len() + prefix.len() * 8);
    for &b in chunk {
        if *at_line_start {
            out.extend_from_slice(prefix);
        }
        out.push(b);
        *at_line_start = b == b'\n';
    }
    out
}

/// Streams a growing file: what is new, in pieces of at most 64 KiB, every
/// 200 ms, until `done()` says the writer has finished and everything has
/// been sent. The file is read from where the last piece ended, never again
/// from its start.
pub fn follow_file<F, Fut>(path: std::path::PathBuf, done: F) -> Response
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    struct St<F> {
        path: std::path::PathBuf,
        file: Option<tokio::fs::File>,
        /// The writer has finished: send what is left, then end.
        draining: bool,
        done: std::sync::Arc<F>,
    }
    let st = St {
        path,
        file: None,
        draining: false,
        done: std::sync::Arc::new(done),
    };
    let stream = futures::stream::unfold(st, |mut st| async move {
        loop {
            if st.file.is_none() {
                st.file = tokio::fs::File::open(&st.path).await.ok();
            }
            if let Some(f) = st.file.as_mut() {
                let chunk = next_chunk(f).await;
                if !chunk.is_empty() {
                    return Some((Ok::<_, std::io::Error>(chunk), st));
                }
            }
            if st.draining {
                return None;
            }
            if (st.done)().await {
                st.draining = true;
                continue;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    text_response(stream)
}

#[cfg(test)]
mod tests {
    use super::prefix_lines;

    #[test]
    fn prefixes_follow_lines_across_pieces() {
        let mut start = true;
        let mut out = prefix_lines(b"a\nbb", b"[r0] ", &mut start);
        assert!(!start);
        out.extend(prefix_lines(b"b\n\nc\n", b"[r0] ", &mut start));
        assert!(start);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[r0] a\n[r0] bbb\n[r0] \n[r0] c\n"
        );
        let mut start = true;
        assert_eq!(prefix_lines(b"x\ny", b"", &mut start), b"x\ny");
        assert!(!start);
    }
}
